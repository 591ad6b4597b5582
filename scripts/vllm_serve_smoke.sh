#!/usr/bin/env bash
# Served engines on this CPU, end to end (not part of CI): starts `vllm serve` of the bundled SmolLM2 (the
# policy) and of the bundled sentence PRM (pooling runner) on 127.0.0.1, then runs best-of-N and DVTS through
# `engine: openai` and `--prm http://...` on 8 problems, and checks the rows' schema and that accuracy is in
# the in-process engines' range. Needs .venv-vllm (`make install-vllm`). ~10 min on 2 cores.
#   scripts/vllm_serve_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install-vllm
PY=.venv-vllm/bin/python
SYNTH=.venv-vllm/bin/synth
OUT=$(mktemp -d /tmp/synth-serve.XXXX)
POLICY=$($PY -c "from synth.models import resolve_model; print(resolve_model('smollm2-135m'))")
PRM=$($PY -m synth.prm.vllm_prm default-sentence)
# vLLM on CPU: whole prefills (seeded requests crash when a prefill is chunked), a bounded KV cache
CPU=(--dtype float32 --enforce-eager --max-model-len 4096 --max-num-batched-tokens 4096 --no-enable-chunked-prefill
     --kv-cache-memory-bytes 2147483648)
# sentence steps end at 6 stop strings; vLLM's server takes 4 unless told otherwise
VLLM_MAX_STOP_STRINGS=8 $PY -m vllm.entrypoints.openai.api_server --model "$POLICY" --port 8011 "${CPU[@]}" >"$OUT/policy.log" 2>&1 &
POLICY_PID=$!
$PY -m vllm.entrypoints.openai.api_server --model "$PRM" --runner pooling --port 8012 "${CPU[@]}" >"$OUT/prm.log" 2>&1 &
PRM_PID=$!
trap 'kill $POLICY_PID $PRM_PID 2>/dev/null || true' EXIT
for port in 8011 8012; do
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break; sleep 1; done
done
COMMON=(--config configs/quickstart.yaml --pool.num_problems 8 --search.n 4)
$SYNTH generate "${COMMON[@]}" --engine transformers --output_dir "$OUT/inproc" >"$OUT/inproc.log" 2>&1
$SYNTH generate "${COMMON[@]}" --engine openai --openai.base_url http://127.0.0.1:8011/v1 --output_dir "$OUT/bon" >"$OUT/bon.log" 2>&1
$SYNTH generate "${COMMON[@]}" --engine openai --openai.base_url http://127.0.0.1:8011/v1 --prm http://127.0.0.1:8012 \
  --search.strategy dvts --search.beam_width 2 --search.step_cut sentence --output_dir "$OUT/dvts" >"$OUT/dvts.log" 2>&1
$PY - "$OUT" <<'PYCHECK'
import json, sys
from pathlib import Path
from synth.journal import Journal
out = Path(sys.argv[1])
inproc = json.loads((out / "inproc" / "summary.json").read_text())
for run in ("bon", "dvts"):
    rows = Journal(out / run / "rows.jsonl").read()
    summary = json.loads((out / run / "summary.json").read_text())
    assert len(rows) == 8 and all(len(r["completions"]) == 4 and r["num_tokens"] and r["prefill_tokens"] for r in rows), run
    assert run == "bon" or all(r["scores"] and r["tree"] for r in rows), run
    assert abs(summary["pass@1"] - inproc["pass@1"]) <= 0.3, (run, summary["pass@1"], inproc["pass@1"])
    print(f"{run} through vllm serve: pass@1 {summary['pass@1']:.3f} (in-process transformers {inproc['pass@1']:.3f}), "
          f"maj@4 {summary['maj@4']:.3f}, {summary['wall_s']} s: OK")
PYCHECK
