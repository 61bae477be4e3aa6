#!/usr/bin/env bash
# Run an ablation sweep on a Ray cluster started inside this SLURM allocation.
#
#   sbatch [--cpus-per-task=N] [--gres=gpu:G] [--nodes=M] slurm/ray_sweep.sh \
#          experiments/ablate_losses.py --scale paper --store S --eval-store E --labels L
#
# The head node runs `ray start --head --block` (on a free port, with a short private temp dir), the
# other nodes of the allocation (if any) join it with `srun ... ray start --address --block`, and the
# sweep's driver connects through RAY_ADDRESS. At the end (or on scancel / time-out) exactly the Ray
# processes started here are stopped by SIGTERM; never `ray stop`, which would kill every Ray on the machine.
# The sweep is resumable: resubmit with `--resume` (the newest sweep folder of that table and scale).
#SBATCH --job-name=lmp-ray-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --output=ray_sweep-%j.out
#SBATCH --signal=B:TERM@120
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch slurm/ray_sweep.sh experiments/ablate_<table>.py [args...]" >&2; exit 2; }
ROOT="${LMP_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RAY="$ROOT/.venv/bin/ray"
[ -x "$PY" ] || { echo "ray_sweep.sh: $PY not found (set LMP_ROOT to the repo)" >&2; exit 1; }
case "$1" in
  experiments/ablate_*.py | */experiments/ablate_*.py) ;;
  *) echo "ray_sweep.sh: first argument must be an experiments/ablate_*.py script, got '$1'" >&2; exit 2 ;;
esac

NCPU="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-2}}"
NGPU=0
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES}" != "NoDevFiles" ]; then
  NGPU=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
fi
HEAD_IP=127.0.0.1
if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
  HEAD_IP=$(hostname -I | awk '{print $1}')
  # Ray 2.60 cannot bind its gRPC servers to one interface: with a node IP other than 127.0.0.1, GCS, raylet,
  # object manager and workers listen on every interface (slurm/README.md, "Who can connect").
  echo "ray_sweep.sh: multi-node Ray: GCS, raylet and workers listen on all interfaces of the nodes (Ray 2.60)"
else
  # Single node: Ray keeps every listener on 127.0.0.1 only if its node IP stays 127.0.0.1, which on Linux
  # it does only with "cluster" mode off (else --node-ip-address=127.0.0.1 is replaced by the machine's address
  # and GCS, raylet and workers listen on all interfaces). Such a head takes no other nodes.
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
fi
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
# Ray's unix sockets need a short path: a private folder under /tmp, removed at the end.
RAY_TMP=$(mktemp -d /tmp/lmpray.XXXXXX)
RAY_PIDS=()
cleanup() {
  local pid
  for pid in "${RAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${RAY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RAY_TMP"
}
DRIVER=""
on_signal() {  # scancel / time limit: the driver stops like Ctrl-C (Tune saves its state), then Ray stops
  if [ -n "$DRIVER" ]; then kill -TERM "$DRIVER" 2>/dev/null || true; wait "$DRIVER" 2>/dev/null || true; fi
  exit 143
}
trap cleanup EXIT
trap on_signal TERM INT

# Ray 2.60 enables token authentication for `ray start`; clients use the token (~/.ray/auth_token, shared
# home on a cluster) only with RAY_AUTH_MODE=token, else they are refused ("InvalidAuthToken").
export RAY_AUTH_MODE=token
echo "ray_sweep.sh: Ray head on $HEAD_IP:$PORT ($NCPU CPUs, $NGPU GPUs), temp $RAY_TMP"
"$RAY" start --head --block --node-ip-address="$HEAD_IP" --port="$PORT" --num-cpus="$NCPU" --num-gpus="$NGPU" \
  --temp-dir="$RAY_TMP" --include-dashboard=false --disable-usage-stats &
RAY_PIDS+=($!)
export RAY_ADDRESS="$HEAD_IP:$PORT"
if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
  # one worker per other node of the allocation
  srun --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks-per-node=1 --exclude="$(hostname)" \
    "$RAY" start --block --address="$RAY_ADDRESS" --num-cpus="$NCPU" --disable-usage-stats &
  RAY_PIDS+=($!)
fi
ready=0
for _ in $(seq 1 60); do
  if "$PY" - <<'PYEOF' 2>"$RAY_TMP/connect.err"; then
import ray
ray.init(logging_level="ERROR")  # RAY_ADDRESS: fails until the head answers
ray.shutdown()
PYEOF
    ready=1
    break
  fi
  sleep 2
done
if [ "$ready" != 1 ]; then
  echo "ray_sweep.sh: could not connect to the Ray head at $RAY_ADDRESS:" >&2
  tail -5 "$RAY_TMP/connect.err" >&2
  exit 1
fi
set +e
"$PY" "$@" &
DRIVER=$!
wait "$DRIVER"
rc=$?
set -e
echo "ray_sweep.sh: sweep exited with $rc"
exit "$rc"
