"""Connection -> ClusterSpec -> Dask client, and the work on it, for the operators and triggers.

The hook decides *which* cluster a task talks to; starting and connecting is left to
``pclean_provider.compute`` so that the Airflow face and the command line share one way of doing it.
Where the scheduler address comes from, first match wins: an explicit ``scheduler_address`` (for
example the XCom of a cluster-up task), a cluster host's ``address_file``, the connection's host and
port, then the connection's cluster type (a short-lived local or SLURM cluster).

The hook owns every Dask client an operator or a trigger uses: ``open_cluster`` and ``connect``
give a ``DaskConnection`` (a synchronous client, for the operators) and ``async_connect`` an
``AsyncDaskConnection`` (an asynchronous one, for the triggers' event loop), each closed when its
block ends. Through them go the operations on a task's work (find, submit, cancel, release, ask its
state), which follow the one protocol in ``pclean_provider.compute.dask_work``, and the cluster
host's lease; no operator or trigger makes or holds a client of its own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.compute import host as cluster_host
from pclean_provider.compute.dask_work import ProgressTail, PublishedWork, WorkStatus, cluster_resources
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.host import HostStatus, tls_directory_for
from pclean_provider.compute.host import read_address_file as read_host_info
from pclean_provider.compute.lease import async_renew_lease, renew_lease
from pclean_provider.compute.tls import MissingClusterCertificate, PlaintextDaskRefused, client_security
from pclean_provider.config.cluster import DEFAULT_CONNECTION_ID, ClusterSpec
from pclean_provider.engine.progress import format_progress_line

# Extra fields of the connection form that map one-to-one onto ClusterSpec (see get_provider_info).
SPEC_FIELDS = tuple(name for name in ClusterSpec.model_fields if name != "scheduler_address")


class PcleanDaskHook(BaseHook):
    """Connects to the Dask cluster of a ``pclean_dask`` connection (or a cluster host's address).

    :param pclean_conn_id: Airflow connection of type ``pclean_dask``. A missing
        ``pclean_dask_default`` means "a local cluster with defaults"; any other missing id is an error.
    :param scheduler_address: a running scheduler (``tls://host:port``); wins over everything else. A
        ``tcp://`` one is refused unless the administrator allows plaintext Dask
        (``[pclean] allow_plaintext_dask``).
    :param address_file: the file a cluster host (``ClusterUpOperator``, ``pclean cluster up``) wrote.
    :param cluster_overrides: ClusterSpec fields that win over the connection's (e.g. ``nworkers``).
    :param tls_directory: the cluster's certificate folder (a TLS cluster host's); default: the one
        the address file names, else the connection's ``tls_directory``.
    """

    conn_name_attr = "pclean_conn_id"
    default_conn_name = DEFAULT_CONNECTION_ID
    conn_type = "pclean_dask"
    hook_name = "pclean Dask cluster"

    def __init__(
        self,
        pclean_conn_id: str | None = default_conn_name,
        *,
        scheduler_address: str | None = None,
        address_file: str | None = None,
        cluster_overrides: dict[str, Any] | None = None,
        tls_directory: str | None = None,
    ) -> None:
        super().__init__()
        self.tls_directory = tls_directory or None
        self._connection_tls_directory: str | None = None  # the connection's tls_directory field
        self.pclean_conn_id = pclean_conn_id
        self.scheduler_address = scheduler_address or None
        self.address_file = address_file or None
        self.cluster_overrides = dict(cluster_overrides or {})

    # -- where the cluster is -------------------------------------------------------------------

    def connection_fields(self) -> dict[str, Any]:
        """ClusterSpec fields stored on the connection (host/port become the scheduler address)."""
        if not self.pclean_conn_id:
            return {}
        try:
            conn = self.get_connection(self.pclean_conn_id)
        except AirflowNotFoundException as exc:
            if self.pclean_conn_id == self.default_conn_name:
                self.log.info("No connection %r: using a local Dask cluster with defaults.", self.pclean_conn_id)
                return {}
            raise ValueError(
                f"pclean_conn_id={self.pclean_conn_id!r}: no such Airflow connection ({exc}); create a "
                f"connection of type 'pclean_dask' with that id, or pass scheduler_address=...") from exc
        extra = dict(conn.extra_dejson or {})
        address_file = extra.pop("address_file", None) or extra.pop(f"extra__{self.conn_type}__address_file", None)
        fields = connection_to_spec_fields(conn.host, conn.port, extra, conn_id=self.pclean_conn_id)
        self._connection_tls_directory = fields.get("tls_directory") or None
        if address_file and not conn.host and not self.address_file:
            # A connection may point at a long-lived cluster host instead of a fixed address.
            self.address_file = address_file
        return fields

    def resolve_address(self) -> str | None:
        """The scheduler address from the explicit argument or the address file, if any."""
        if self.scheduler_address:
            return self.scheduler_address.strip()
        if self.address_file:
            return read_address_file(self.address_file)
        return None

    def resolve_tls_directory(self) -> str | None:
        """The certificate folder of the cluster this hook talks to, if it uses TLS: the one given, the
        one the cluster host's address file names, else the connection's ``tls_directory``."""
        if self.tls_directory:
            return self.tls_directory
        if self.address_file and os.path.exists(self.address_file):
            self.tls_directory = tls_directory_for(self.address_file)
        return self.tls_directory or self._connection_tls_directory

    def get_cluster_spec(self) -> ClusterSpec:
        _apply_site_config()  # the caller may judge the spec's address against allow_plaintext_dask
        fields = self.connection_fields()
        fields.update(self.cluster_overrides)
        address = self.resolve_address()
        if address:
            # A given address means "use that cluster": the connection's other knobs describe how
            # to start one and would only fail validation (address plus a local type) here.
            fields["scheduler_address"] = address
            fields["cluster_type"] = "address"
            fields["tls_directory"] = self.resolve_tls_directory()
            if fields.get("tls") and not fields["tls_directory"]:
                raise ValueError(f"pclean_conn_id={self.pclean_conn_id!r}: the cluster at {address} uses TLS but "
                                 "no certificate folder is known; pass address_file= (the cluster host's) "
                                 "or tls_directory=")
        try:
            return ClusterSpec.model_validate(fields)
        except Exception as exc:
            raise ValueError(f"pclean_conn_id={self.pclean_conn_id!r}: invalid cluster settings: {exc}") from exc

    # -- clients ----------------------------------------------------------------------------------

    @contextmanager
    def open_cluster(self, spec: ClusterSpec | None = None) -> Iterator[DaskConnection]:
        """A connection to the cluster of ``spec`` (default: this hook's) once its workers are up, with
        its ``address`` and ``dashboard_link``; its client closed, and what was started stopped, on exit.

        For a 'local' or 'slurm' spec this starts a cluster that lives only as long as the block:
        fine for synchronous work, wrong for work that must outlive the task (use a cluster host).
        """
        # Here, not at the top: it loads `distributed`, which a task that only reads work results
        # never needs (compute/__init__ loads the cluster functions on first use for the same reason).
        from pclean_provider.compute import open_cluster

        spec = spec or self.get_cluster_spec()
        _apply_site_config()
        with open_cluster(spec) as handle:
            yield DaskConnection(handle.client, handle.address, handle.dashboard_link)

    @staticmethod
    def check_transport(spec: ClusterSpec) -> None:
        """Raise ``PlaintextDaskRefused`` or ``MissingClusterCertificate`` when ``spec`` names a running
        scheduler that may not be talked to: plaintext without the administrator's leave, or TLS without
        the certificate (``compute.tls.client_security``). Nothing connects."""
        if spec.cluster_type == "address":
            client_security(spec.scheduler_address or "", spec.tls_directory)

    @contextmanager
    def connect(self, address: str, timeout: float = 20.0) -> Iterator[DaskConnection]:
        """A connection to a running scheduler, closed on exit; no waiting for its workers.

        Mutual TLS with the cluster's certificate; a plaintext address only where the administrator
        allows it (``compute.tls.client_security``)."""
        # Here, not at the top: `distributed` stays out of the Airflow processes that never connect.
        from distributed import Client

        _apply_site_config()
        with Client(address, timeout=timeout, set_as_default=False,
                    **client_security(address, self.resolve_tls_directory())) as client:
            yield DaskConnection(client, address)

    @asynccontextmanager
    async def async_connect(self, address: str, timeout: float = 30.0) -> AsyncIterator[AsyncDaskConnection]:
        """``connect`` for a trigger's event loop: an asynchronous client, closed on exit."""
        # Here, not at the top: `distributed` stays out of the Airflow processes that never connect.
        from distributed import Client

        _apply_site_config()
        async with Client(address, asynchronous=True, timeout=timeout, set_as_default=False,
                          **client_security(address, self.resolve_tls_directory())) as client:
            yield AsyncDaskConnection(client)

    def test_connection(self) -> tuple[bool, str]:
        spec = self.get_cluster_spec()
        if spec.cluster_type != "address":
            return True, f"cluster_type={spec.cluster_type!r}: a cluster is started per task; nothing to reach."

        try:
            with self.connect(spec.scheduler_address, timeout=10) as dask:
                nworkers = dask.worker_count()
            return True, f"Dask scheduler {spec.scheduler_address} answers with {nworkers} workers."
        except (PlaintextDaskRefused, MissingClusterCertificate) as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"Dask scheduler {spec.scheduler_address} did not answer: {exc}"

    # -- cluster hosts (compute.host): the operators' only way to one ------------------------------

    @staticmethod
    def start_host(spec: ClusterSpec, address_file: str) -> str:
        """Start a cluster host for ``spec`` (or find the one running for ``address_file``); its address."""
        return cluster_host.start_host(spec, address_file)

    @staticmethod
    def host_status(address_file: str) -> HostStatus:
        return cluster_host.host_status(address_file)

    @staticmethod
    def stop_host(address_file: str) -> HostStatus:
        """Stop the host behind ``address_file``; its status before (``stopped``: there was none)."""
        return cluster_host.stop_host(address_file)

    @staticmethod
    def recover_host(address_file: str) -> str:
        """The address of the host behind ``address_file``, started again if it is gone."""
        return cluster_host.recover_host(address_file)

    @staticmethod
    def host_tls_directory(address_file: str) -> str | None:
        """The certificate folder the host behind ``address_file`` names, if it uses TLS."""
        return tls_directory_for(address_file)

    # -- what a task's work writes on the shared filesystem ---------------------------------------

    @staticmethod
    def progress_tail(path: str | None) -> ProgressTail:
        """Reads the new lines of a work's progress file, formatted for a task log."""
        return ProgressTail(path, format_progress_line)


class DaskConnection:
    """A synchronous client of one Dask scheduler, opened and closed by ``PcleanDaskHook``, and the
    calls an operator makes through it.

    :param address: the scheduler's address (what a deferred trigger reaches again).
    :param dashboard_link: its dashboard, when the cluster was opened with one.
    """

    def __init__(self, client: Any, address: str, dashboard_link: str | None = None) -> None:
        self._client = client
        self._work = PublishedWork(client)
        self.address = address
        self.dashboard_link = dashboard_link

    def find_work(self, key: str) -> Any:
        """The Future of the work already published under ``key`` (to adopt), or None."""
        return self._work.find(key)

    def cancel_older_tries(self, key: str) -> list[str]:
        """Cancel what earlier tries of the same task left running; the keys cancelled."""
        return self._work.cancel_older_tries(key)

    def submit_work(self, key: str, result_file: str, func: Callable[..., dict], args: tuple) -> Any:
        """Submit ``func(*args)`` under ``key``, published, writing its result to ``result_file``."""
        return self._work.submit(key, result_file, func, *args)

    def cancel_work(self, key: str, reason: str) -> bool:
        return self._work.cancel(key, reason)

    def release_work(self, key: str) -> bool:
        return self._work.release(key)

    def work_status(self, key: str) -> WorkStatus:
        return self._work.status(key)

    def renew_lease(self) -> None:
        """Tell a cluster host that its run still needs it (see ``compute.lease``)."""
        renew_lease(self._client)

    def worker_count(self) -> int:
        return len(self._client.scheduler_info().get("workers", {}))

    def cluster_resources(self) -> tuple[int, int | None]:
        """Worker count and smallest per-worker memory limit, for work sized to the cluster."""
        return cluster_resources(self._client)


class AsyncDaskConnection:
    """An asynchronous client of one Dask scheduler, opened and closed by ``PcleanDaskHook``, and the
    calls a trigger makes through it: the ``DaskConnection`` calls of the same names, awaited."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._work = PublishedWork(client)

    async def cancel_work(self, key: str, reason: str) -> bool:
        return await self._work.cancel(key, reason)

    async def work_status(self, key: str) -> WorkStatus:
        return await self._work.status(key)

    async def renew_lease(self) -> None:
        await async_renew_lease(self._client)

    async def worker_count(self) -> int:
        return len(await self._client.nthreads())


@functools.cache
def _apply_site_config() -> None:
    """The ``[pclean]`` options as their variables (``allow_plaintext_dask`` among them), once per
    process: the plugin does it in every Airflow component, this in any process that makes a client."""
    apply_airflow_config()


def connection_to_spec_fields(host: str | None, port: int | None, extra: dict[str, Any],
                              conn_id: str = "") -> dict[str, Any]:
    """Turn a connection's host, port and extra into ClusterSpec keyword arguments.

    The UI stores form fields under their plain name, older Airflow forms under
    ``extra__pclean_dask__`` + the name: both are read, so a connection made either way works.
    """
    fields: dict[str, Any] = {}
    prefix = f"extra__{PcleanDaskHook.conn_type}__"
    for key, value in extra.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if value in (None, ""):
            continue
        if name not in ClusterSpec.model_fields:
            raise ValueError(
                f"connection {conn_id!r}: unknown field {name!r} in extra; allowed: {', '.join(SPEC_FIELDS)}")
        fields[name] = value
    if host and "://" not in host and fields.get("tls_directory"):
        # A connection with the cluster's certificate folder speaks TLS to its host.
        host = f"tls://{host}"
    for list_field in ("slurm_job_extra_directives", "slurm_job_script_prologue"):
        # The form has one text box: one directive or shell line per line.
        if isinstance(fields.get(list_field), str):
            fields[list_field] = [line for line in fields[list_field].splitlines() if line.strip()]
    if host:
        address = host if "://" in host else f"tcp://{host}"
        if port and address.count(":") < 2:
            address = f"{address}:{port}"
        fields["scheduler_address"] = address
        fields["cluster_type"] = "address"
    return fields


def read_address_file(path: str) -> str:
    """The scheduler address of the cluster host that writes ``path`` (a clear error if none runs)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"address_file={path!r} does not exist: the cluster host is not running; run the cluster-up "
            "task (or `pclean cluster up --address-file ...`) first")
    try:
        return str(read_host_info(path).scheduler_address)
    except ClusterError as exc:
        raise ValueError(f"address_file={path!r}: {exc}") from exc
