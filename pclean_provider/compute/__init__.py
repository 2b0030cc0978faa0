"""Dask clusters for the engine and the Airflow operators: local, SLURM (dask-jobqueue) or by address."""

from pclean_provider.compute.cluster import ClusterHandle, open_cluster, start_cluster
from pclean_provider.compute.errors import (
    ClusterError,
    SchedulerUnreachable,
    SlurmError,
    WorkerStartTimeout,
)

__all__ = [
    "ClusterError",
    "ClusterHandle",
    "SchedulerUnreachable",
    "SlurmError",
    "WorkerStartTimeout",
    "open_cluster",
    "start_cluster",
]
