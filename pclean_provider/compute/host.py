"""A cluster host: one detached process that holds a Dask scheduler (and its SLURMCluster) for as
long as a DAG run, or a person, needs it.

dask-jobqueue keeps the scheduler inside the process that created the SLURMCluster, so a cluster
shared by many short-lived Airflow tasks needs a process of its own. ``start_host`` spawns it in
its own session (it survives the shell or task that started it), waits until the workers are up and
returns the scheduler address, which the host also writes to an address file (JSON, atomically).
``stop_host`` ends it and cancels its SLURM jobs by name, which works even after the host died
with ``kill -9``. Both are idempotent.

Files next to the address file ``A``: ``A.host.json`` (pid, job name; written at spawn, so that a
host still starting can be stopped), ``A.spec.json`` (the spec it runs), ``A.log`` (its log),
``A.lock`` (serialises up/down), ``A.tls/`` (the cluster's certificate, ``compute.tls``; a local
or SLURM cluster host uses TLS unless its spec says ``tls: false``). The address file, the host file and the spec are private to the
owner (mode 0600): the address is the key to the scheduler, and the spec may name site internals.
They are believed only when this user wrote them (``compute.private_files``: owner, mode, no link), in
a folder no other user can plant files in; a host is signalled only from the machine it runs on, and
only SLURM jobs named for its own cluster are cancelled.

A host holds a lease (``compute.lease``): when no task of its run has renewed it for the spec's
``host_idle_timeout``, the host closes its cluster and exits, keeping its spec so that a retried task
can start it again (``recover_host``); ``stop_host`` removes the spec too, so a stopped cluster stays
stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pclean_provider.atomic_files import write_text
from pclean_provider.casa_python import CasaPythonError, casa_python
from pclean_provider.child_env import child_env
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.lease import LeaseWatch
from pclean_provider.compute.private_files import (
    PRIVATE_MODE,
    UntrustedRecord,
    ensure_private_folder,
    folder_problem,
    open_private,
    read_private_text,
)
from pclean_provider.compute.spec_file import with_absolute_paths
from pclean_provider.compute.tls import client_kwargs, create_certificates
from pclean_provider.config.cluster import ClusterSpec

log = logging.getLogger(__name__)

HOST_MODULE = "pclean_provider.compute.host"
STOP_GRACE_S = 30.0
# Beyond worker_start_timeout: scheduler start-up, CASA import in the workers, SLURM bookkeeping.
START_MARGIN_S = 60.0


class HostInfo(BaseModel):
    """Contents of the address file (and, before the scheduler is up, of the host file)."""

    state: Literal["starting", "running"]
    scheduler_address: str | None = None
    dashboard_link: str | None = None
    host_pid: int
    host_started: float  # the host process's start time (seconds since the epoch), with pid its identity
    cluster_type: str
    cluster_id: str
    slurm_job_name: str | None = None
    log_file: str
    started_at: str
    tls_directory: str | None = None  # the cluster's certificate: clients need it when set
    # The machine the host runs on: its pid means nothing elsewhere (a teardown may run on another
    # Airflow worker). None in records written before it was kept: taken as this machine.
    host_name: str | None = None


class HostStatus(BaseModel):
    state: Literal["running", "starting", "stopped", "crashed", "unreachable"]
    address_file: str
    scheduler_address: str | None = None
    dashboard_link: str | None = None
    host_pid: int | None = None
    cluster_type: str | None = None
    slurm_job_name: str | None = None
    workers: int | None = None
    slurm_jobs: list[dict[str, str]] = []
    log_file: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def address(self) -> str | None:
        return self.scheduler_address


def _paths(address_file: str | os.PathLike) -> dict[str, Path]:
    given = Path(address_file).expanduser()
    # The folder resolved, never the file itself: a link planted under the address file's name must be
    # seen as a link (and refused), not followed to whatever it points at.
    a = given.parent.resolve() / given.name
    return {"address": a, "host": a.with_name(a.name + ".host.json"), "spec": a.with_name(a.name + ".spec.json"),
            "log": a.with_name(a.name + ".log"), "lock": a.with_name(a.name + ".lock"),
            "tls": a.with_name(a.name + ".tls")}


def _read_info(path: Path) -> HostInfo | None:
    """The record at ``path``; None when there is none (or it is half-written); UntrustedRecord when
    another user could have written it."""
    try:
        text = read_private_text(path)
        return None if text is None else HostInfo.model_validate_json(text)
    except UntrustedRecord:
        raise
    except (OSError, ValueError):
        return None


def _read_spec(path: Path) -> ClusterSpec:
    """The spec a host runs (FileNotFoundError when there is none); only one this user wrote."""
    text = read_private_text(path)
    if text is None:
        raise FileNotFoundError(str(path))
    return ClusterSpec.model_validate_json(text)


def _on_this_machine(info: HostInfo) -> bool:
    return info.host_name in (None, socket.gethostname())


def read_address_file(address_file: str | os.PathLike) -> HostInfo:
    """The running host's record; a clear error when there is none."""
    info = _read_info(_paths(address_file)["address"])
    if info is None or info.state != "running" or not info.scheduler_address:
        raise ClusterError(f"no running cluster host writes {address_file}; start one with "
                           f"`pclean cluster up --spec FILE --address-file {address_file}`")
    return info


@contextlib.contextmanager
def _locked(address_file: str | os.PathLike) -> Iterator[None]:
    lock = _paths(address_file)["lock"]
    ensure_private_folder(lock.parent)
    # Never truncated and never through a link: a link planted under this name would otherwise let
    # this process empty whatever file it points to.
    with open(open_private(lock, os.O_RDWR), "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _is_our_host(info: HostInfo | None) -> bool:
    """Alive and still our host: a pid from an old file may belong to another process by now.

    Identity is pid plus start time; the command line cannot be trusted because Dask retitles
    the process ("dask scheduler [...]").
    """
    if info is None or not info.host_pid or not _on_this_machine(info):
        return False
    started = _process_started(info.host_pid)
    return started is not None and abs(started - info.host_started) < 1.0


def _current_info(paths: dict[str, Path]) -> HostInfo | None:
    return _read_info(paths["address"]) or _read_info(paths["host"])


def host_status(address_file: str | os.PathLike) -> HostStatus:
    paths = _paths(address_file)
    info = _current_info(paths)
    if info is None:
        return HostStatus(state="stopped", address_file=str(paths["address"]))
    status = HostStatus(state="stopped", address_file=str(paths["address"]),
                        scheduler_address=info.scheduler_address, dashboard_link=info.dashboard_link,
                        host_pid=info.host_pid, cluster_type=info.cluster_type,
                        slurm_job_name=info.slurm_job_name, log_file=info.log_file)
    if info.slurm_job_name:
        # Not at the top: compute.slurm loads `distributed` and dask-jobqueue (see start_host).
        from pclean_provider.compute import slurm

        status.slurm_jobs = slurm.list_jobs(info.slurm_job_name)
    if not _is_our_host(info):
        status.state = "crashed"  # files left behind: `down` cleans up (and cancels jobs)
        return status
    if info.state == "starting" or not info.scheduler_address:
        status.state = "starting"
        return status
    status.workers = _count_workers(info.scheduler_address, tls_directory=info.tls_directory)
    status.state = "running" if status.workers is not None else "unreachable"
    return status


def tls_directory_for(address_file: str | os.PathLike) -> str | None:
    """Where the certificate of the cluster behind ``address_file`` is, if it uses TLS: a folder another
    user could fill would let their scheduler pass for ours."""
    info = _current_info(_paths(address_file))
    if info is None or not info.tls_directory:
        return None
    if os.path.isdir(info.tls_directory) and (problem := folder_problem(info.tls_directory)):
        raise UntrustedRecord(f"the certificate folder of the cluster behind {address_file} is not safe: {problem}")
    return info.tls_directory


def _count_workers(address: str, timeout: float = 10.0, tls_directory: str | None = None) -> int | None:
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False, **client_kwargs(tls_directory)) as client:
            return len(client.nthreads())
    except (OSError, TimeoutError):
        return None


def start_host(spec: ClusterSpec, address_file: str | os.PathLike, *, python: str | None = None) -> str:
    """Start a cluster host (or find the one already running) and return its scheduler address.

    The host runs with ``python``, else the CASA environment's interpreter (``[pclean] casa_python``,
    checked before the host starts), else this one; its local Dask workers and their coordinators
    inherit it, so a caller without CASA (an Airflow worker) can start a cluster that images."""
    # compute.cluster loads `distributed` and dask-jobqueue; the Airflow tasks that only read and
    # stop a host's records (operators, the hook) import this module and never need them.
    from pclean_provider.compute.cluster import backend_for, new_cluster_id

    paths = _paths(address_file)
    ensure_private_folder(paths["address"].parent)
    spec = with_absolute_paths(spec)
    with _locked(address_file):
        status = host_status(address_file)
        if status.state in ("running", "starting") and status.cluster_type != spec.cluster_type:
            raise ClusterError(
                f"a {status.cluster_type} cluster host (pid {status.host_pid}) already serves {paths['address']}; "
                f"stop it with `pclean cluster down --address-file {address_file}` before starting a "
                f"{spec.cluster_type} one")
        if status.state == "running" and status.scheduler_address:
            log.info("cluster host %s already running at %s", status.host_pid, status.scheduler_address)
            return status.scheduler_address
        if status.state != "stopped":
            # A host that died, hangs in start-up or lost its scheduler: clear it away completely
            # (its SLURM jobs included) and start afresh.
            log.warning("replacing cluster host in state %s (pid %s)", status.state, status.host_pid)
            _stop_unlocked(paths)

        if python is None:
            try:
                python = casa_python()
            except CasaPythonError as exc:
                raise ClusterError(f"cannot start a cluster host: {exc}") from exc
        cluster_id = new_cluster_id()
        # 'address' clusters bring their own security; local and SLURM hosts make their certificate
        # beside the address file (SLURM workers read it there, on the shared filesystem).
        use_tls = spec.tls if spec.tls is not None else spec.cluster_type in ("local", "slurm")
        if use_tls and (not spec.tls_directory or Path(spec.tls_directory) == paths["tls"]):
            # A new certificate per cluster: a client of an earlier cluster on this file is refused.
            spec = spec.model_copy(update={"tls_directory": str(create_certificates(paths["tls"]))})
        # Known before the host runs, so that `down` finds the jobs of a host that died starting.
        job_name = backend_for(spec).job_name(cluster_id)
        write_text(paths["spec"], spec.model_dump_json(indent=2), mode=PRIVATE_MODE)
        cmd = [python, "-m", HOST_MODULE, "--address-file", str(paths["address"]),
               "--cluster-id", cluster_id]
        log_fd = open_private(paths["log"], os.O_WRONLY | os.O_APPEND)
        with open(log_fd, "ab") as logf:
            # Own session: neither the terminal's hangup nor a task runner killing its process group
            # takes the host down; `down` is the way to stop it.
            # Without this process's secrets: the host's workers (local processes, or SLURM jobs, which
            # sbatch gives the submitting environment) run code on data from outside.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=child_env())
        info = HostInfo(state="starting", host_pid=proc.pid, host_started=_process_started(proc.pid) or 0.0,
                        cluster_type=spec.cluster_type,
                        cluster_id=cluster_id, slurm_job_name=job_name, log_file=str(paths["log"]),
                        started_at=_now(), tls_directory=spec.tls_directory, host_name=socket.gethostname())
        write_text(paths["host"], info.model_dump_json(indent=2), mode=PRIVATE_MODE)

        deadline = time.monotonic() + spec.worker_start_timeout + START_MARGIN_S
        while time.monotonic() < deadline:
            ready = _read_info(paths["address"])
            if ready and ready.host_pid == proc.pid and ready.state == "running":
                return str(ready.scheduler_address)
            if proc.poll() is not None:
                message = _failure_from_log(paths["log"])
                _stop_unlocked(paths)
                raise ClusterError(f"the cluster host exited before its cluster was ready: {message} "
                                   f"(log: {paths['log']})")
            time.sleep(0.3)
        _stop_unlocked(paths)
        raise ClusterError(f"the cluster host did not report a scheduler within "
                           f"{spec.worker_start_timeout + START_MARGIN_S:g} s; stopped it (log: {paths['log']})")


def recover_host(address_file: str | os.PathLike, *, python: str | None = None) -> str:
    """The scheduler address of the host behind ``address_file``, starting it again from its
    recorded spec when it died or ended its lease. A host stopped on purpose (``stop_host``) left no
    spec: that is an error saying so, never a silent restart.
    """
    paths = _paths(address_file)
    status = host_status(address_file)
    if status.state == "running" and status.scheduler_address:
        return status.scheduler_address
    try:
        spec = _read_spec(paths["spec"])
    except FileNotFoundError:
        raise ClusterError(f"the cluster host behind {paths['address']} is {status.state} and left no spec to "
                           "restart it from (it was stopped on purpose, or never started)") from None
    log.warning("cluster host behind %s is %s; starting it again from its spec", paths["address"], status.state)
    # start_host takes the lock, clears a crashed host's leftovers and is a no-op when a concurrent
    # retry has already restarted it.
    return start_host(spec, address_file, python=python)


def stop_host(address_file: str | os.PathLike) -> HostStatus:
    """Stop the host and everything it started; cancel its SLURM jobs by name. Fine to call twice."""
    paths = _paths(address_file)
    with _locked(address_file):
        before = host_status(address_file)
        _stop_unlocked(paths)
        return before


def _stop_unlocked(paths: dict[str, Path]) -> None:
    info = _current_info(paths)
    if info is not None and not _on_this_machine(info):
        # Its pid names some other process here. Left to its lease: nobody renews it once the run is
        # over, and the host then stops its cluster itself (or run `pclean cluster down` there).
        log.warning("the cluster host behind %s runs on %s, not here (%s): not signalled from here; it stops "
                    "itself when its lease runs out (host_idle_timeout)", paths["address"], info.host_name,
                    socket.gethostname())
    elif info is not None:
        pid = info.host_pid
        if _is_our_host(info):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the host closes its cluster, which cancels its jobs
            deadline = time.monotonic() + STOP_GRACE_S
            while _is_our_host(info) and time.monotonic() < deadline:
                time.sleep(0.2)
        # Whatever is left of the host's session (a hung host, LocalCluster workers orphaned by
        # kill -9): the session id is the host's pid because it was started with its own session.
        # A pid now owned by another process is left alone (Linux keeps a pid from reuse while
        # processes of its session live, so any left are ours).
        if _is_our_host(info) or _process_started(pid) is None:
            _kill_session(pid)
    if info is not None and info.slurm_job_name:
        # Not at the top: compute.slurm loads `distributed` and dask-jobqueue (see start_host).
        from pclean_provider.compute import slurm

        if info.slurm_job_name in _job_names_of(info, paths):
            slurm.cancel_jobs_by_name(info.slurm_job_name)
        else:
            log.warning("not cancelling SLURM jobs named %r: not the name the cluster %s behind %s gives its "
                        "jobs", info.slurm_job_name, info.cluster_id, paths["address"])
    for key in ("address", "host", "spec"):
        with contextlib.suppress(FileNotFoundError):
            paths[key].unlink()
    # Only the certificate the host made itself (a site-supplied folder elsewhere is the site's).
    shutil.rmtree(paths["tls"], ignore_errors=True)


def _job_names_of(info: HostInfo, paths: dict[str, Path]) -> set[str]:
    """The names the jobs of the record's cluster can carry: the default one made of its cluster id,
    or the fixed one its spec configures."""
    # Not at the top: compute.slurm loads `distributed` and dask-jobqueue (see start_host).
    from pclean_provider.compute.slurm import default_job_name

    names = {default_job_name(info.cluster_id)}
    with contextlib.suppress(FileNotFoundError, ValueError):
        if fixed := _read_spec(paths["spec"]).slurm_job_name:
            names.add(fixed)
    return names


def _kill_session(sid: int) -> None:
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                members.append(proc)
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(members, timeout=10)


def _failure_from_log(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith("pclean cluster host failed:"):
            return line.split(":", 1)[1].strip()
    return " | ".join(lines[-3:]) if lines else "empty log"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def serve(address_file: str, cluster_id: str) -> int:
    """The host process itself: start the cluster, publish its address, wait for SIGTERM."""
    # Not at the top: compute.cluster loads `distributed` and dask-jobqueue (see start_host).
    from pclean_provider.compute.cluster import start_cluster

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = _paths(address_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    spec = _read_spec(paths["spec"])
    abandoned = False
    try:
        handle = start_cluster(spec, cluster_id=cluster_id)
    except Exception as exc:  # reported to `up` through the log's last line
        log.exception("cluster start failed")
        print(f"pclean cluster host failed: {exc}", flush=True)
        return 1
    try:
        info = HostInfo(state="running", scheduler_address=handle.address, dashboard_link=handle.dashboard_link,
                        host_pid=os.getpid(), host_started=_process_started(os.getpid()) or 0.0,
                        cluster_type=spec.cluster_type, cluster_id=cluster_id,
                        slurm_job_name=handle.job_name, log_file=str(paths["log"]), started_at=_now(),
                        tls_directory=spec.tls_directory, host_name=socket.gethostname())
        write_text(paths["address"], info.model_dump_json(indent=2), mode=PRIVATE_MODE)
        log.info("cluster host %d serving %s with %d workers (lease: %s)", os.getpid(), handle.address,
                 handle.worker_count, f"{spec.host_idle_timeout:g} s" if spec.host_idle_timeout else "none")
        lease = LeaseWatch(handle.client, spec.host_idle_timeout)
        while not stop.wait(1.0):
            if lease.expired():
                abandoned = True
                log.warning("cluster host %d: nobody renewed its lease for %.0f s (host_idle_timeout=%g s); "
                            "the run that started it is gone: stopping the cluster and its workers",
                            os.getpid(), lease.idle_for(), lease.timeout)
                break
        else:
            log.info("cluster host %d stopping", os.getpid())
    finally:
        handle.close()
        # The spec stays after an expired lease: a retried task may start the cluster again.
        for key in ("address", "host") if abandoned else ("address",):
            current = _read_info(paths[key])
            if current is not None and current.host_pid == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    paths[key].unlink()
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {HOST_MODULE}", description="pclean cluster host (internal)")
    parser.add_argument("--address-file", required=True)
    parser.add_argument("--cluster-id", required=True)
    args = parser.parse_args(argv)
    return serve(args.address_file, args.cluster_id)


if __name__ == "__main__":
    sys.exit(_main())
