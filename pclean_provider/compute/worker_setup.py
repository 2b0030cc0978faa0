"""What every Dask worker needs before its first task: CASA set up offline, one thread, a sane log.

Two halves, because they act at different moments: the environment (``worker_environment``) must
be in place before the worker process starts (OpenMP reads OMP_NUM_THREADS when it loads), and the
plugin (``CasaRuntimePlugin``) runs inside the worker before it accepts tasks, also on workers this
project did not start (an existing scheduler reached by address).
"""

from __future__ import annotations

import os
import shlex

from distributed.diagnostics.plugin import WorkerPlugin

from pclean_provider.casa.runtime import casa_env, ensure_casa_runtime
from pclean_provider.child_env import is_secret

PLUGIN_NAME = "pclean-casa-runtime"


# Dask's housekeeping, set for every scheduler, nanny and worker this project starts. Dask checks the
# health of each server's event loop every 20 ms and samples each worker's threads every 10 ms for the
# dashboard's profile page; pclean's workers spend their time inside casatools' C++, where that sampler
# sees only the one call into it. Measured on this project's 2-worker local cluster with CASA loaded,
# doing nothing: 11 % of a core with Dask's defaults, 2.1 % with the check at 500 ms and no sampling,
# 1.6 % with the monitors below as well. A 30-minute night keeps its cluster up throughout.
QUIET_DASK_CONFIG: dict[str, object] = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def _config_variable(key: str) -> str:
    return "DASK_" + "__".join(part.replace("-", "_").upper() for part in key.split("."))


def quiet_dask_environment() -> dict[str, str]:
    """QUIET_DASK_CONFIG as the environment variables Dask reads at import, for processes started
    elsewhere (SLURM jobs). A value the caller's environment already sets wins: a site's choice."""
    env = {}
    for key, value in QUIET_DASK_CONFIG.items():
        name = _config_variable(key)
        env[name] = os.environ.get(name, str(value))
    return env


def worker_environment() -> dict[str, str]:
    """Environment variables a worker process needs, without importing casatools here."""
    env = dict(casa_env())
    # CASA tools are not thread-safe and Dask runs one task per thread: keep native code serial.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(quiet_dask_environment())
    return env


# Dask's nannies give their workers MALLOC_TRIM_THRESHOLD_=65536 so that Python workloads hand
# memory back to the OS. Any explicit threshold also switches off glibc's adaptive mmap threshold,
# and CASA's C++ imaging then maps and unmaps its large buffers over and over: measured here, a
# 32-channel 256-pixel tclean cube took 20.4 s with the variable against 14.5 s without (1.4x).
# pclean's workers keep glibc's defaults; Dask's memory manager is off for them anyway.
NANNY_ENV_DROPPED = ("MALLOC_TRIM_THRESHOLD_",)


def nanny_config() -> dict[str, object]:
    """Dask config for a process that creates a scheduler and nannies (LocalCluster): drop the
    variables above, and Dask's housekeeping as QUIET_DASK_CONFIG says (a nanny hands its config to
    the worker it spawns). A SLURMCluster's scheduler takes quiet_dask_config() alone."""
    config: dict[str, object] = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in NANNY_ENV_DROPPED}
    config.update(quiet_dask_config())
    return config


def quiet_dask_config() -> dict[str, object]:
    """QUIET_DASK_CONFIG, except where this process's environment sets a value (a site's choice)."""
    import dask

    return {key: dask.config.get(key) if _config_variable(key) in os.environ else value
            for key, value in QUIET_DASK_CONFIG.items()}


def dask_setup(nanny) -> None:
    """`--preload-nanny pclean_provider.compute.worker_setup` for SLURM jobs, whose nannies start
    from the compute node's own Dask config: runs before the nanny spawns its worker."""
    for name in NANNY_ENV_DROPPED:
        nanny.pre_spawn_env.pop(name, None)
        nanny.env.pop(name, None)


def export_lines(env: dict[str, str]) -> list[str]:
    """The same environment as shell lines for a batch script."""
    return [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]


class CasaRuntimePlugin(WorkerPlugin):
    """Runs ``ensure_casa_runtime`` in each worker, pointing CASA's log into the worker's own folder."""

    # Re-registration by a second client (a DAG task reusing a cluster host) must not re-run it.
    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir

    def setup(self, worker) -> None:
        # A worker a nanny respawned later, or one of a cluster this project did not start, may still
        # hold secrets of the process that started it: none of them is for code reading untrusted data.
        for name in [name for name in os.environ if is_secret(name)]:
            os.environ.pop(name, None)

        log_dir = self.log_dir or worker.local_directory
        if self.log_dir:
            # One log per worker: several workers writing one file would interleave lines.
            log_dir = os.path.join(self.log_dir, _safe(str(worker.name)))
        os.makedirs(log_dir, exist_ok=True)
        ensure_casa_runtime(log_dir=log_dir)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "worker"
