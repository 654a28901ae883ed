#!/usr/bin/env bash
# A throw-away single-node SLURM cluster, with accounting, for the launcher tests.
#
#   tests/slurm/cluster.sh RUN_DIR -- COMMAND [ARG...]
#
# Starts munged, MariaDB, slurmdbd, slurmctld and slurmd with every file under RUN_DIR
# (which must be absent or empty), runs COMMAND with SLURM_CONF exported while the node is
# idle and ready, then cancels any job left, stops every daemon by its PID and exits with
# COMMAND's status. Needs root on Debian 12; installs the Debian packages if they are
# missing. Daemons are told to talk to each other on 127.0.0.1 only.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
STARTUP_TIMEOUT_S=60

die() { echo "cluster.sh: error: $*" >&2; exit 2; }

[ $# -ge 3 ] && [ "$2" = "--" ] || die "usage: $0 RUN_DIR -- COMMAND [ARG...]"
[ "$(id -u)" = 0 ] || die "needs root: the daemons run as root and munge"
run_dir=$(realpath -m "$1")
shift 2
if [ -e "$run_dir" ] && [ -n "$(ls -A "$run_dir")" ]; then
    die "$run_dir is not empty; give a new folder (its logs are kept after the run)"
fi

install_missing_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "cluster.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# Three free TCP ports, so that two clusters on one machine (two people testing) don't collide.
free_ports() {
    python3 -c '
import socket
sockets = [socket.socket() for _ in range(3)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))'
}

# Poll COMMAND until it succeeds; give up with the log to read after STARTUP_TIMEOUT_S.
wait_until() {
    local what=$1 log=$2 deadline=$((SECONDS + STARTUP_TIMEOUT_S))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster.sh: $what did not come up; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

daemon_pids=()

# Runs on every exit: no job and no daemon outlives the script.
stop_cluster() {
    local pid deadline
    if [ -n "${SLURM_CONF:-}" ] && [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
        scancel --quiet --user=root 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do
            sleep 0.5
        done
    fi
    # Last started, first stopped: slurmd before slurmctld before slurmdbd before its database.
    for ((i = ${#daemon_pids[@]} - 1; i >= 0; i--)); do
        pid=${daemon_pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

install_missing_packages

node=$(hostname -s)
read -r ctld_port slurmd_port dbd_port < <(free_ports)
etc=$run_dir/etc
munge_dir=$run_dir/munge
db_dir=$run_dir/mariadb
logs=$run_dir/log
mkdir -p "$etc" "$munge_dir" "$db_dir" "$logs" "$run_dir/state" "$run_dir/spool" "$run_dir/pids"
munge_socket=$munge_dir/munge.socket
db_socket=$run_dir/mariadb.sock

# munge: its own key and socket, owned by the munge user as munged insists.
mungekey --create --keyfile="$munge_dir/munge.key"
chown -R munge: "$munge_dir"
chmod 755 "$munge_dir"  # clients need to reach the socket
setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --socket="$munge_socket" --key-file="$munge_dir/munge.key" \
    --pid-file="$munge_dir/munged.pid" --log-file="$munge_dir/munged.log" \
    --seed-file="$munge_dir/munged.seed" 2>>"$logs/munged.err" &
daemon_pids+=($!)
wait_until munged "$munge_dir/munged.log" munge --socket="$munge_socket" --no-input

# MariaDB for slurmdbd: a private datadir, unix socket only, root by socket authentication.
mariadb-install-db --no-defaults --datadir="$db_dir" --user=root \
    --auth-root-authentication-method=socket --skip-test-db >"$logs/mariadb-install.log" 2>&1
mariadbd --no-defaults --datadir="$db_dir" --socket="$db_socket" --skip-networking --user=root \
    --pid-file="$run_dir/pids/mariadb.pid" --log-error="$logs/mariadb.log" 2>>"$logs/mariadb.log" &
daemon_pids+=($!)
wait_until mariadb "$logs/mariadb.log" mariadb-admin --no-defaults --socket="$db_socket" ping

cat >"$etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$munge_socket
DbdHost=$node
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$run_dir/pids/slurmdbd.pid
LogFile=$logs/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
chmod 600 "$etc/slurmdbd.conf"

# The node line comes from the hardware slurmd sees; the rest follows ../shared/SLURM_NOTES.md.
node_line=$(slurmd -C | head -n 1)
cat >"$etc/slurm.conf" <<EOF
ClusterName=xrmtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
# cred_expire=10: a requeued job may start again after 10 s instead of 120 s.
AuthInfo=socket=$munge_socket,cred_expire=10
StateSaveLocation=$run_dir/state
SlurmdSpoolDir=$run_dir/spool
SlurmctldPidFile=$run_dir/pids/slurmctld.pid
SlurmdPidFile=$run_dir/pids/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# Cores only: with memory consumable a job asking for none would take the whole node.
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# No multi-second gaps between array tasks; a requeue's SIGTERM turns to SIGKILL after 2 s.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
KillWait=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# For the slurmdbd connection this names the munge socket (AuthInfo's socket is not used there).
AccountingStoragePass=$munge_socket
JobAcctGatherType=jobacct_gather/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$etc/slurm.conf

MYSQL_UNIX_PORT=$db_socket slurmdbd -D >>"$logs/slurmdbd.log" 2>&1 &
daemon_pids+=($!)
wait_until slurmdbd "$logs/slurmdbd.log" sacctmgr --immediate --noheader list cluster
slurmctld -D -c >>"$logs/slurmctld.log" 2>&1 &
daemon_pids+=($!)
slurmd -D >>"$logs/slurmd.log" 2>&1 &
daemon_pids+=($!)
node_is_idle() { [ "$(sinfo --noheader --nodes="$node" --format=%T)" = idle ]; }
wait_until "the node" "$logs/slurmctld.log" node_is_idle
echo "cluster.sh: node $node idle after ${SECONDS} s; SLURM_CONF=$SLURM_CONF" >&2

set +e
"$@"
status=$?
set -e
exit $status
