#!/usr/bin/env bash
# Runs recipes/slurm on a single-node Slurm cluster started on this machine (not part of CI, which has no
# Slurm): installs Debian's slurm-wlm if needed (root), starts munged, slurmctld and slurmd with a minimal
# config in a temporary dir, submits the quickstart recipe on 8 problems as 2 array tasks plus the merge job
# (recipes/slurm/run.sh), waits, checks the merged dataset, and stops the cluster again.
#   scripts/slurm_smoke.sh            # ~3 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
command -v slurmctld >/dev/null || { apt-get update -q && apt-get install -y -q slurm-wlm; }
WORK=$(mktemp -d /tmp/synth-slurm.XXXX)
HOST=$(hostname -s)
mkdir -p "$WORK/spool" "$WORK/state"
cat >"$WORK/slurm.conf" <<CONF
ClusterName=synth-smoke
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmdSpoolDir=$WORK/spool
StateSaveLocation=$WORK/state
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
NodeName=$HOST CPUs=$(nproc) RealMemory=$(( $(free -m | awk '/Mem:/ {print $2}') / 2 )) State=UNKNOWN
PartitionName=smoke Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$WORK/slurm.conf
mkdir -p /run/munge
pgrep -x munged >/dev/null || munged --force
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
trap 'kill $(cat "$WORK/slurmd.pid" "$WORK/slurmctld.pid" 2>/dev/null) 2>/dev/null || true' EXIT
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 1; done
sinfo

OUT=$WORK/run
SYNTH=$PWD/.venv/bin/synth recipes/slurm/run.sh generate configs/quickstart.yaml "$OUT" 2 --pool.num_problems 8
for _ in $(seq 600); do [ -z "$(squeue -h)" ] && break; sleep 1; done
cat "$OUT"/slurm-*.out | grep -v "it/s" | tail -20
.venv/bin/python - "$OUT/merged" <<'PY'
import sys
from datasets import load_dataset
ds = load_dataset(sys.argv[1], split="train")
ids = ds["id"]
assert len(ids) == 8 == len(set(ids)), ids
print(f"merged dataset: {len(ids)} problems from 2 array tasks: OK")
PY
