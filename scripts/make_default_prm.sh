#!/usr/bin/env bash
# Regenerate the bundled default PRM (synth/prm/default) end to end on this CPU:
# generate traces -> label steps with rollouts -> train-prm -> copy the adapter + head into the package.
# Each stage resumes where it stopped when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTH=${SYNTH:-.venv/bin/synth}
resume() { [ -f "$1/rows.jsonl" ] && echo "--resume true" || true; }
[ -f runs/prm-smollm2/traces/summary.json ] || $SYNTH generate --config configs/prm-smollm2-generate.yaml $(resume runs/prm-smollm2/traces)
[ -f runs/prm-smollm2/labels/summary.json ] || $SYNTH label --config configs/prm-smollm2-label.yaml $(resume runs/prm-smollm2/labels)
$SYNTH train-prm --config configs/prm-smollm2.yaml
.venv/bin/python -m synth.prm.package runs/prm-smollm2/prm/final synth/prm/default
