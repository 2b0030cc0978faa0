"""`pclean cluster up|down|status`: a long-lived Dask cluster host that many tasks share.

    pclean cluster up --spec cluster.yaml --address-file run/cluster.json
    pclean cluster status --address-file run/cluster.json
    pclean cluster down --address-file run/cluster.json
"""

from __future__ import annotations

import argparse
import json
import sys

from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.host import host_status, start_host, stop_host
from pclean_provider.compute.spec_file import load_spec_file
from pclean_provider.exit_codes import ClusterExit

DEFAULT_ADDRESS_FILE = "pclean-cluster.json"
# The names scripts and tests have used; the meanings live in exit_codes.ClusterExit.
EXIT_NOT_RUNNING = ClusterExit.NOT_RUNNING
EXIT_NO_WORKERS = ClusterExit.NO_WORKERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pclean cluster",
        description="Start, inspect or stop a long-lived Dask cluster host (local or SLURM workers) that many "
        "pclean runs or Airflow tasks share through its address file.")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start a cluster host (or find the running one) and print its scheduler address")
    up.add_argument("--spec", required=True, help="ClusterSpec as YAML or JSON (fields at top level or under 'cluster:')")
    up.add_argument("--foreground", action="store_true",
                    help="stay in the foreground until the host ends, and stop it on SIGTERM/SIGINT (for a "
                    "container's main process or a supervisor such as systemd)")
    for p in (up, sub.add_parser("down", help="stop the host, its workers and its SLURM jobs (also after a crash)"),
              sub.add_parser("status", help="print the host's state as JSON; exit 0 when it runs with workers, "
                             f"{ClusterExit.NOT_RUNNING} when it does not run, {ClusterExit.NO_WORKERS} when it runs without a "
                             "single worker")):
        p.add_argument("--address-file", default=DEFAULT_ADDRESS_FILE,
                       help=f"JSON file with the scheduler address (default: ./{DEFAULT_ADDRESS_FILE})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    try:
        if args.action == "up":
            spec = load_spec_file(args.spec)
            address = start_host(spec, args.address_file)
            status = host_status(args.address_file)
            print(address)
            print(f"cluster host pid {status.host_pid}, {status.workers} workers, dashboard "
                  f"{status.dashboard_link or 'none'}; address file {status.address_file}", file=sys.stderr)
            if args.foreground:
                return _wait_in_foreground(args.address_file)
            return ClusterExit.OK
        if args.action == "down":
            before = stop_host(args.address_file)
            if before.state == "stopped":
                print(f"no cluster host for {before.address_file}; nothing to stop", file=sys.stderr)
            else:
                jobs = f", cancelled SLURM jobs named {before.slurm_job_name}" if before.slurm_job_name else ""
                print(f"stopped cluster host (was {before.state}, pid {before.host_pid}){jobs}", file=sys.stderr)
            return ClusterExit.OK
        status = host_status(args.address_file)
        print(json.dumps(status.model_dump(), indent=2))
        if status.state != "running":
            return ClusterExit.NOT_RUNNING
        if not status.workers:
            jobs = "; ".join(f"{j['id']} {j['state']} ({j['reason']})" for j in status.slurm_jobs)
            print(f"pclean cluster status: the cluster host runs but has no workers"
                  f"{'; SLURM jobs: ' + jobs if jobs else ''}", file=sys.stderr)
            return ClusterExit.NO_WORKERS
        return ClusterExit.OK
    except ClusterError as exc:
        print(f"pclean cluster {args.action}: {exc}", file=sys.stderr)
        return ClusterExit.FAILED


def _wait_in_foreground(address_file: str) -> int:
    """Block while the host runs; a stop signal takes the host (and its SLURM jobs) down with us."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(5.0):
        if host_status(address_file).state != "running":
            print("pclean cluster up: the cluster host ended", file=sys.stderr)
            return ClusterExit.FAILED
    stop_host(address_file)
    print("pclean cluster up: stopped the cluster host on request", file=sys.stderr)
    return ClusterExit.OK


if __name__ == "__main__":
    sys.exit(main())
