"""An existing Dask scheduler, reached by its address: nothing to start, nothing to stop.

Only over mutual TLS with the cluster's certificate, unless the administrator allows plaintext
(``compute.tls.client_security``): the address is someone's setting, and whoever answers there is
trusted with this process's work.
"""

from __future__ import annotations

from typing import ClassVar

from distributed import Client

from pclean_provider.compute.backend import ClusterBackend, ClusterHandle
from pclean_provider.compute.errors import SchedulerUnreachable
from pclean_provider.compute.tls import client_security

# Seconds to wait for a scheduler to answer a connection. A scheduler that is up answers in
# milliseconds; waiting the whole worker_start_timeout for a wrong address only delays the error.
CONNECT_TIMEOUT_S = 20.0


class AddressBackend(ClusterBackend):
    cluster_type: ClassVar[str] = "address"

    def start(self, cluster_id: str) -> ClusterHandle:
        address = self.spec.scheduler_address
        assert address  # ClusterSpec refuses cluster_type='address' without one
        timeout = min(CONNECT_TIMEOUT_S, self.spec.worker_start_timeout)

        security = client_security(address, self.spec.tls_directory)  # refuses before connecting
        try:
            client = Client(address, timeout=timeout, set_as_default=False, **security)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachable(address, timeout, _first_line(exc)) from None
        return ClusterHandle(spec=self.spec, client=client, backend=self)

    def expected_workers(self) -> int:
        # Someone else sizes this cluster: one worker is enough to start working.
        return 1

    def no_workers_hint(self, handle: ClusterHandle) -> str:
        return "start workers with `dask worker " + handle.address + "` or use cluster_type='local'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
