#!/usr/bin/env bash
# Create .venv and install agora with everything it needs. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/pip"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
fi
"$PIP" install -q --upgrade pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true

# torch and torchvision must be a matching pair or learn2learn's import of torchvision fails.
case "$(uname -m)" in
    aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
    *)       TORCH="torch==2.14.1 torchvision==0.29.1" ;;
esac
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "==> installing $TORCH (large; a few minutes)"
    # shellcheck disable=SC2086
    "$PIP" install -q $TORCH 2>&1 | grep -v '^WARNING: Location' || true
fi

echo "==> installing agora and its dependencies"
"$PIP" install -q -e ".[ml,scale,dev]" "cython>=3" gym scipy requests 2>&1 \
    | grep -v '^WARNING: Location' || true

# learn2learn 0.2.0's sdist ships C files from an old Cython that fail on Python >= 3.11
# (learnables/learn2learn#413); re-cythonizing while building the wheel fixes that.
if ! "$VENV/bin/python" -c "import learn2learn" >/dev/null 2>&1; then
    echo "==> building learn2learn 0.2.0 from source"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PIP" download -q --no-deps --no-binary :all: learn2learn==0.2.0 -d "$WORK" 2>&1 \
        | grep -v '^WARNING: Location' || true
    tar -xzf "$WORK"/learn2learn-0.2.0.tar.gz -C "$WORK"
    (cd "$WORK/learn2learn-0.2.0" && "$ROOT/$VENV/bin/python" setup.py build_ext bdist_wheel >"$WORK/build.log" 2>&1) \
        || { echo "learn2learn build failed; log:"; tail -20 "$WORK/build.log"; exit 1; }
    "$PIP" install -q --no-deps "$WORK"/learn2learn-0.2.0/dist/learn2learn-*.whl 2>&1 \
        | grep -v '^WARNING: Location' || true
fi

# Local-mode scenarios put each agent in its own network namespace and inject faults with
# nftables: install it where we can (root on Debian); without it they run on loopback instead.
if ! command -v nft >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing nftables (network faults for local-mode scenarios)"
    (apt-get install -y -q nftables >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nftables >/dev/null 2>&1; }) \
        || echo "warning: could not install nftables; local-mode scenarios will use loopback"
fi

"$VENV/bin/python" -c "import learn2learn, torch, zmq, msgpack, ray; print('agora install ok: torch', torch.__version__, '| learn2learn', learn2learn.__version__)" 2>&1 | tail -1
