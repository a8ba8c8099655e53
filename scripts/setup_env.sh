#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs kbert into it in editable mode.
# Usage: bash scripts/setup_env.sh [EXTRAS]   e.g. `test` -> pip install -e '.[test]'
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "${1:-}" ]; then
  .venv/bin/python -m pip install -q -e ".[$1]"
else
  .venv/bin/python -m pip install -q -e .
fi
