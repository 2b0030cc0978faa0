"""Errors a user can act on when a Dask cluster cannot be started or reached."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """Base class: the cluster could not be started, reached or stopped."""


class SchedulerUnreachable(ClusterError):
    """A scheduler address did not answer."""

    def __init__(self, address: str, timeout: float, reason: str = "") -> None:
        self.address = address
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"the Dask scheduler at scheduler_address={address!r} did not answer within {timeout:g} s"
            f"{detail}; check that it is running (`pclean cluster status --address-file ...`) and "
            "reachable from this machine, or leave scheduler_address unset to start a local cluster.")


class WorkerStartTimeout(ClusterError):
    """No worker joined the scheduler within ``worker_start_timeout``."""


class SlurmError(ClusterError):
    """A SLURM command failed or SLURM refused the request."""
