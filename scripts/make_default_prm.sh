#!/usr/bin/env bash
# Regenerate the bundled default PRM (synth/prm/default) end to end on this CPU:
# generate traces (two shards side by side, one core each) -> merge -> label steps with rollouts
# (two shards, merged) -> train-prm -> copy the adapter + head into the package; then the same labels and
# training for sentence steps (synth/prm/default_sentence, `--prm default-sentence`).
# Each stage resumes where it stopped when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTH=${SYNTH:-.venv/bin/synth}
RUN=runs/prm-smollm2
LANES=${LANES:-2}
resume() { [ -f "$1/rows.jsonl" ] && echo "--resume true" || true; }
# Two one-thread processes use a 2-core CPU better than one two-thread process.
lanes() {  # lanes <stage> <config> <output prefix>: run LANES shards of a stage in parallel
  local pids=()
  for ((i = 0; i < LANES; i++)); do
    local out=$3-shard$i
    [ -f "$out/summary.json" ] && continue
    OMP_NUM_THREADS=$((LANES > 1 ? 1 : 2)) $SYNTH "$1" --config "$2" --output_dir "$out" --shard "$i/$LANES" $(resume "$out") \
      >"$out.log" 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}
mkdir -p $RUN
[ -f $RUN/traces/summary.json ] || {
  lanes generate configs/prm-smollm2-generate.yaml $RUN/traces
  $SYNTH merge --runs $RUN/traces-shard*/ --output_dir $RUN/traces
}
[ -f $RUN/labels/summary.json ] || {
  lanes label configs/prm-smollm2-label.yaml $RUN/labels
  $SYNTH merge --runs $RUN/labels-shard*/ --output_dir $RUN/labels
}
[ -f $RUN/prm/final/synth_prm.json ] || $SYNTH train-prm --config configs/prm-smollm2.yaml
.venv/bin/python -m synth.prm.package $RUN/prm/final synth/prm/default

# Sentence steps: the same traces, relabelled sentence by sentence (21 min), and the same recipe (25 min).
[ -f $RUN/labels-sentence/summary.json ] || {
  lanes label configs/prm-smollm2-label-sentence.yaml $RUN/labels-sentence
  $SYNTH merge --runs $RUN/labels-sentence-shard*/ --output_dir $RUN/labels-sentence
}
[ -f $RUN/prm-sentence/final/synth_prm.json ] || $SYNTH train-prm --config configs/prm-smollm2.yaml \
  --dataset $RUN/labels-sentence --output_dir $RUN/prm-sentence --dtype bfloat16
.venv/bin/python -m synth.prm.package $RUN/prm-sentence/final synth/prm/default_sentence
