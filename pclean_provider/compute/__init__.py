"""Dask clusters for the engine and the Airflow operators: local, SLURM (dask-jobqueue) or by address.

The cluster functions are loaded on first use: the Airflow layer imports this package for the
work protocol (``compute.dask_work``) and must not pull ``distributed`` into every task process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pclean_provider.compute.errors import (
    ClusterError,
    SchedulerUnreachable,
    SlurmError,
    WorkerStartTimeout,
)

if TYPE_CHECKING:
    from pclean_provider.compute.cluster import ClusterHandle, open_cluster, start_cluster

__all__ = [
    "ClusterError",
    "ClusterHandle",
    "SchedulerUnreachable",
    "SlurmError",
    "WorkerStartTimeout",
    "open_cluster",
    "start_cluster",
]

_FROM_CLUSTER = ("ClusterHandle", "open_cluster", "start_cluster")


def __getattr__(name: str) -> Any:
    if name in _FROM_CLUSTER:
        from pclean_provider.compute import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
