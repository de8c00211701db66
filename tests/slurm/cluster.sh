#!/usr/bin/env bash
# A one-node Slurm cluster for the tests (tests/python/test_slurm.py): this machine is both the
# controller and the only compute node. Debian's slurm-wlm and munge, run as plain daemons (no
# systemd, no cgroups): processes are tracked by their parent ids (proctrack/linuxproc) and
# memory is enforced by the accounting sampler, which kills a step whose resident memory goes
# over its request (jobacct_gather/linux with OverMemoryKill, sampled every second).
#
#   tests/slurm/cluster.sh up       install what is missing (as root), configure, start, wait idle
#   tests/slurm/cluster.sh down     cancel every job, stop slurmd, slurmctld and munged
#   tests/slurm/cluster.sh status   sinfo and the daemons' process ids
#
# The node has the CPUs and memory `slurmd -C` reports and one GPU in name only (gres gpu:1
# whose device file is a link to /dev/null; Slurm 22.05 drops a GPU without a device file), so
# that a job asking `--gres=gpu:1` is scheduled and its request can be checked; nothing on this
# node is a real GPU. Partitions: `cpu` (default) and `gpu`, both on
# the node. slurm.conf goes to /etc/slurm (where every Slurm command looks for it); state, logs
# and pid files go to $STOCHSEG_SLURM_DIR (default /var/tmp/stochseg-slurm).
set -euo pipefail

STATE=${STOCHSEG_SLURM_DIR:-/var/tmp/stochseg-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by stochseg tests/slurm/cluster.sh"
MUNGE_RUN=/run/munge

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them as root (apt-get install slurm-wlm munge)"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

# the node line's hardware, as slurmd itself reports it
node_hardware() {
  slurmd -C | head -n1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' '
}

write_config() {
  local host hw
  host=$(hostname -s)
  hw=$(node_hardware)
  local f
  for f in "$CONF" "$CONF_DIR/gres.conf"; do
    if [ -e "$f" ] && ! grep -qxF "$MARK" "$f"; then
      die "$f exists and was not written by this script; not replacing it"
    fi
  done
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$STATE/log"
  cat >"$CONF" <<EOF
$MARK
ClusterName=stochseg-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# memory: sampled every second, a step over its --mem is killed
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=1024
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for 10 minutes (there is no accounting database)
MinJobAge=600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 ${hw}Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
  cat >"$CONF_DIR/gres.conf" <<EOF
$MARK
NodeName=$host Name=gpu File=$STATE/fake-gpu0
EOF
  # slurmd wants a device file: a name for /dev/null
  ln -sfn /dev/null "$STATE/fake-gpu0"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (the munge package creates it)"
  mkdir -p "$MUNGE_RUN"
  chown munge:munge "$MUNGE_RUN"
  chmod 0755 "$MUNGE_RUN"
  runuser -u munge -- munged
  munge -n | unmunge >/dev/null || die "munged does not answer"
}

daemon_pid() {  # pid from a pid file, if that process is alive
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

wait_idle() {
  local host state _
  host=$(hostname -s)
  for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
      idle) say "node $host idle ($(sinfo -h -o '%P %c CPUs %m MB %G' | tr '\n' ';'))"; return 0 ;;
    esac
    sleep 1
  done
  tail -n 30 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  die "node $host not idle after 60 s (state: ${state:-none})"
}

up() {
  install_packages
  write_config
  start_munge
  # -c: a fresh start, no job or node state of an earlier cluster
  daemon_pid "$STATE/slurmctld.pid" >/dev/null || slurmctld -c
  daemon_pid "$STATE/slurmd.pid" >/dev/null || slurmd
  wait_idle
}

stop_pid_file() {
  local f=$1 name=$2 pid _
  pid=$(daemon_pid "$f") || return 0
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  say "$name ($pid) still running after 10 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

# cancels every job and waits (up to 30 s) until none runs or completes
cancel_jobs() {
  local _
  daemon_pid "$STATE/slurmctld.pid" >/dev/null || return 0
  squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  for _ in $(seq 1 60); do
    [ -z "$(squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  say "jobs still running after 30 s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
}

down() {
  cancel_jobs
  stop_pid_file "$STATE/slurmd.pid" slurmd
  stop_pid_file "$STATE/slurmctld.pid" slurmctld
  stop_pid_file "$MUNGE_RUN/munged.pid" munged
  if pgrep -x slurmstepd >/dev/null; then
    say "warning: job step daemons left: $(pgrep -x slurmstepd | tr '\n' ' ')"
  fi
  say "stopped"
}

status() {
  local name f
  for name in slurmctld slurmd; do
    f=$STATE/$name.pid
    echo "$name: $(daemon_pid "$f" || echo 'not running')"
  done
  echo "munged: $(daemon_pid "$MUNGE_RUN/munged.pid" || echo 'not running')"
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
