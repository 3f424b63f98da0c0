#!/usr/bin/env bash
# A real single-node Slurm cluster for the tests: munged + slurmctld + slurmd on this machine,
# one node with all its cores and memory and one (fake) GPU, no systemd, no slurmdbd.
#
#   .ci/slurm/cluster.sh start    install slurm-wlm + munge if missing (Debian, as root), write
#                                 the configuration, start the daemons, wait for the node
#   .ci/slurm/cluster.sh stop     stop the daemons this script started (by their pid files)
#   .ci/slurm/cluster.sh status   exit 0 when all three daemons are running
#
# `start` prints "started" when it started daemons and "running" when they were already up, so a
# caller knows whether it should stop them again. Both commands are idempotent.
#
# Slurm reads its configuration from the default path /etc/slurm/slurm.conf (the executor
# plugin's job step drops SLURM_CONF before its inner srun); a slurm.conf there that this script
# did not write is never overwritten. Everything else (munge key and socket, spool, state, logs,
# pid files) lives in $BOLUS_SLURM_STATE (default /var/lib/bolus-slurm).
#
# The fake GPU: GresTypes=gpu, Gres=gpu:1 on the node and a gres.conf line with File=/dev/null
# (Slurm marks a node whose gpu has no File invalid). Jobs that ask for it get
# SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES and gres/gpu=1 in their TRES, as on a GPU node.
# Completed jobs are recorded one per line in $BOLUS_SLURM_STATE/log/jobcomp.log.
set -euo pipefail

STATE=${BOLUS_SLURM_STATE:-/var/lib/bolus-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by bolus .ci/slurm/cluster.sh"
SOCKET=$STATE/munge/munge.socket.2
NODE=$(hostname -s)

log() { echo "cluster.sh: $*" >&2; }

running() { # running PID: the process exists and has not exited (a zombie has)
  [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

alive() { # alive PIDFILE NAME: the process in PIDFILE is running and is NAME
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  running "$pid" && [[ $(</proc/"$pid"/comm) == "$2"* ]]
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  if [[ $(id -u) != 0 ]]; then
    log "Slurm is not installed and installing it needs root (apt-get install slurm-wlm munge)"
    exit 3
  fi
  log "installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d-less containers would start the packaged services: we start our own instead
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
  if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to overwrite it"
    exit 4
  fi
  mkdir -p "$CONF_DIR" "$STATE"/{munge,log,ctld,spool}
  chmod 0755 "$STATE/munge" # munged wants its socket directory reachable; the key is 0400
  if [[ ! -s $STATE/munge/munge.key ]]; then
    # our own key: never the system's /etc/munge/munge.key
    head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
    chmod 0400 "$STATE/munge/munge.key"
  fi
  local cpus mem_mb
  cpus=$(nproc)
  # leave 1 GiB to the system; Slurm rejects jobs asking for more than RealMemory
  mem_mb=$(($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
  cat >"$CONF.new" <<EOF
$MARKER: a single-node test cluster
ClusterName=bolus
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
# squeue still lists a finished job for MinJobAge seconds: the executor's squeue status checks
# rely on it (it falls back to sacct below 3 x its first status interval)
MinJobAge=300
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$CONF_DIR/gres.conf.new" <<EOF
$MARKER
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
EOF
  mv "$CONF.new" "$CONF"
  mv "$CONF_DIR/gres.conf.new" "$CONF_DIR/gres.conf"
}

wait_for_node() {
  local state="" deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    state=$(timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
    case $state in
    idle* | mixed* | allocated*) return 0 ;;
    esac
    sleep 1
  done
  log "node $NODE did not come up (state: '${state:-unknown}'); last log lines:"
  tail -n 20 "$STATE"/log/{munged,slurmctld,slurmd}.log >&2 || true
  exit 5
}

start() {
  install_packages
  if alive "$STATE/munged.pid" munged && alive "$STATE/slurmctld.pid" slurmctld &&
    alive "$STATE/slurmd.pid" slurmd; then
    echo running
    return
  fi
  write_config
  if ! alive "$STATE/munged.pid" munged; then
    munged --force --key-file="$STATE/munge/munge.key" --socket="$SOCKET" \
      --pid-file="$STATE/munged.pid" --log-file="$STATE/log/munged.log" \
      --seed-file="$STATE/munge/munged.seed"
  fi
  if ! alive "$STATE/slurmctld.pid" slurmctld; then
    # -c: a fresh controller state each time (no jobs left over from an earlier run)
    slurmctld -c
  fi
  if ! alive "$STATE/slurmd.pid" slurmd; then
    slurmd
  fi
  wait_for_node
  echo started
}

stop_one() { # stop_one PIDFILE NAME
  local pid
  alive "$1" "$2" || return 0
  pid=$(<"$1")
  kill "$pid"
  for _ in $(seq 1 50); do
    running "$pid" || return 0
    sleep 0.2
  done
  log "$2 ($pid) did not stop in 10 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  stop_one "$STATE/slurmd.pid" slurmd
  stop_one "$STATE/slurmctld.pid" slurmctld
  stop_one "$STATE/munged.pid" munged
  echo stopped
}

status() {
  alive "$STATE/munged.pid" munged && alive "$STATE/slurmctld.pid" slurmctld &&
    alive "$STATE/slurmd.pid" slurmd
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
