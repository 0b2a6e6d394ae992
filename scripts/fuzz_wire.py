"""Coverage-guided fuzzing of `gossip.wire.decode` with atheris (libFuzzer), on top of the
hypothesis harness in tests/test_fuzz.py: atheris mutates bytes towards new branches of the
decoder, which random bytes and generated messages reach only by chance.

Optional: `pip install atheris` (a wheel exists for CPython 3.11 on x86-64 Linux). `make fuzz`
runs this for FUZZ_SECONDS when atheris is importable. Property: `decode` raises nothing but
`WireError` (a crash is written as ./crash-<hash>: add it to tests/test_fuzz.py as a regression
test). Arguments are libFuzzer's (e.g. -max_total_time=600, a corpus directory).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["gossip", "agent"]):
    import agent.messages  # noqa: F401  (registers the placement kinds, so decode knows them)
    from gossip import wire


def _one_input(data: bytes) -> None:
    try:
        wire.decode(data)
    except wire.WireError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
