#!/usr/bin/env bash
# Creates .venv (once) and installs mixnas with its extras into it.
# torch: an existing torch in the venv is kept; otherwise the CPU wheel torch==2.13.0 is installed first,
# so that pip never resolves an unpinned torch to a multi-GB CUDA build on a CPU machine.
# Set MIXNAS_TORCH to another requirement (e.g. "torch==2.13.0" from a CUDA index) to choose a different build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install -q "${MIXNAS_TORCH:-torch==2.13.0}"
fi
# Re-install only when pyproject.toml changed since the last install.
stamp=.venv/.mixnas-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q -e ".[dev,onnx]"
  touch "$stamp"
fi
