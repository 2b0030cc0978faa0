"""Open a Dask cluster from a ClusterSpec: a LocalCluster, SLURM worker jobs, or an existing scheduler.

Whatever the backend, the caller gets the same ``ClusterHandle`` and every worker has run the CASA
runtime set-up before its first task. Failures are turned into errors that name the knob to change
(``worker_start_timeout``, ``slurm_queue``, ``scheduler_address``) instead of a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distributed import Client

from pclean_provider.compute.errors import ClusterError, SchedulerUnreachable, WorkerStartTimeout
from pclean_provider.compute.worker_setup import (
    NANNY_ENV_DROPPED,
    CasaRuntimePlugin,
    nanny_config,
    worker_environment,
)
from pclean_provider.config.cluster import ClusterSpec

log = logging.getLogger(__name__)

# Seconds to wait for a scheduler to answer a connection. A scheduler that is up answers in
# milliseconds; waiting the whole worker_start_timeout for a wrong address only delays the error.
CONNECT_TIMEOUT_S = 20.0
POLL_S = 0.5


@dataclass
class ClusterHandle:
    """A connected client plus whatever this process started to serve it."""

    spec: ClusterSpec
    client: Client
    cluster: Any = None  # LocalCluster / SLURMCluster when this process owns one; None for 'address'
    cluster_id: str = ""
    job_name: str | None = None  # SLURM job name of the workers (what a clean-up cancels by)
    _closed: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard (bokeh missing or switched off) is not an error
            return None

    @property
    def worker_count(self) -> int:
        # A direct question to the scheduler: the client's cached scheduler_info lags behind.
        return len(self.client.nthreads())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        if self.job_name:
            # dask-jobqueue cancels the jobs it knows by id; jobs submitted while it was failing
            # (or still queued) are only reachable by name.
            from pclean_provider.compute import slurm

            slurm.cancel_jobs_by_name(self.job_name)


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:8]


def start_cluster(spec: ClusterSpec, *, cluster_id: str | None = None) -> ClusterHandle:
    """Start or connect to the cluster ``spec`` describes and wait for its workers.

    The caller owns the handle and must ``close()`` it; ``open_cluster`` does that for you.
    """
    cluster_id = cluster_id or new_cluster_id()
    if spec.cluster_type == "address":
        handle = _connect(spec)
    elif spec.cluster_type == "local":
        handle = _start_local(spec, cluster_id)
    elif spec.cluster_type == "slurm":
        from pclean_provider.compute import slurm

        handle = slurm.start_slurm(spec, cluster_id)
    else:  # the spec's Literal makes this unreachable unless the model changes
        raise ClusterError(f"cluster_type={spec.cluster_type!r} is not supported; use local, slurm or address")
    try:
        handle.client.register_plugin(CasaRuntimePlugin(log_dir=_casa_log_dir(spec)))
        _wait_for_workers(handle)
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def open_cluster(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """``with open_cluster(spec) as cluster: cluster.client.submit(...)``; stops what it started."""
    handle = start_cluster(spec)
    try:
        yield handle
    finally:
        handle.close()


def _casa_log_dir(spec: ClusterSpec) -> str | None:
    # SLURM workers' own scratch folders vanish with the job; their CASA logs belong next to the
    # job logs. Local workers log into their worker folder (kept under local_directory).
    if spec.cluster_type == "slurm":
        from pclean_provider.compute import slurm

        return str(slurm.log_directory(spec) / "casa")
    return None


def _connect(spec: ClusterSpec) -> ClusterHandle:
    address = spec.scheduler_address
    assert address
    timeout = min(CONNECT_TIMEOUT_S, spec.worker_start_timeout)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(address, timeout, _first_line(exc)) from None
    return ClusterHandle(spec=spec, client=client)


def _start_local(spec: ClusterSpec, cluster_id: str) -> ClusterHandle:
    import dask

    # A plain Dask nanny started earlier in this process (another library, a test) leaves the
    # variables in os.environ, which the new workers would inherit: hide them while they spawn.
    leaked = {name: os.environ.pop(name) for name in NANNY_ENV_DROPPED if name in os.environ}
    try:
        with dask.config.set(nanny_config()):
            cluster = _local_cluster(spec, cluster_id)
    finally:
        os.environ.update(leaked)
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return ClusterHandle(spec=spec, client=client, cluster=cluster, cluster_id=cluster_id)


def _local_cluster(spec: ClusterSpec, cluster_id: str):
    from distributed import LocalCluster

    return LocalCluster(
        name=f"pclean-{cluster_id}",
        n_workers=spec.resolved_nworkers(),
        threads_per_worker=spec.threads_per_worker,
        processes=True,
        memory_limit=spec.memory_limit,
        local_directory=spec.local_directory,
        # A random port: several clusters (tests, DAG runs) share one machine.
        dashboard_address=":0",
        env=worker_environment(),
    )


def _expected_workers(spec: ClusterSpec) -> int:
    if spec.cluster_type == "address":
        return 1
    if spec.cluster_type == "slurm" and spec.adaptive:
        return spec.adaptive_minimum
    return spec.resolved_nworkers()


def _wait_for_workers(handle: ClusterHandle) -> None:
    """Wait for all requested workers; settle for fewer at the deadline, fail with none."""
    spec = handle.spec
    wanted = _expected_workers(spec)
    if wanted == 0:  # adaptive from zero: workers come with the first tasks
        return
    deadline = time.monotonic() + spec.worker_start_timeout
    seen = 0
    while True:
        seen = handle.worker_count
        if seen >= wanted:
            return
        if handle.job_name:
            from pclean_provider.compute import slurm

            slurm.raise_if_jobs_failed(handle.job_name, spec, seen)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    if seen:
        log.warning("only %d of %d Dask workers joined within worker_start_timeout=%gs; going on with %d",
                    seen, wanted, spec.worker_start_timeout, seen)
        return
    raise WorkerStartTimeout(_no_worker_message(handle))


def _no_worker_message(handle: ClusterHandle) -> str:
    spec = handle.spec
    text = (f"no Dask worker joined the scheduler at {handle.address} within "
            f"worker_start_timeout={spec.worker_start_timeout:g} s")
    if spec.cluster_type == "slurm" and handle.job_name:
        from pclean_provider.compute import slurm

        text += "; " + slurm.describe_jobs(handle.job_name, spec)
        text += ("; raise worker_start_timeout if the queue is just busy, or check slurm_queue, "
                 "slurm_job_mem and slurm_cores_per_job against `sinfo`")
    elif spec.cluster_type == "address":
        text += "; start workers with `dask worker " + handle.address + "` or use cluster_type='local'"
    else:
        text += "; raise worker_start_timeout or lower nworkers"
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
