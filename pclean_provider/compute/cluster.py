"""Open a Dask cluster from a ClusterSpec: a LocalCluster, SLURM worker jobs, or an existing scheduler.

Whatever the backend, the caller gets the same ``ClusterHandle`` and every worker has run the CASA
runtime set-up before its first task. Failures are turned into errors that name the knob to change
(``worker_start_timeout``, ``slurm_queue``, ``scheduler_address``) instead of a hang. One backend
class per ``cluster_type``, chosen here and nowhere else.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from pclean_provider.compute.address import AddressBackend
from pclean_provider.compute.backend import ClusterBackend, ClusterHandle
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.local import LocalBackend
from pclean_provider.compute.slurm import SlurmBackend
from pclean_provider.config.cluster import ClusterSpec

__all__ = ["BACKENDS", "ClusterBackend", "ClusterHandle", "backend_for", "new_cluster_id", "open_cluster",
           "start_cluster"]

BACKENDS: dict[str, type[ClusterBackend]] = {
    backend.cluster_type: backend for backend in (LocalBackend, SlurmBackend, AddressBackend)
}


def backend_for(spec: ClusterSpec) -> ClusterBackend:
    """The backend that runs ``spec``'s kind of cluster."""
    try:
        backend = BACKENDS[spec.cluster_type]
    except KeyError:  # the spec's Literal makes this unreachable unless the model changes
        raise ClusterError(f"cluster_type={spec.cluster_type!r} is not supported; use "
                           f"{', '.join(BACKENDS)}") from None
    return backend(spec)


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:8]


def start_cluster(spec: ClusterSpec, *, cluster_id: str | None = None) -> ClusterHandle:
    """Start or connect to the cluster ``spec`` describes and wait for its workers.

    The caller owns the handle and must ``close()`` it; ``open_cluster`` does that for you.
    """
    return backend_for(spec).open(cluster_id or new_cluster_id())


@contextlib.contextmanager
def open_cluster(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """``with open_cluster(spec) as cluster: cluster.client.submit(...)``; stops what it started."""
    handle = start_cluster(spec)
    try:
        yield handle
    finally:
        handle.close()
