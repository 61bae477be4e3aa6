#!/usr/bin/env bash
# Start the MLflow UI on the project's tracking store, bound to 127.0.0.1, in its own process group.
#
#   bash scripts/mlflow_ui.sh                                  # sqlite:///<repo>/mlflow.db, port 5000
#   bash scripts/mlflow_ui.sh --port 5001 --backend-store-uri sqlite:////abs/path/mlflow.db
#   bash scripts/mlflow_ui.sh --background --pid-file ui.pid   # return once /health answers OK
#
# Foreground (default): the job's process group; Ctrl-C stops the server and its workers. Background: the server runs in a new
# session (setsid), its process-group id is written to --pid-file; stop it with `kill -- -PGID`.
# Artifacts are served from the experiments' file:// artifact locations (no proxy needed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT=5000
URI="${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/mlflow.db}"
BACKGROUND=0
PID_FILE=""
LOG_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --backend-store-uri | --tracking-uri) URI="$2"; shift 2 ;;
    --background) BACKGROUND=1; shift ;;
    --pid-file) PID_FILE="$2"; shift 2 ;;
    --log-file) LOG_FILE="$2"; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "mlflow_ui.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PORT" in '' | *[!0-9]*) echo "mlflow_ui.sh: --port must be a number, got '$PORT'" >&2; exit 2 ;; esac
MLFLOW="$ROOT/.venv/bin/mlflow"
[ -x "$MLFLOW" ] || { echo "mlflow_ui.sh: $MLFLOW not found; run scripts/setup.sh" >&2; exit 1; }
CMD=("$MLFLOW" server --backend-store-uri "$URI" --host 127.0.0.1 --port "$PORT" --workers 1)
echo "mlflow_ui.sh: $URI on http://127.0.0.1:$PORT" >&2
# MLflow 3.17's UI opens an experiment in the view kept in the browser (GenAI until "Model training" is
# picked once, top left), whatever the experiment's mlflow.experimentKind tag says; a link can choose it.
echo "mlflow_ui.sh: runs in the model-training view: http://127.0.0.1:$PORT/#/experiments/<id>/runs?workflowType=machine_learning" \
  "(or pick 'Model training' at the top left once; the browser keeps it)" >&2

if [ "$BACKGROUND" = 0 ]; then
  # An interactive shell runs this job in its own process group: Ctrl-C stops the server and workers.
  exec "${CMD[@]}"
fi
LOG_FILE="${LOG_FILE:-/dev/null}"
setsid "${CMD[@]}" >"$LOG_FILE" 2>&1 < /dev/null &
PGID=$!
[ -n "$PID_FILE" ] && echo "$PGID" > "$PID_FILE"
for _ in $(seq 1 120); do
  if ! kill -0 "$PGID" 2>/dev/null; then
    echo "mlflow_ui.sh: the server exited during start-up (log: $LOG_FILE)" >&2
    exit 1
  fi
  if [ "$(curl -fsS "http://127.0.0.1:$PORT/health" 2>/dev/null || true)" = "OK" ]; then
    echo "mlflow_ui.sh: ready; stop with: kill -- -$PGID" >&2
    exit 0
  fi
  sleep 1
done
echo "mlflow_ui.sh: no answer from /health after 120 s; stopping it" >&2
kill -- "-$PGID" 2>/dev/null || true
exit 1
