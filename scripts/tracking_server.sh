#!/usr/bin/env bash
# An MLflow tracking server on PostgreSQL, run as you (no system service, no sudo): the store for runs that
# many processes or nodes write at once (Ray trials, SLURM array tasks, several ranks). SQLite
# (sqlite:///<repo>/mlflow.db) stays the default when MLFLOW_TRACKING_URI is unset.
#
#   eval "$(bash scripts/tracking_server.sh start --dir DIR)"   # prints: export MLFLOW_TRACKING_URI=http://...
#   bash scripts/tracking_server.sh status --dir DIR            # exit 0 when PostgreSQL and MLflow both run
#   bash scripts/tracking_server.sh uri --dir DIR               # the export line again
#   bash scripts/tracking_server.sh stop --dir DIR              # stops exactly what `start` started
#
# start options (environment variable in brackets):
#   --dir DIR         [LMP_TRACKING_DIR]  data folder, default <repo>/.lmp/tracking: pgdata/ (PostgreSQL, initdb on
#                                         first start), artifacts/, logs/, server.state
#   --artifacts DIR   [LMP_TRACKING_ARTIFACTS]  where artifacts are stored (a shared path on a cluster), default
#                                         DIR/artifacts; clients upload through the server (--artifacts-destination)
#   --host ADDR       [LMP_TRACKING_HOST] default 127.0.0.1; `slurm`: this node's address on the allocation's
#                                         network (the address SLURMD_NODENAME / hostname resolves to)
#   --port N          [LMP_TRACKING_PORT] default 5000
#   --workers N       [LMP_TRACKING_WORKERS] server worker processes, default 4
#
# PostgreSQL listens on no TCP port: only on a unix socket in DIR/run (mode 0700; a private folder under /tmp
# when that path is too long for a socket), with trust auth for whoever can open that socket (you). As root,
# PostgreSQL (which refuses root) runs as the user `postgres`, which must be able to enter DIR.
# The MLflow server runs in its own session; `stop` ends that process group and PostgreSQL (pg_ctl stop).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROG=tracking_server.sh
die() { # die CODE MESSAGE
  echo "$PROG: $2" >&2
  exit "$1"
}
say() { echo "$PROG: $*" >&2; }

CMD="${1:-}"
[ $# -gt 0 ] && shift
case "$CMD" in
  start | stop | status | uri) ;;
  -h | --help | help) sed -n '2,25p' "$0"; exit 0 ;;
  '') die 2 "missing command: start, stop, status or uri (see --help)" ;;
  *) die 2 "unknown command '$CMD': start, stop, status or uri (see --help)" ;;
esac
DIR="${LMP_TRACKING_DIR:-$ROOT/.lmp/tracking}"
ART="${LMP_TRACKING_ARTIFACTS:-}"
HOST="${LMP_TRACKING_HOST:-127.0.0.1}"
PORT="${LMP_TRACKING_PORT:-5000}"
WORKERS="${LMP_TRACKING_WORKERS:-4}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir | --artifacts | --host | --port | --workers)
      [ $# -ge 2 ] || die 2 "$1 needs a value"
      case "$1" in
        --dir) DIR="$2" ;; --artifacts) ART="$2" ;; --host) HOST="$2" ;; --port) PORT="$2" ;;
        --workers) WORKERS="$2" ;;
      esac
      shift 2
      ;;
    *) die 2 "unknown argument '$1' (see --help)" ;;
  esac
done
case "$PORT" in '' | *[!0-9]*) die 2 "--port must be a number, got '$PORT'" ;; esac
case "$WORKERS" in '' | *[!0-9]* | 0) die 2 "--workers must be a positive number, got '$WORKERS'" ;; esac
[ -n "$DIR" ] || die 2 "--dir is empty"

PY="$ROOT/.venv/bin/python"
MLFLOW="$ROOT/.venv/bin/mlflow"
STATE="$DIR/server.state"
PGDATA="$DIR/pgdata"
PGLOG="$DIR/logs/postgres.log"
MLLOG="$DIR/logs/mlflow.log"

# PostgreSQL binaries: LMP_PG_BIN, else Debian's newest /usr/lib/postgresql/<v>/bin, else pg_ctl on PATH.
pg_bin() {
  local d
  if [ -n "${LMP_PG_BIN:-}" ]; then
    [ -x "$LMP_PG_BIN/pg_ctl" ] || die 1 "LMP_PG_BIN=$LMP_PG_BIN holds no pg_ctl"
    echo "$LMP_PG_BIN"
    return
  fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return; }
  die 1 "PostgreSQL not found (no /usr/lib/postgresql/*/bin/pg_ctl): run scripts/setup.sh (Debian package postgresql)"
}

# As root, PostgreSQL runs as the user `postgres` (it refuses root); client tools run the same way.
AS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die 1 "running as root, but there is no user 'postgres' to run PostgreSQL as"
  AS=(runuser -u postgres --)
fi
pg() { # pg TOOL ARGS...: a PostgreSQL tool as the PostgreSQL user, from / (it may not enter the caller's folder)
  (cd / && "${AS[@]}" "$PGBIN/$1" "${@:2}")
}
own() { # hand a path we created to the PostgreSQL user
  if [ ${#AS[@]} -gt 0 ]; then chown postgres:postgres "$@"; fi
}

read_state() { # KEY: its value in DIR/server.state, empty if none
  [ -f "$STATE" ] || return 0
  local k v
  while IFS='=' read -r k v; do
    [ "$k" = "$1" ] && { printf '%s' "$v"; return 0; }
  done <"$STATE"
}

server_alive() { # PGID PORT: the recorded MLflow process group still runs (and is ours)
  local pgid="$1" port="$2"
  [ -n "$pgid" ] || return 1
  kill -0 -- "-$pgid" 2>/dev/null || return 1
  if [ -r "/proc/$pgid/cmdline" ]; then # the leader lives: it must be our mlflow server, not a reused pid
    tr '\0' ' ' <"/proc/$pgid/cmdline" | grep -q -- "server .*--port $port " || return 1
  fi
  return 0
}

postgres_running() { [ -f "$PGDATA/PG_VERSION" ] && pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }

if [ "$CMD" != start ]; then
  [ -d "$DIR" ] || die 1 "$DIR: no such tracking data folder"
  DIR="$(cd "$DIR" && pwd)"
  STATE="$DIR/server.state" PGDATA="$DIR/pgdata"
  PGID="$(read_state PGID)" URI="$(read_state URI)" SPORT="$(read_state PORT)"
  SOCK="$(read_state SOCK)" SOCK_TMP="$(read_state SOCK_TMP)"
  PGBIN="$(pg_bin)"
  case "$CMD" in
    uri)
      server_alive "$PGID" "$SPORT" || die 3 "no tracking server running for $DIR (start it first)"
      printf 'export MLFLOW_TRACKING_URI=%q\n' "$URI"
      ;;
    status)
      up=0
      if server_alive "$PGID" "$SPORT"; then say "MLflow: running on $URI (process group $PGID)"; else say "MLflow: stopped"; up=1; fi
      if postgres_running; then say "PostgreSQL: running ($PGDATA, socket in $SOCK)"; else say "PostgreSQL: stopped"; up=1; fi
      exit "$up"
      ;;
    stop)
      if server_alive "$PGID" "$SPORT"; then
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 -- "-$PGID" 2>/dev/null; then
          say "MLflow did not stop within 30 s of SIGTERM: SIGKILL to process group $PGID"
          kill -KILL -- "-$PGID" 2>/dev/null || true
        fi
        say "MLflow server stopped ($URI)"
      fi
      if postgres_running; then
        pg pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
        say "PostgreSQL stopped ($PGDATA)"
      fi
      if [ "$SOCK_TMP" = 1 ] && [ -d "$SOCK" ]; then rm -rf -- "$SOCK"; fi
      rm -f -- "$STATE"
      ;;
  esac
  exit 0
fi

# ------------------------------------------------------------------------------------------------ start
[ -x "$MLFLOW" ] || die 1 "$MLFLOW not found: run scripts/setup.sh"
"$PY" -c 'import psycopg2' 2>/dev/null || die 1 "psycopg2 is missing from $ROOT/.venv: run scripts/setup.sh"
PGBIN="$(pg_bin)"
mkdir -p -- "$DIR" 2>/dev/null || die 1 "$DIR: cannot create the tracking data folder"
DIR="$(cd "$DIR" && pwd)"
STATE="$DIR/server.state" PGDATA="$DIR/pgdata" PGLOG="$DIR/logs/postgres.log" MLLOG="$DIR/logs/mlflow.log"
ART="${ART:-$DIR/artifacts}"
mkdir -p -- "$ART" 2>/dev/null || die 1 "$ART: cannot create the artifacts folder"
ART="$(cd "$ART" && pwd)"
mkdir -p -- "$DIR/logs"
[ -w "$DIR" ] || die 1 "$DIR: not writable"

if [ "$HOST" = slurm ]; then
  node="${SLURMD_NODENAME:-$(hostname)}"
  HOST="$(getent ahostsv4 "$node" 2>/dev/null | awk '$1 !~ /^127\./ {print $1; exit}')"
  [ -n "$HOST" ] || HOST="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$' || true)"
  [ -n "$HOST" ] || die 1 "--host slurm: no non-loopback address found for node $node"
  [ -n "${SLURM_JOB_ID:-}" ] || say "--host slurm outside a SLURM job: binding $node's address $HOST"
fi

PGID="$(read_state PGID)"
if server_alive "$PGID" "$(read_state PORT)"; then
  say "already running for $DIR ($(read_state URI), process group $PGID); stop it first to change options"
  printf 'export MLFLOW_TRACKING_URI=%q\n' "$(read_state URI)"
  exit 0
fi

# PostgreSQL: a cluster of our own in DIR/pgdata, created once; no TCP listener, one unix socket folder.
if [ ${#AS[@]} -gt 0 ] && ! (cd / && "${AS[@]}" test -x "$DIR"); then
  die 1 "$DIR: running as root, PostgreSQL runs as user postgres, who cannot enter this folder (choose a --dir whose parents it can enter, e.g. under /var/tmp)"
fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ] && die 1 "$PGDATA exists, is not empty and holds no PostgreSQL cluster"
  mkdir -p -- "$PGDATA"
  chmod 700 "$PGDATA"
  own "$PGDATA"
  touch "$PGLOG"
  own "$PGLOG"
  say "initdb $PGDATA"
  pg initdb -D "$PGDATA" -U mlflow --auth-local=trust --auth-host=reject -E UTF8 --no-locale >>"$PGLOG" 2>&1 ||
    die 1 "initdb failed for $PGDATA (log: $PGLOG)"
  printf "\n# scripts/tracking_server.sh: socket folder and listeners, rewritten on every start\ninclude_if_exists = 'lmp_tracking.conf'\n" >>"$PGDATA/postgresql.conf"
fi
touch "$PGLOG"
own "$PGLOG"
SOCK="$DIR/run" SOCK_TMP=0
if [ $((${#SOCK} + 18)) -gt 100 ]; then # unix socket paths are limited to ~107 bytes
  SOCK="$(mktemp -d /tmp/lmp-pg.XXXXXX)" SOCK_TMP=1
fi
mkdir -p -- "$SOCK"
chmod 700 "$SOCK"
own "$SOCK"
if ! postgres_running; then
  {
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '${SOCK//\'/\'\'}'"
    echo "unix_socket_permissions = 0700"
    echo "max_connections = 200"
  } >"$PGDATA/lmp_tracking.conf"
  own "$PGDATA/lmp_tracking.conf"
  pg pg_ctl -D "$PGDATA" -l "$PGLOG" -w -t 60 start >/dev/null 2>&1 ||
    die 1 "PostgreSQL did not start in $PGDATA (log: $PGLOG)"
else # already running (e.g. after a failed MLflow start): use its socket folder
  SOCK="$(pg psql -h "$(read_state SOCK)" -U mlflow -d postgres -tAc 'SHOW unix_socket_directories' 2>/dev/null || true)"
  [ -n "$SOCK" ] || die 1 "PostgreSQL runs in $PGDATA but its socket is unknown: stop it with $0 stop --dir $DIR"
  SOCK_TMP="$(read_state SOCK_TMP)"
fi
if [ "$(pg psql -h "$SOCK" -U mlflow -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" != 1 ]; then
  pg createdb -h "$SOCK" -U mlflow mlflow || die 1 "createdb mlflow failed (log: $PGLOG)"
fi
write_state() { # the state `stop`, `status` and `uri` read
  printf '%s\n' "PGID=${1}" "URI=${URI}" "HOST=${HOST}" "PORT=${PORT}" "SOCK=${SOCK}" "SOCK_TMP=${SOCK_TMP}" \
    "ARTIFACTS=${ART}" >"$STATE.tmp"
  mv -f -- "$STATE.tmp" "$STATE"
}
URI="http://$HOST:$PORT"
write_state ""

# The port must be free (another server there would take our clients).
"$PY" - "$HOST" "$PORT" <<'EOF' || die 1 "$HOST:$PORT is in use (or not an address of this machine): choose another --port/--host"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(fam, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
    s.bind((sys.argv[1], int(sys.argv[2])))
EOF

BACKEND="postgresql+psycopg2://mlflow@/mlflow?host=$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/"))' "$SOCK")"
ARGS=(server --backend-store-uri "$BACKEND" --serve-artifacts --artifacts-destination "$ART"
  --host "$HOST" --port "$PORT" --workers "$WORKERS")
case "$HOST" in
  127.* | localhost | ::1) ;;
  *) ARGS+=(--allowed-hosts "$HOST,$HOST:$PORT,$(hostname),$(hostname):$PORT,localhost,localhost:$PORT,127.0.0.1:$PORT") ;;
esac
# No GenAI job runner (a consumer process per job type, ~260 MB each): these runs do not use it.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
echo "--- $(date -Is) $MLFLOW ${ARGS[*]}" >>"$MLLOG"
setsid "$MLFLOW" "${ARGS[@]}" >>"$MLLOG" 2>&1 </dev/null &
PGID=$!
write_state "$PGID"
for _ in $(seq 1 240); do
  if ! kill -0 "$PGID" 2>/dev/null; then
    die 1 "the MLflow server exited during start-up (log: $MLLOG): $(tail -n 1 "$MLLOG")"
  fi
  if [ "$(curl -fsS --max-time 2 "http://$HOST:$PORT/health" 2>/dev/null || true)" = OK ]; then
    say "MLflow on $URI (process group $PGID), PostgreSQL in $PGDATA (socket $SOCK), artifacts in $ART"
    say "stop with: bash $0 stop --dir $DIR"
    printf 'export MLFLOW_TRACKING_URI=%q\n' "$URI"
    exit 0
  fi
  sleep 0.5
done
kill -TERM -- "-$PGID" 2>/dev/null || true
die 1 "no answer from $URI/health after 120 s; stopped it (log: $MLLOG)"
