#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for tests and for trying slurm/pretrain.sh on a laptop.
#
#   slurm/local-cluster.sh start  DIR   install the Debian packages if missing, write DIR/etc/slurm.conf
#                                       (node line from `slurmd -C`), start slurmctld + slurmd as plain
#                                       daemons (no systemd), wait until the node is idle
#   slurm/local-cluster.sh stop   DIR   cancel this cluster's jobs, stop exactly the daemons started
#                                       (pid files under DIR/run); other processes are never touched
#   slurm/local-cluster.sh status DIR   daemons and node state; exit 0 only when the node is up
#   slurm/local-cluster.sh env    DIR   print the `export SLURM_CONF=...` line only
#
# Everything (config, state, spool, logs, pid files) lives under DIR. Authentication is auth/none +
# cred/none (no munge): this cluster is for one trusted user on one machine and listens on localhost only.
# SLURM's ports are fixed (6817 slurmctld, 6818 slurmd): one such cluster per machine at a time.
# Client commands against it need `export SLURM_CONF=DIR/etc/slurm.conf` (printed by `start`).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status|env DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"
CTLD_PORT=6817
SLURMD_PORT=6818
# Client calls against a dead controller retry for a long time: always bound them.
T() { timeout "${LMP_SLURM_CLIENT_TIMEOUT:-10}" "$@"; }

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
  local missing=() p
  for p in slurmctld slurmd slurm-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pid of a daemon we started, if it is still alive and still that daemon (pid files can go stale).
live_pid() {
  local name=$1 f="$DIR/run/$1.pid" pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_conf() {
  mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  # The hardware line as slurmd sees it, renamed to our node name.
  local hw cpus mem user
  hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"
  user=$(id -un)
  : >"$DIR/etc/plugstack.conf"
  local tmp="$CONF.tmp.$$"
  cat >"$tmp" <<EOF
# Written by slurm/local-cluster.sh: single-node cluster on localhost, everything under $DIR
ClusterName=lmp-local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/none
CredType=cred/none
# Step credential lifetime; it is also how long a requeued job waits before it may start again
# (default 120 s). 10 s keeps preemption round trips short on one machine.
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default memory per CPU one job would take the whole node's memory.
DefMemPerCPU=$((mem / cpus))
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
# No slurmdbd (no sacct): keep finished jobs visible to 'scontrol show job' for a day.
MinJobAge=86400
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or preempted.
KillWait=30
JobRequeue=1
NodeName=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$tmp" "$CONF"
}

node_state() { T sinfo -h -N -o '%t' 2>/dev/null | head -1; }

start() {
  install_packages
  if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
    log "already running (pids $(live_pid slurmctld), $(live_pid slurmd))"
  else
    local p
    for p in $CTLD_PORT $SLURMD_PORT; do
      port_busy "$p" && die "port $p is in use: another SLURM runs on this machine (one local cluster at a time)"
    done
    write_conf
    live_pid slurmctld >/dev/null || slurmctld -f "$CONF" || die "slurmctld failed to start; see $DIR/log/slurmctld.log"
    live_pid slurmd >/dev/null || slurmd -f "$CONF" -N localhost || die "slurmd failed to start; see $DIR/log/slurmd.log"
  fi
  local i state=""
  for i in $(seq 1 100); do
    state=$(node_state)
    case "$state" in idle | mix | alloc) break ;; esac
    sleep 0.2
  done
  case "$state" in
    idle | mix | alloc) ;;
    *) die "node not idle after 20 s (state '${state:-none}'); see $DIR/log/" ;;
  esac
  log "up: node localhost $state ($(sed -n 's/^NodeName=localhost NodeAddr=127.0.0.1 //p' "$CONF" | cut -d' ' -f1-1))"
  echo "export SLURM_CONF=$CONF"
}

stop() {
  if live_pid slurmctld >/dev/null; then
    # Jobs first, so no slurmstepd or task of ours outlives the cluster.
    local ids
    ids=$(T squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      T scancel $ids 2>/dev/null || true
      local i
      for i in $(seq 1 50); do
        [ -z "$(T squeue -h -o '%i' 2>/dev/null || true)" ] && break
        sleep 0.2
      done
    fi
  fi
  local name pid i
  for name in slurmd slurmctld; do
    if pid=$(live_pid "$name"); then
      kill -TERM "$pid"
      for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      log "stopped $name (pid $pid)"
    fi
    rm -f "$DIR/run/$name.pid"
  done
}

status() {
  local name pid rc=0
  for name in slurmctld slurmd; do
    if pid=$(live_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
  done
  if [ $rc = 0 ]; then
    echo "node: $(node_state)"
    echo "export SLURM_CONF=$CONF"
  fi
  return $rc
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) usage ;;
esac
