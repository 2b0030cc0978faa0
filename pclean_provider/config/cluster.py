"""Where the Dask workers come from: one spec for local, SLURM and existing-scheduler clusters.

Field names and defaults follow the published pclean's DaskClusterManager so that its users'
keyword arguments keep working. The spec is plain data (no Dask import) so that it can cross
process boundaries (Airflow XCom, trigger kwargs, the cluster host's spec file) as JSON.
"""

from __future__ import annotations

import os
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

ClusterType = Literal["local", "slurm", "address"]
CLUSTER_TYPES: tuple[str, ...] = get_args(ClusterType)

# The ClusterSpec fields a DAG run's conf (the trigger form) may set, each within the pipeline
# template's limits. Everything else (job script prologue, Python on the nodes, extra #SBATCH
# lines, cluster type, scheduler address, directories) is the administrator's, set on the Airflow
# connection or in the template: whoever may trigger a DAG must not choose what runs on the
# compute nodes. A field added to ClusterSpec stays administrator-only until it is listed here.
CONF_SETTABLE_FIELDS: tuple[str, ...] = ("nworkers", "threads_per_worker", "memory_limit", "slurm_job_mem")

#: The Airflow connection (type pclean_dask) the hook, the operators and the pipeline templates use
#: unless told otherwise; when it does not exist, a local cluster with defaults.
DEFAULT_CONNECTION_ID = "pclean_dask_default"

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|[KMGT]|B)?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4,
                 "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
                 "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def memory_bytes(value: str | int) -> int:
    """'20GB', '512MiB', '4G' or a whole number of bytes -> bytes; ValueError for anything else.

    Strict on purpose (no 'auto', no exponents, no 'inf'): it judges sizes typed into the trigger
    form against the template's limits, where a lenient reading would be a way around them.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a memory size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a memory size cannot be negative: {value}")
        return value
    match = _MEMORY.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError("not a memory size; write a number with a unit, e.g. '8GB' or '512MiB'")
    number, unit = match.groups()
    return int(float(number) * _MEMORY_UNITS[(unit or "").upper()])


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cluster_type: ClusterType = Field(
        "local", description="'local' (a LocalCluster on this machine), 'slurm' (workers as SLURM jobs "
        "through dask-jobqueue) or 'address' (an existing Dask scheduler).")
    nworkers: int | None = Field(
        None, ge=1, description="Number of Dask workers; None means the number of CPUs of this machine.")
    scheduler_address: str | None = Field(
        None, description="Address of a running Dask scheduler (tls://host:port, with its certificate in "
        "tls_directory; a tcp:// one is refused unless the administrator sets [pclean] allow_plaintext_dask). "
        "Setting it while cluster_type is 'local' switches to 'address'.")
    threads_per_worker: int = Field(
        1, ge=1, description="Threads per worker. Keep 1: CASA tools are not thread-safe.")
    memory_limit: str = Field(
        "0", description="Per-worker Dask memory limit; '0' switches Dask's memory manager off, which "
        "cannot see casatools' C++ allocations and would only stall workers.")
    local_directory: str | None = Field(None, description="Scratch directory for Dask workers.")
    worker_start_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for the first worker before giving up with an error "
        "(a SLURM job that stays pending, a bad partition).")
    adaptive: bool = Field(False, description="Scale SLURM jobs between adaptive_minimum and "
                           "adaptive_maximum with the load instead of a fixed nworkers.")
    adaptive_minimum: int = Field(0, ge=0, description="Fewest SLURM worker jobs when adaptive.")
    adaptive_maximum: int | None = Field(None, ge=1, description="Most SLURM worker jobs when adaptive "
                                         "(default: nworkers).")
    slurm_queue: str | None = Field(None, description="SLURM partition (--partition).")
    slurm_account: str | None = Field(None, description="SLURM account (--account).")
    slurm_walltime: str = Field("24:00:00", description="Wall time of each worker job (--time).")
    slurm_job_mem: str = Field("20GB", description="Memory of each worker job (--mem).")
    slurm_cores_per_job: int = Field(1, ge=1, description="CPUs of each worker job (--cpus-per-task).")
    slurm_job_name: str | None = Field(
        None, description="SLURM job name of the workers; also what `pclean cluster down` cancels by. "
        "Default: pclean-worker-<cluster id>.")
    slurm_job_extra_directives: list[str] | None = Field(None, description="Extra #SBATCH lines.")
    slurm_python: str | None = Field(None, description="Python executable on the compute nodes "
                                     "(default: this interpreter).")
    slurm_local_directory: str | None = Field(None, description="Worker scratch directory on compute nodes.")
    slurm_log_directory: str = Field("logs", description="Directory for the worker jobs' stdout/stderr.")
    slurm_job_script_prologue: list[str] | None = Field(
        None, description="Shell lines run before each worker starts (module load, conda activate). The "
        "CASA runtime set-up is added by pclean itself.")
    scheduler_interface: str | None = Field(
        None, description="Where the Dask scheduler listens: an IP address (e.g. '10.1.2.3') or a network "
        "interface name (e.g. 'ib0'). Default: loopback (127.0.0.1) for a local cluster, this machine's "
        "outward address for SLURM; never every interface.")
    tls: bool | None = Field(
        None, description="Encrypt and authenticate all Dask traffic with a certificate made for that cluster "
        "(or the site's, in tls_directory); a client without it is refused. None: on for a local cluster "
        "host and for every SLURM cluster (the worker jobs read the certificate from the shared "
        "filesystem), off for a LocalCluster of one run.")
    tls_directory: str | None = Field(
        None, description="Folder with the cluster's certificate (cluster.pem, cluster.key); set by the "
        "cluster host, or by the site to supply its own.")
    slurm_lifetime_margin: float | None = Field(
        None, ge=0, description="Seconds before its walltime at which a SLURM worker retires (its work moves "
        "to other workers) and a new job replaces it, so a run longer than slurm_walltime goes on. None: a "
        "quarter of the walltime, at most 10 minutes.")
    slurm_no_workers_timeout: float | None = Field(
        900.0, ge=0, description="Seconds a SLURM cluster may have work waiting and not a single worker "
        "(jobs pending, or ended) before that work fails with the jobs' states and SLURM's reasons; 0 or "
        "None: wait for ever.")
    host_idle_timeout: float | None = Field(
        1800.0, ge=0, description="Seconds a cluster host lives without its lease being renewed (by a task "
        "of its run talking to the scheduler) before it stops itself and its workers; 0 or None: never.")

    @model_validator(mode="after")
    def _address_switch(self) -> ClusterSpec:
        # Backward compatibility with the published pclean: an address alone means "connect to it".
        if self.scheduler_address and self.cluster_type == "local":
            object.__setattr__(self, "cluster_type", "address")
        if self.cluster_type == "address" and not self.scheduler_address:
            raise ValueError("cluster_type='address' needs scheduler_address (e.g. 'tls://host:8786'); "
                             "set it, or use cluster_type='local'.")
        return self

    def resolved_nworkers(self) -> int:
        return self.nworkers or os.cpu_count() or 1
