#!/usr/bin/env bash
# Start a one-node SLURM (munge + slurmctld + slurmd) on this machine for pclean's SLURM tests and
# for trying `cluster_type: slurm` without a real cluster. Idempotent: when the node already
# answers `sinfo`, it exits 0 at once.
#
#   tests/slurm/start-local-slurm.sh          # state, logs and slurm.conf under /tmp/pclean-slurm
#   PCLEAN_SLURM_DIR=/scratch/slurm tests/slurm/start-local-slurm.sh
#   export SLURM_CONF=/tmp/pclean-slurm/slurm.conf   # printed at the end; sbatch/squeue need it
#                                                    # unless /etc/slurm/slurm.conf points here
#
# Needs root (daemons, Debian packages). Stop with tests/slurm/stop-local-slurm.sh, which stops
# only the daemons this script started. The last line printed is PCLEAN_SLURM=started or
# PCLEAN_SLURM=running (found running), so callers know whether to stop it afterwards.
#
# The same script starts the nodes of a multi-host cluster (docker/compose.yaml runs it in every
# SLURM container), told its part through the environment:
#   PCLEAN_SLURM_ROLE        all (default: everything on this host) | controller | node | client
#   PCLEAN_SLURM_CONTROLLER  host name of the controller (default: this host)
#   PCLEAN_SLURM_NODES       comma-separated compute node names (default: this host)
#   PCLEAN_SLURM_CPUS, PCLEAN_SLURM_MEMORY_MB   per node (default: what `slurmd -C` measures here)
# Hosts other than "all" share /etc/munge (the key) and /etc/slurm (slurm.conf, written by the
# controller), as a site shares them.
set -euo pipefail

DIR="${PCLEAN_SLURM_DIR:-/tmp/pclean-slurm}"
PARTITION="${PCLEAN_SLURM_PARTITION:-debug}"
WAIT_S="${PCLEAN_SLURM_WAIT_S:-60}"
CONF="$DIR/slurm.conf"
NODE="$(hostname -s)"
ROLE="${PCLEAN_SLURM_ROLE:-all}"
CONTROLLER="${PCLEAN_SLURM_CONTROLLER:-$NODE}"
NODES="${PCLEAN_SLURM_NODES:-$NODE}"
case "$ROLE" in all|controller|node|client) ;; *)
  echo "start-local-slurm: ERROR: PCLEAN_SLURM_ROLE=$ROLE; use all, controller, node or client" >&2; exit 1 ;;
esac
# One host keeps its config private; several hosts read the controller's copy in /etc/slurm.
[[ "$ROLE" == all ]] || CONF=/etc/slurm/slurm.conf

say() { echo "start-local-slurm: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

mkdir -p "$DIR"
# Two callers at once (parallel test sessions) must not both write the config and start daemons.
exec 9>"$DIR/.lock"
flock -w 120 9 || die "another start-local-slurm.sh holds $DIR/.lock for more than 120 s"

# Clients find the config through SLURM_CONF, or /etc/slurm/slurm.conf when that is ours.
export SLURM_CONF="$CONF"

node_state() { timeout 10 sinfo -h -N -n "$NODE" -o "%t" 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true; }

# Is this host's part already up? A compute node is up when it is idle (or busy); the controller
# when it answers a ping; a client host when sinfo answers.
role_up() {
  case "$ROLE" in
    all|node) case "$(node_state)" in idle|mix|alloc|comp) return 0 ;; esac; return 1 ;;
    controller) timeout 10 scontrol ping 2>/dev/null | grep -q "is UP" ;;
    client) timeout 10 sinfo -h >/dev/null 2>&1 ;;
  esac
}
if [[ -f "$CONF" ]] && command -v sinfo >/dev/null && role_up; then
  say "SLURM already running (role $ROLE, host $NODE, partition $PARTITION, config $CONF)"
  echo "SLURM_CONF=$CONF"; echo "PCLEAN_SLURM=running"; exit 0
fi

[[ $EUID -eq 0 ]] || die "run as root: it starts munged, slurmctld and slurmd and may install Debian packages"

# --- packages ----------------------------------------------------------------------------------
missing=()
command -v munged >/dev/null || missing+=(munge)
command -v slurmctld >/dev/null || missing+=(slurmctld)
command -v slurmd >/dev/null || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
if ((${#missing[@]})); then
  say "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- munge (authentication between the SLURM daemons and clients) ------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mkdir -p "$DIR/run" "$DIR/state" "$DIR/spool" "$DIR/log"
if ! munge_ok; then
  if [[ "$ROLE" == all || "$ROLE" == controller ]]; then
    [[ -s /etc/munge/munge.key ]] || { say "creating /etc/munge/munge.key"; mungekey --create >/dev/null 2>&1 || \
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  else
    # The controller creates the shared key; wait for it rather than make a second, different one.
    for _ in $(seq 1 $((WAIT_S * 2))); do [[ -s /etc/munge/munge.key ]] && break; sleep 0.5; done
    [[ -s /etc/munge/munge.key ]] || die "no /etc/munge/munge.key after ${WAIT_S} s: is the controller's key shared here?"
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  say "starting munged"
  # 9>&-: a daemon must not inherit the lock, or it holds it for its whole life.
  runuser -u munge -- munged 9>&-
  for _ in $(seq 1 50); do munge_ok && break; sleep 0.2; done
  munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
  echo munged >> "$DIR/run/started"
fi

# --- slurm.conf ---------------------------------------------------------------------------------
if [[ "$ROLE" == all || "$ROLE" == controller ]]; then
# What slurmd itself detects. Not `nproc`: it honours OMP_NUM_THREADS, which CASA's runtime sets to 1
# in every process that imaged, so a script started from such a process would see one CPU.
node_line="$(env -u OMP_NUM_THREADS slurmd -C | head -n1)"
cpus="${PCLEAN_SLURM_CPUS:-$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")}"
real_mb="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")"
[[ -n "$cpus" ]] || cpus="$(env -u OMP_NUM_THREADS nproc --all)"
[[ -n "$real_mb" || -n "${PCLEAN_SLURM_MEMORY_MB:-}" ]] || die "could not read RealMemory from \`slurmd -C\`"
# Below what slurmd measures, or slurmd registers the node as invalid and drains it.
mem_mb="${PCLEAN_SLURM_MEMORY_MB:-$(( real_mb * 9 / 10 ))}"
tmp="$(mktemp "$DIR/.slurm.conf.XXXXXX")"
cat > "$tmp" <<CONF
# Written by pclean's tests/slurm/start-local-slurm.sh: a one-node SLURM for tests and trials.
ClusterName=pclean-local
SlurmctldHost=$CONTROLLER
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs leave squeue soon, so tests looking for orphans see only live jobs.
MinJobAge=30
KillWait=5
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODES CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODES Default=YES MaxTime=INFINITE State=UP
CONF
chmod 0644 "$tmp"
mkdir -p "$(dirname "$CONF")"
mv -f "$tmp" "$CONF"
fi

if [[ "$ROLE" == all ]]; then
  # Let plain `sbatch`/`squeue` work without SLURM_CONF when this machine has no other SLURM config.
  mkdir -p /etc/slurm
  if [[ ! -e /etc/slurm/slurm.conf || "$(readlink /etc/slurm/slurm.conf || true)" == "$CONF" ]]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  fi
else
  for _ in $(seq 1 $((WAIT_S * 2))); do [[ -s "$CONF" ]] && break; sleep 0.5; done
  [[ -s "$CONF" ]] || die "no $CONF after ${WAIT_S} s: is the controller's /etc/slurm shared here?"
fi

# --- daemons ------------------------------------------------------------------------------------
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [[ "$ROLE" == all || "$ROLE" == controller ]] && ! alive "$DIR/run/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld -f "$CONF" 9>&-
  echo slurmctld >> "$DIR/run/started"
fi
if [[ "$ROLE" == all || "$ROLE" == node ]] && ! alive "$DIR/run/slurmd.pid"; then
  say "starting slurmd"
  slurmd -f "$CONF" 9>&-
  echo slurmd >> "$DIR/run/started"
fi

# --- wait until this host's part is up ----------------------------------------------------------
if [[ "$ROLE" == controller || "$ROLE" == client ]]; then
  for _ in $(seq 1 $((WAIT_S * 2))); do role_up && break; sleep 0.5; done
  role_up || die "SLURM ($ROLE on $NODE) not answering after ${WAIT_S} s; see $DIR/log/"
  say "SLURM $ROLE is up on $NODE, controller $CONTROLLER, config $CONF"
  echo "SLURM_CONF=$CONF"
  echo "PCLEAN_SLURM=started"
  exit 0
fi
state=""
for _ in $(seq 1 $((WAIT_S * 2))); do
  state="$(node_state)"
  case "$state" in
    idle|mix|alloc) break ;;
    down|drain|drng|fail)
      # A node remembered as down from an earlier run comes back once slurmd answers again.
      scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mix|alloc) ;;
  *) die "node $NODE is '${state:-not listed}' after ${WAIT_S} s; see $DIR/log/slurmctld.log and $DIR/log/slurmd.log" ;;
esac
say "SLURM is up: node $NODE ($cpus CPUs, ${mem_mb} MB), partition $PARTITION, config $CONF"
echo "SLURM_CONF=$CONF"
echo "PCLEAN_SLURM=started"
