#!/usr/bin/env bash
# Set up a virtual environment with the engine (CPU torch) and the dev tools.
# Idempotent: reruns only install what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
"$PY" -m pip install --quiet --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build on this machine's disk. An unpinned
# torch would pull a multi-GB CUDA build; a GPU host installs its own build instead.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[worker,embedded,dev]"
