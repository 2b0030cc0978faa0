"""`pclean()`: tclean's signature and defaults, imaging on Dask when asked.

Cubes (specmode 'cube'/'cubedata') go to the cube engine (channel sub-cubes, concatenated);
continuum (specmode 'mfs') to the continuum engine (row-partitioned major cycles).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from pclean_provider import compute
from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.config import PcleanConfig
from pclean_provider.engine.cube.run import run_cube
from pclean_provider.engine.kept_cluster import kept_client
from pclean_provider.engine.models import PcleanResult

log = logging.getLogger(__name__)


def run(cfg, progress: bool = False, client: Any = None) -> PcleanResult:
    """Run a PcleanConfig (what the `pclean` command line calls)."""
    cfg.require_runnable()
    if cfg.is_cube:
        # The cube engine starts (or reuses) the kept cluster itself, after its checks and plan, and
        # only once it has decided that the cube is worth a cluster at all.
        return run_cube(cfg, client=client, progress=progress)
    if (client is None and cfg.extras.parallel and cfg.extras.keep_cluster and cfg.cluster.cluster_type != "address"
            and not _one_process_continuum(cfg)):
        # Checked first, so that bad input never starts the cluster that is then kept.
        _check_inputs(cfg)
        client = kept_client(cfg.cluster)
    return _run_continuum(cfg, progress=progress, client=client)


def _check_inputs(cfg) -> None:
    from pclean_provider.engine.continuum.preflight import check_continuum_inputs

    ensure_casa_runtime()
    check_continuum_inputs(cfg)


def _one_process_continuum(cfg) -> bool:
    """A continuum run with outlier fields: serial tclean in this process, so no cluster to start."""
    return not cfg.is_cube and bool(cfg.tclean_kwargs().get("outlierfile"))


def _run_continuum(cfg, progress: bool, client: Any) -> PcleanResult:
    # Imported here: a cube's call (often a small one, where every 0.1 s counts against serial
    # tclean) does not load the continuum engine.
    from pclean_provider.engine.continuum.preflight import check_continuum_inputs
    from pclean_provider.engine.continuum.run import run_continuum

    t0 = time.monotonic()
    # Bad input fails in seconds, before a cluster is started for nothing (as the cube does).
    check_continuum_inputs(cfg)
    niter = int(cfg.tclean_kwargs().get("niter", 0))
    # The continuum engine draws its own bar (iterations against niter) and logs each major cycle.
    with contextlib.ExitStack() as stack:
        started = None
        if _one_process_continuum(cfg):
            if cfg.extras.parallel:
                log.info("outlierfile: the run takes the one-process exact path (serial tclean); "
                         "no Dask cluster is started")
            client = None
        elif cfg.extras.parallel and client is None:
            t_cluster = time.monotonic()
            client = stack.enter_context(compute.open_cluster(cfg.cluster)).client
            started = time.monotonic() - t_cluster
        result = run_continuum(cfg, client=client if cfg.extras.parallel else None, progress=progress,
                               cluster_start_s=started, inputs_checked=True)
    log.debug("continuum niter=%d done in %.1f s", niter, time.monotonic() - t0)
    return result.pclean_result(specmode=cfg.tclean_kwargs()["specmode"], niter=niter,
                                parallel=bool(cfg.extras.parallel), seconds=time.monotonic() - t0)


def pclean(**kwargs: Any) -> PcleanResult:
    """tclean-compatible entry point: tclean's keyword arguments plus pclean's extras
    (parallel, nworkers, cube_chunksize, keep_subcubes, concat_mode, scheduler_address, ...).

    Relative `vis`/`imagename` are resolved against the caller's working directory here, before
    anything runs on workers whose working directory differs.
    """
    show_bar = bool(kwargs.pop("progress", False))
    cfg = PcleanConfig.from_flat(kwargs)
    return run(cfg, progress=show_bar)
