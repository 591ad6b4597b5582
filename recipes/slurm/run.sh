#!/usr/bin/env bash
# The whole sharded run in one line: a job array of N shards, and a merge job that starts once every shard
# succeeded.
#   recipes/slurm/run.sh generate configs/quickstart.yaml runs/qs 8 [--search.n 16 ...]
#   recipes/slurm/run.sh label configs/prm-smollm2-label.yaml runs/labels 4
# Extra options go to every shard. SBATCH_* variables (e.g. SBATCH_PARTITION, SBATCH_GRES=gpu:1) and
# SYNTH (the synth executable) pass through. Prints the two job ids.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 generate|label RECIPE OUTPUT_DIR SHARDS [options]" >&2
  exit 2
fi
COMMAND=$1 RECIPE=$2 OUT=$3 SHARDS=$4
shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
array=$(sbatch --parsable --array=0-$((SHARDS - 1)) --chdir="$PWD" --output="$OUT/slurm-%x-%A_%a.out" "$HERE/generate.sbatch" "$COMMAND" "$RECIPE" "$OUT" "$@")
merge=$(sbatch --parsable --dependency=afterok:"$array" --chdir="$PWD" --output="$OUT/slurm-%x-%j.out" "$HERE/merge.sbatch" "$OUT")
echo "array $array, merge $merge"
