#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests marked `slurm` (no systemd needed):
#
#   bash .ci/slurm_cluster.sh install      # Debian's slurmctld, slurmd, slurm-client and munge (root)
#   bash .ci/slurm_cluster.sh start DIR    # config, state, logs and PID files under DIR
#   export SLURM_CONF=DIR/slurm.conf       # what sbatch, squeue, scontrol and the tests read
#   bash .ci/slurm_cluster.sh stop DIR     # stops the daemons by their PID files
#
# munged, slurmctld and slurmd run as root with proctrack/linuxproc and task/none (no cgroups in a
# container), JobRequeue=1, and no accounting (as on many small clusters: sacct has nothing to say).
set -euo pipefail

command=${1:?usage: slurm_cluster.sh install | start DIR | stop DIR}

install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  local dir=$1 host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))  # MB, less 1 GB for the system
  cat >"$dir/slurm.conf" <<EOF
ClusterName=sparsecse-ci
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobRequeue=1
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
KillWait=10
MinJobAge=300
SchedulerParameters=defer_batch
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  local dir
  dir=$(mkdir -p "$1" && cd "$1" && pwd)
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  write_config "$dir"
  export SLURM_CONF=$dir/slurm.conf
  munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"
  slurmctld -c -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 60); do  # the node registers within seconds
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM is up: SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 1
  done
  echo "SLURM did not come up in 60 s; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  tail -n 5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  return 1
}

stop() {
  local dir=$1 pidfile
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
}

case "$command" in
  install) install ;;
  start) start "${2:?start DIR}" ;;
  stop) stop "${2:?stop DIR}" ;;
  *) echo "unknown command $command: install | start DIR | stop DIR" >&2; exit 2 ;;
esac
