#!/usr/bin/env bash
# Stop the one-node SLURM started by tests/slurm/start-local-slurm.sh: only the daemons that script
# started (listed in $PCLEAN_SLURM_DIR/run/started, found by their pid files), never others.
# Jobs still on the node are cancelled first, so no worker outlives its SLURM.
set -euo pipefail

DIR="${PCLEAN_SLURM_DIR:-/tmp/pclean-slurm}"
CONF="$DIR/slurm.conf"
say() { echo "stop-local-slurm: $*" >&2; }

if [[ ! -f "$DIR/run/started" ]]; then
  say "nothing to stop (no daemons started by start-local-slurm.sh under $DIR)"
  exit 0
fi
exec 9>"$DIR/.lock"
flock -w 120 9 || { say "ERROR: $DIR/.lock is held by someone else"; exit 1; }
export SLURM_CONF="$CONF"

started="$(sort -u "$DIR/run/started")"
if grep -qx slurmctld <<<"$started"; then
  ids="$(timeout 10 squeue -h -o %i 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    say "cancelling jobs: $(echo $ids)"
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    for _ in $(seq 1 40); do [[ -z "$(timeout 10 squeue -h -o %i 2>/dev/null || true)" ]] && break; sleep 0.5; done
  fi
fi

stop_pidfile() {
  local name="$1" pidfile="$2" pid
  [[ -s "$pidfile" ]] || { say "$name: no pid file"; return 0; }
  pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then say "$name: not running"; rm -f "$pidfile"; return 0; fi
  # The pid file may be stale and the number reused: only signal the daemon it names.
  if [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" != "$name" ]]; then
    say "$name: pid $pid is not $name any more; leaving it alone"; rm -f "$pidfile"; return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# Reverse order of start: the node daemon, the controller, then authentication.
grep -qx slurmd <<<"$started" && stop_pidfile slurmd "$DIR/run/slurmd.pid"
grep -qx slurmctld <<<"$started" && stop_pidfile slurmctld "$DIR/run/slurmctld.pid"
grep -qx munged <<<"$started" && stop_pidfile munged "$DIR/run/munged.pid"
rm -f "$DIR/run/started"
say "stopped"
