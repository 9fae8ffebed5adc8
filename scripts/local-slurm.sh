#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `bench run --executor slurm` and for the tests.
#
#   scripts/local-slurm.sh start    # munged, slurmctld and slurmd for localhost; prints `export SLURM_CONF=...`
#   scripts/local-slurm.sh stop     # stops the daemons this script started (by their pid files)
#   scripts/local-slurm.sh status
#
# Needs root and Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge). The
# configuration is written to $BENCH_SLURM_DIR (default /tmp/bench-slurm): proctrack/linuxproc,
# task/none, select/cons_tres, no accounting database, one partition "debug" with this host's
# CPUs and memory, MaxArraySize 10001, MaxJobCount 50000.
set -euo pipefail
DIR=${BENCH_SLURM_DIR:-/tmp/bench-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)

start() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null || {
    echo "local-slurm: slurmctld/munged not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
  [ "$(id -u)" = 0 ] || { echo "local-slurm: must run as root (slurmd runs jobs as their users)" >&2; exit 3; }
  mkdir -p "$DIR"/{state,spool,log,munge}
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
  if ! pgrep -F "$DIR/munged.pid" >/dev/null 2>&1; then
    mkdir -p /run/munge
    munged --force --key-file="$DIR/munge/munge.key" --socket=/run/munge/munge.socket.2 \
      --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$CONF" <<CONF
ClusterName=bench-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MaxArraySize=10001
MaxJobCount=50000
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldParameters=enable_configless
KillWait=5
MinJobAge=300
InactiveLimit=0
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF=$CONF
  pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1 || slurmctld -f "$CONF" -i
  pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1 || slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "local-slurm: the node did not come up; see $DIR/log/" >&2
  sinfo >&2 || true
  exit 4
}

stop() {
  for d in slurmd slurmctld munged; do
    if [ -f "$DIR/$d.pid" ]; then
      pid=$(cat "$DIR/$d.pid" 2>/dev/null || true)
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$DIR/$d.pid"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$CONF sinfo; SLURM_CONF=$CONF squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
