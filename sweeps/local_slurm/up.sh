#!/usr/bin/env bash
# A single-node Slurm "cluster" on this machine, without systemd (CI, a laptop, a container).
#
#   source sweeps/local_slurm/up.sh --with-dbd     # or: eval "$(sweeps/local_slurm/up.sh --with-dbd)"
#   sinfo; srun hostname
#   python -m latentgeo.train -m hydra/launcher=slurm hydra.launcher.partition=debug ...
#   sweeps/local_slurm/down.sh
#
# Runs as root: installs munge + Slurm (+ slurmdbd + MariaDB) from Debian when missing, writes a
# minimal slurm.conf for one node `localhost` (all cores, 80% of RAM, partition `debug`, no
# cgroups), starts the daemons directly and waits until the node is idle. Idempotent: a second
# call with the same SLURM_DIR finds the running cluster and only prints the exports.
#
# --with-dbd: accounting (slurmdbd + a private MariaDB in SLURM_DIR). Use it: without accounting
#   a job cancelled before it returns leaves the submitit launcher waiting forever
#   (/work/shared/reference/environment.md); with it the sweep fails cleanly ~20 s later.
#
# Environment: SLURM_DIR (default ${TMPDIR:-/tmp}/latentgeo-slurm): slurm.conf, state, logs, PID
#   files of what this script started (down.sh stops exactly those), the database.
#   LATENTGEO_SLURM_PORT (default 6817): first of four ports (slurmctld, slurmd, slurmdbd,
#   mariadb), so that two such clusters on one machine do not collide.
# stdout carries only `export ...` lines; progress and errors go to stderr.

export SLURM_DIR=${SLURM_DIR:-${TMPDIR:-/tmp}/latentgeo-slurm}

# A subshell body: `set -e` and `exit` stay inside it when the script is sourced.
_latentgeo_slurm_up() (
  set -euo pipefail
  with_dbd=0
  for arg in "$@"; do
    case $arg in
      --with-dbd) with_dbd=1 ;;
      *) echo "usage: up.sh [--with-dbd]" >&2; exit 2 ;;
    esac
  done
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  dir=$SLURM_DIR
  export SLURM_CONF=$dir/slurm.conf
  port=${LATENTGEO_SLURM_PORT:-6817}
  alive() { [[ -s $dir/$1.pid ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

  if alive slurmctld && alive slurmd && sinfo -h >/dev/null 2>&1; then
    if [[ $with_dbd == 1 ]] && ! alive slurmdbd; then
      echo "slurm is up in $dir without slurmdbd; run down.sh, then up.sh --with-dbd" >&2
      exit 1
    fi
    echo "slurm already up in $dir" >&2
    exit 0
  fi
  [[ $(id -u) == 0 ]] || { echo "up.sh: must run as root (the daemons run as root)" >&2; exit 1; }
  if [[ -d $dir && -n $(ls -A "$dir") && ! -f $dir/slurm.conf ]]; then
    echo "up.sh: SLURM_DIR=$dir is not empty and holds no slurm.conf; not touching it" >&2
    exit 1
  fi
  [[ -d $dir ]] && { "$here/down.sh" >/dev/null 2>&1 || true; }  # leftovers of an earlier run
  rm -rf "$dir"
  mkdir -p "$dir"/{state,spool}

  pkgs=(munge slurmctld slurmd slurm-client)
  [[ $with_dbd == 1 ]] && pkgs+=(slurmdbd mariadb-server)
  if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
    command -v apt-get >/dev/null || { echo "up.sh: no apt-get; install ${pkgs[*]}" >&2; exit 1; }
    echo "installing ${pkgs[*]} (apt, ~30 s)" >&2
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                  "${pkgs[@]}" >>"$dir/apt.log" 2>&1; }
    apt_install || { apt-get update -qq >>"$dir/apt.log" 2>&1 && apt_install; } || {
      echo "up.sh: apt-get install ${pkgs[*]} failed (see $dir/apt.log)" >&2; exit 1; }
  fi

  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 8 / 10 ))
  acct="AccountingStorageType=accounting_storage/none"
  if [[ $with_dbd == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((port + 2))"
  fi
  # KillWait=5: submitit ignores SIGTERM, so a cancelled job would linger the default 30 s.
  # DefMemPerCPU: without it a job that asks no memory gets the whole node (CR_Core_Memory),
  # and array tasks would run one at a time.
  cat > "$SLURM_CONF" <<CONF
ClusterName=latentgeo
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
JobAcctGatherType=jobacct_gather/none
$acct
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

  # munge: shared by everything on the machine; start it only when it is not running
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey -c -k /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$dir/munged.pid"
  fi

  if [[ $with_dbd == 1 ]]; then
    # a private MariaDB (own datadir, socket and port) so a system database is never touched
    db=$dir/mariadb; sock=$db/mariadb.sock
    mariadb-install-db --no-defaults --user=mysql --datadir="$db" --skip-test-db \
      --auth-root-authentication-method=socket >"$dir/mariadb-install.log" 2>&1
    /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$db" --socket="$sock" \
      --port=$((port + 3)) --bind-address=127.0.0.1 --skip-name-resolve >"$dir/mariadb.log" 2>&1 &
    echo $! > "$dir/mariadbd.pid"
    sql() { mariadb --no-defaults --socket="$sock" -uroot -e "$1"; }
    for _ in $(seq 1 60); do sql 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
         CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF; it must be mode 600
    cat > "$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((port + 2))
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((port + 3))
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$dir/slurmdbd.conf"
    /usr/sbin/slurmdbd
    for _ in $(seq 1 120); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
    sacctmgr -i add cluster latentgeo >/dev/null 2>&1 || true
    sacctmgr -i add account default Cluster=latentgeo >/dev/null 2>&1 || true
    sacctmgr -i add user root Account=default >/dev/null 2>&1 || true
  fi

  /usr/sbin/slurmctld
  /usr/sbin/slurmd -N localhost
  for _ in $(seq 1 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.5; done
  if ! sinfo -h -o %T 2>/dev/null | grep -q idle; then
    echo "up.sh: slurm did not come up; logs:" >&2
    tail -n 20 "$dir"/*.log >&2
    exit 1
  fi
  echo "slurm up ($cpus CPUs, ${mem} MB, partition debug$([[ $with_dbd == 1 ]] && echo ', accounting'))" >&2
)

if _latentgeo_slurm_up "$@"; then
  export SLURM_CONF=$SLURM_DIR/slurm.conf
  echo "export SLURM_DIR=$SLURM_DIR SLURM_CONF=$SLURM_CONF"
else
  # shellcheck disable=SC2317  # `return` when sourced, `exit` when executed
  return 1 2>/dev/null || exit 1
fi
