#!/usr/bin/env bash
# Set up a virtual environment (./.venv) with kbert and its test dependencies, then run the
# fast test suite. Extra arguments go to pytest (e.g. `scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# TF logs C++ start-up chatter on stderr; keep the test output readable.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/python -m pytest "$@"
