VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast fuzz demo bench forecaster lint clean

install:  ## create .venv and install everything (safe to run twice)
	bash scripts/install.sh

test:  ## the whole suite, slow end-to-end tests included, one worker per core (pytest-xdist)
	$(PY) -m pytest -q -n auto

test-fast:  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -n auto -m "not slow"

FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 300
fuzz:  ## the fuzzing harness with many fresh examples (FUZZ_EXAMPLES each), then atheris on the decoder if installed
	AGORA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q --timeout=0 tests/test_fuzz.py
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q atheris 2>/dev/null || true
	@if $(PY) -c "import atheris" 2>/dev/null; then \
		$(PY) scripts/fuzz_wire.py -max_total_time=$(FUZZ_SECONDS); \
	else echo "atheris does not install here: coverage-guided decoder fuzzing skipped"; fi

demo:  ## the shipped demo scenario with real agents: a crash, a restart, a partition that heals
	$(PY) -m deploy.demo

bench:  ## measurements written to docs/benchmarks.md
	$(PY) -m scenarios.bench --out docs/benchmarks.md

forecaster:  ## rebuild the shipped peak forecaster (metalearn/peak_forecaster.npz) from the shared traces (fixed seed)
	$(VENV)/bin/agora forecast train --data ../shared/data/gcd-vms --data ../shared/data/bitbrains-rnd --out metalearn/peak_forecaster.npz --seed 0

lint:
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
