"""What every kind of Dask cluster shares: the handle a caller gets, and the backend interface.

A backend (``local``, ``slurm``, ``address``) is a thin subclass of ``ClusterBackend`` that says how
its cluster starts (or is reached), how many workers to wait for, how a start that will never
succeed is recognised early, how to explain a start that timed out, and what closing must clean
up. Waiting for the workers and setting up the CASA runtime on them is the same for all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from distributed import Client

from pclean_provider.compute.errors import WorkerStartTimeout
from pclean_provider.compute.worker_setup import CasaRuntimePlugin
from pclean_provider.config.cluster import ClusterSpec

log = logging.getLogger(__name__)

POLL_S = 0.5


@dataclass
class ClusterHandle:
    """A connected client plus whatever this process started to serve it."""

    spec: ClusterSpec
    client: Client
    cluster: Any = None  # LocalCluster / SLURMCluster when this process owns one; None for 'address'
    cluster_id: str = ""
    job_name: str | None = None  # SLURM job name of the workers (what a clean-up cancels by)
    backend: ClusterBackend | None = field(default=None, repr=False)
    watch: Any = field(default=None, repr=False)  # a backend's background check, stopped on close
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
        (self.backend or ClusterBackend(self.spec)).close(self)


class ClusterBackend:
    """One kind of cluster. Subclasses implement ``start`` and override what differs."""

    cluster_type: ClassVar[str] = ""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec

    # -- starting ------------------------------------------------------------------------------------

    def start(self, cluster_id: str) -> ClusterHandle:
        """Start (or reach) the cluster and return a handle with a connected client."""
        raise NotImplementedError

    def open(self, cluster_id: str) -> ClusterHandle:
        """``start``, then set up every worker's CASA runtime and wait for the workers."""
        handle = self.start(cluster_id)
        try:
            handle.client.register_plugin(CasaRuntimePlugin(log_dir=self.casa_log_dir()))
            self.wait_for_workers(handle)
        except BaseException:
            handle.close()
            raise
        return handle

    def connect(self, cluster: Any) -> Client:
        """A client of a cluster object this process started; the cluster is closed if that fails."""
        try:
            return Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise

    def job_name(self, cluster_id: str) -> str | None:
        """The name the cluster's batch jobs carry (what leftovers are found by); None without jobs."""
        return None

    def scheduler_bind(self, default_host: str | None) -> dict[str, str]:
        """Keyword arguments that make the scheduler listen where the spec says, never everywhere.

        ``scheduler_interface`` is an IP address (or ``localhost``) to bind, or else a network interface
        name; unset, ``default_host`` (None leaves the choice to the cluster class).
        """
        import ipaddress

        wanted = (self.spec.scheduler_interface or "").strip()
        if not wanted:
            return {"host": default_host} if default_host else {}
        try:
            ipaddress.ip_address(wanted)
        except ValueError:
            return {"host": wanted} if wanted == "localhost" else {"interface": wanted}
        return {"host": wanted}

    def casa_log_dir(self) -> str | None:
        """Where the workers' CASA logs go; None: their own worker folder."""
        return None

    # -- waiting for workers -----------------------------------------------------------------------------

    def expected_workers(self) -> int:
        return self.spec.resolved_nworkers()

    def check_start(self, handle: ClusterHandle, workers_seen: int) -> None:
        """While waiting: raise at once when the workers can no longer come (nothing to check here)."""

    def wait_for_workers(self, handle: ClusterHandle) -> None:
        """Wait for all requested workers; settle for fewer at the deadline, fail with none."""
        spec = self.spec
        wanted = self.expected_workers()
        if wanted == 0:  # adaptive from zero: workers come with the first tasks
            return
        deadline = time.monotonic() + spec.worker_start_timeout
        seen = 0
        while True:
            seen = handle.worker_count
            if seen >= wanted:
                return
            self.check_start(handle, seen)
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        if seen:
            log.warning("only %d of %d Dask workers joined within worker_start_timeout=%gs; going on with %d",
                        seen, wanted, spec.worker_start_timeout, seen)
            return
        raise WorkerStartTimeout(self.describe_no_workers(handle))

    def describe_no_workers(self, handle: ClusterHandle) -> str:
        return (f"no Dask worker joined the scheduler at {handle.address} within "
                f"worker_start_timeout={self.spec.worker_start_timeout:g} s; {self.no_workers_hint(handle)}")

    def no_workers_hint(self, handle: ClusterHandle) -> str:
        return "raise worker_start_timeout or lower nworkers"

    # -- closing -----------------------------------------------------------------------------------------

    def close(self, handle: ClusterHandle) -> None:
        """Close the client, then the cluster this process started (if any)."""
        if handle.client is not None:
            with contextlib.suppress(Exception):
                handle.client.close()
        if handle.cluster is not None:
            with contextlib.suppress(Exception):
                handle.cluster.close()
