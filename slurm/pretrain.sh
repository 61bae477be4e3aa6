#!/usr/bin/env bash
# LMP pretraining as a SLURM batch job: `sbatch slurm/pretrain.sh` from the repository root.
#
#   CONFIG=experiments/configs/pretrain/tiny.yaml STORE=/data/store.zarr \
#   OVERRIDES="train.zero_stage=2 name=run1" sbatch slurm/pretrain.sh
#
# Environment (read when the job starts; sbatch exports the submitting shell's environment):
#   CONFIG            pretrain YAML (default experiments/configs/pretrain/demo.yaml), relative to the
#                     submit directory or absolute
#   STORE             feature store folder; becomes the override data.store=$STORE (default: the config's)
#   OVERRIDES         space-separated key=value config overrides (values without spaces)
#   LMP_ROOT          repository root holding .venv/ (default: found from this script's path, else the
#                     submit directory)
#   LMP_VENV          environment to activate (default $LMP_ROOT/.venv)
#   LMP_MAX_REQUEUES  requeue at most this many times (default 100; SLURM_RESTART_COUNT counts them)
#   MLFLOW_TRACKING_URI  where the run is tracked (default: the config's, else sqlite:///<repo>/mlflow.db)
#
# One task per GPU (GPU nodes) or per CPU slot (CPU-only nodes), started by srun; every task runs
# `lmp-pretrain CONFIG ... --resume`, which reads its rank from SLURM_PROCID / SLURM_NTASKS /
# SLURM_LOCALID and the rendezvous from MASTER_ADDR / MASTER_PORT set below.
#
# Time limit and preemption: SLURM sends USR1 to this batch shell 120 s before the time limit (and
# `scancel --signal=USR1 --batch JOBID` does the same by hand). The shell forwards it to srun, which
# forwards it to every task; the run saves a checkpoint at the next step boundary and exits with 75
# (lmp_model.pretrain.preempt.PREEMPTED_EXIT_CODE); this script then runs `scontrol requeue`, and the
# requeued job (same job id, log appended) resumes from that checkpoint, in the same MLflow run.
# Preemption by the scheduler (SIGTERM, KillWait seconds before SIGKILL) also checkpoints when a step
# ends in time; the scheduler requeues such jobs itself (--requeue).
# Exit status: 0 done, 2 invalid config (no requeue), 3 non-finite loss, other: failure.
#
# Multi-node GPU clusters: same script, e.g. 4 nodes x 8 GPUs:
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-task=1 --cpus-per-task=8 slurm/pretrain.sh
# (see slurm/README.md). MASTER_ADDR is the first node of the allocation, MASTER_PORT is derived from
# the job id so that jobs sharing a node do not collide.
#
#SBATCH --job-name=lmp-pretrain
#SBATCH --nodes=1
# Tasks per node = GPUs per node on GPU nodes; CPU-only nodes: CPU slots (each --cpus-per-task wide).
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
# GPU clusters: enable one GPU per task by removing one '#' below (or pass --gpus-per-task=1 to sbatch).
##SBATCH --gpus-per-task=1
#SBATCH --time=04:00:00
# USR1 to the batch shell ("B:") 120 s before the time limit: time to finish a step and save.
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
# One log per job id, appended across requeues, in the submit directory.
#SBATCH --output=lmp-pretrain-%j.out
#SBATCH --open-mode=append

set -uo pipefail

PREEMPTED=75 # lmp_model.pretrain.preempt.PREEMPTED_EXIT_CODE
say() { echo "[pretrain.sh $(date '+%F %T') job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0}] $*"; }

if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "slurm/pretrain.sh: submit it with sbatch (it needs a SLURM allocation)" >&2
  exit 2
fi

# --- project environment -------------------------------------------------------------------------
# sbatch runs a copy of this script from SLURM's spool, so its own path says nothing; ask SLURM.
if [ -z "${LMP_ROOT:-}" ]; then
  script=$(timeout 30 scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -1)
  if [ -n "$script" ] && [ -f "$(dirname "$script")/../.venv/bin/activate" ]; then
    LMP_ROOT=$(cd "$(dirname "$script")/.." && pwd)
  else
    LMP_ROOT=${SLURM_SUBMIT_DIR:-$PWD}
  fi
fi
LMP_VENV=${LMP_VENV:-$LMP_ROOT/.venv}
if [ ! -f "$LMP_VENV/bin/activate" ]; then
  say "error: no environment at $LMP_VENV (run scripts/setup.sh in $LMP_ROOT, or set LMP_ROOT / LMP_VENV)" >&2
  exit 2
fi
# shellcheck disable=SC1091
source "$LMP_VENV/bin/activate"

# --- the run ---------------------------------------------------------------------------------------
CONFIG=${CONFIG:-$LMP_ROOT/experiments/configs/pretrain/demo.yaml}
read -r -a OVR <<<"${OVERRIDES:-}"
[ -n "${STORE:-}" ] && OVR=("data.store=$STORE" "${OVR[@]}")
# Fail fast (and only once, not once per task) on a bad config: load and validate it here.
if ! python - "$CONFIG" "${OVR[@]}" <<'PY'; then
import sys
from lmp_model.pretrain.config import ConfigError, load_pretrain_config
try:
    load_pretrain_config(sys.argv[1], sys.argv[2:])
except ConfigError as e:
    sys.exit(f"lmp-pretrain: error: {e}")
PY
  say "invalid config: $CONFIG ${OVR[*]}: not started" >&2
  exit 2
fi

# --- torch.distributed from SLURM's variables ------------------------------------------------------
MASTER_ADDR=$(timeout 30 scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)
export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
export MASTER_PORT=$((10000 + SLURM_JOB_ID % 50000))
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export PYTHONUNBUFFERED=1
# Created by a task asked to stop (lmp_model.pretrain.preempt.MARKER_ENV): with --kill-on-bad-exit, srun
# may report the code of a task it killed (143) instead of 75, so the marker is what says "preempted".
# Rank 0 runs on this node, so a node-local path works on multi-node jobs too.
export LMP_PREEMPT_MARKER="${TMPDIR:-/tmp}/lmp-preempt-$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}"
rm -f "$LMP_PREEMPT_MARKER"

say "start: $SLURM_NTASKS tasks on $SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT, config $CONFIG ${OVR[*]}"

# --- forward the warning signal and wait ----------------------------------------------------------
signalled=""
srun_pid=""
on_signal() {
  signalled=$1
  say "got SIG$1: asking the run to checkpoint and stop"
  [ -n "$srun_pid" ] && kill "-$1" "$srun_pid" 2>/dev/null
}
trap 'on_signal USR1' USR1

# srun 22.05 does not inherit --cpus-per-task from sbatch: pass it.
srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
  lmp-pretrain "$CONFIG" "${OVR[@]}" --resume &
srun_pid=$!
# `wait` returns early when a trapped signal arrives: wait again until srun is really gone.
wait "$srun_pid"
rc=$?
while kill -0 "$srun_pid" 2>/dev/null; do
  wait "$srun_pid"
  rc=$?
done
stopped=""
[ -e "$LMP_PREEMPT_MARKER" ] && stopped=1
rm -f "$LMP_PREEMPT_MARKER"
say "lmp-pretrain exited with $rc${stopped:+ (a task was asked to stop)}"

# Requeue when the run stopped for a checkpoint (75), or was told to stop and did not finish (a task
# killed before it could checkpoint resumes from the last periodic checkpoint). Never on a config error.
if [ "$rc" = "$PREEMPTED" ] || { [ -n "$signalled$stopped" ] && [ "$rc" != 0 ] && [ "$rc" != 2 ]; }; then
  if [ "${SLURM_RESTART_COUNT:-0}" -ge "${LMP_MAX_REQUEUES:-100}" ]; then
    say "not requeued: already requeued ${SLURM_RESTART_COUNT} times (LMP_MAX_REQUEUES)"
    exit "$rc"
  fi
  say "requeueing job $SLURM_JOB_ID: it resumes from the latest complete checkpoint"
  if timeout 60 scontrol requeue "$SLURM_JOB_ID"; then
    sleep 300 & # SLURM ends this shell as part of the requeue
    wait $!
    exit 0
  fi
  say "error: scontrol requeue failed; resume with: CONFIG=$CONFIG OVERRIDES=\"${OVR[*]}\" sbatch slurm/pretrain.sh"
fi
exit "$rc"
