"""The cube pipeline: preflight -> plan -> sessions or sub-cubes (Dask or in-process) -> concat
(-> common beam).

Preflight and planning happen before a local or SLURM cluster starts, so bad input fails in
seconds. A parallel cube too small to win back the start of a cluster it would start itself is
imaged in this process instead (`small_cube`; `in_process_below_s=0` keeps the cluster). The exact
loop (`cube_engine='sessions'`) runs in `engine.cube.loop`, which rebuilds a session whose worker
is lost. The independent engine's sub-cubes go to Dask with retries: a worker that dies takes its
sub-cube with it, the scheduler reruns it elsewhere, and the sub-cube's idempotent writer replaces
whatever half-run it left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from typing import Any

import psutil

from pclean_provider import compute
from pclean_provider.atomic_files import DirClaim
from pclean_provider.casa.cube_session import save_cube_model, saves_model_after_loop
from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.compute.dask_keys import engine_key
from pclean_provider.compute.futures import wait_done
from pclean_provider.engine.cube.concat import concat_products
from pclean_provider.engine.cube.loop import run_cube_loop
from pclean_provider.engine.cube.memory import parse_memory
from pclean_provider.engine.cube.ms_copies import sessions_read_copies, wants_copies
from pclean_provider.engine.cube.plan import cube_grid, plan_sessions, plan_subcubes
from pclean_provider.engine.cube.preflight import check_cube_inputs, continues_earlier_run
from pclean_provider.engine.cube.small_cube import CubeWork, choose, estimate_serial_seconds, explain
from pclean_provider.engine.cube.subcube import image_subcube
from pclean_provider.engine.imaging_errors import PreflightError
from pclean_provider.engine.kept_cluster import kept_client, live_kept_client
from pclean_provider.engine.models import CubePlan, PcleanResult, SubcubeResult, tclean_summary
from pclean_provider.engine.progress import Progress, progress_file_for

log = logging.getLogger(__name__)

# A lost worker's sub-cube is rerun this many times before the run fails.
SUBCUBE_RETRIES = 2


class SubcubeFailed(RuntimeError):
    """A sub-cube failed on every try; the message names it and its CASA log."""


def _worker_memory(cfg, nworkers: int, parallel: bool) -> int | None:
    explicit = parse_memory(cfg.cluster.memory_limit)
    if explicit:
        return explicit
    if cfg.cluster.cluster_type == "slurm":
        return parse_memory(cfg.cluster.slurm_job_mem)
    if cfg.cluster.cluster_type == "local" or not parallel:
        return int(psutil.virtual_memory().total / max(nworkers, 1))
    return None


def _run_in_process(plan: CubePlan, progress: Progress) -> list[SubcubeResult]:
    results = []
    for spec in plan.specs:
        res = image_subcube(spec)
        results.append(res)
        progress.advance(_describe(res))
    return results


def _describe(res: SubcubeResult) -> str:
    return (f"channels {res.chan_start}-{res.chan_stop - 1}: {res.iterations} iterations, "
            f"{res.stop_reason or '-'}, {res.seconds:.1f} s, {res.peak_rss_bytes / 2**20:.0f} MiB")


def _run_on_dask(client, plan: CubePlan, progress: Progress) -> list[SubcubeResult]:
    token = uuid.uuid4().hex[:8]
    futures = {}
    for spec in plan.specs:
        # Keys name the sub-cube in the dashboard; the token keeps two runs' keys apart.
        fut = client.submit(image_subcube, spec, pure=False, retries=SUBCUBE_RETRIES,
                            key=engine_key(spec.key, token))
        futures[fut] = spec
    results = []
    pending = set(futures)
    try:
        while pending:
            # One short wait at a time, on the lowest pending sub-cube: the others that ended
            # meanwhile are collected too.
            wait_done([min(pending, key=lambda f: futures[f].index)], timeout=0.2)
            done = {f for f in pending if f.done()}
            if not done:
                continue
            pending -= done
            for fut in sorted(done, key=lambda f: futures[f].index):
                spec = futures[fut]
                try:
                    res = fut.result()
                except Exception as err:
                    raise SubcubeFailed(
                        f"sub-cube {spec.index} (channels {spec.chan_start}-{spec.chan_stop - 1}) failed after "
                        f"{SUBCUBE_RETRIES + 1} tries: {err}; CASA log under {spec.subcube_dir}*") from err
                results.append(res)
                progress.advance(_describe(res))
    except BaseException:
        client.cancel(list(futures))
        raise
    return sorted(results, key=lambda r: r.index)


def _open(stack: contextlib.ExitStack, cfg):
    return stack.enter_context(compute.open_cluster(cfg.cluster)).client


def _small_cube_choice(cfg, plan: CubePlan, selections, nworkers: int, warm: bool):
    """The estimate and the choice for a parallel exact cube on a cluster of its own (see small_cube)."""
    nx, ny = cfg.image.shape()
    work = CubeWork(nchan=plan.nchan, nx=nx, ny=ny, visibilities=sum(s.visibilities() for s in selections),
                    cleaned=int(plan.niter or 0) > 0, gridder=str(plan.tclean_kwargs.get("gridder", "standard")),
                    niter=int(plan.niter or 0))
    choice = choose(estimate_serial_seconds(work), min(nworkers, len(plan.specs)), cfg.extras.in_process_below_s,
                    warm=warm)
    return choice, work


def run_cube(cfg, client: Any = None, progress: bool = False) -> PcleanResult:
    """Image a cube config. With `cfg.extras.parallel` the work runs on `client` (or on a cluster
    opened from `cfg.cluster`, kept for later calls with `keep_cluster`); otherwise in this process.

    `cfg.extras.cube_engine` 'sessions' (default): sub-cube sessions and one iteration controller
    (`engine.cube.loop`), equal to serial tclean. 'independent': every sub-cube a whole tclean run
    (this module's `_run_on_dask`), exact for niter=0 only.

    A parallel exact cube on a local or SLURM cluster this call would start (or a kept one) is imaged
    in this process, as parallel=False does, when the cluster cannot win back its start-up
    (`small_cube.choose`, `cfg.extras.in_process_below_s`); the result's `in_process_reason` says so.
    A caller's `client`, cluster_type 'address' and the independent engine are never changed.
    """
    t0 = time.monotonic()
    ensure_casa_runtime()
    selections = check_cube_inputs(cfg, allow_restart=True)
    # tclean's restart: the earlier run's images are where this one starts. One session holds the
    # whole cube's model, mask, PSF and residual, as serial tclean's imager does.
    restart = continues_earlier_run(cfg)
    parallel = bool(cfg.extras.parallel) and not restart
    sessions = cfg.extras.cube_engine == "sessions"
    # A cluster of this call's own (or the kept one): the case where a small cube may stay here.
    own_cluster = parallel and client is None and cfg.cluster.cluster_type != "address"
    keep = own_cluster and cfg.extras.keep_cluster
    in_process_reason = None
    if restart and cfg.extras.parallel:
        in_process_reason = ("continued from the earlier run's images under this imagename (restart=True): one "
                             "session in this process, as serial tclean continues; a new imagename images on the "
                             "cluster")
    with contextlib.ExitStack() as stack:
        if parallel and client is None and cfg.cluster.cluster_type == "address":
            # Connecting starts nothing, and the running cluster's real size is what the plan needs.
            client = _open(stack, cfg)
        warm = False
        if keep:
            # A kept cluster still running costs no start-up, and its size is what the plan needs.
            client = live_kept_client(cfg.cluster)
            warm = client is not None
        if parallel:
            nworkers = len(client.nthreads()) if client is not None else cfg.cluster.resolved_nworkers()
        else:
            # In-process, sub-cubes would only take turns: split only when asked (cube_chunksize) or to
            # fit memory.
            nworkers = 1
        # Planned before a local or SLURM cluster starts: a bad grid fails in seconds, not after start-up.
        if sessions:
            grid = cube_grid(cfg)
            plan = plan_sessions(cfg, nworkers, _worker_memory(cfg, nworkers, parallel), grid=grid)
        else:
            plan = plan_subcubes(cfg, nworkers, _worker_memory(cfg, nworkers, parallel))
        if own_cluster and sessions:
            choice, work = _small_cube_choice(cfg, plan, selections, nworkers, warm)
            if choice.in_process:
                # Decided before any cluster starts: the exact in-process path of parallel=False.
                in_process_reason = explain(choice, work)
                log.info("cube %s: %s", plan.imagename, in_process_reason)
                parallel, client, nworkers = False, None, 1
                plan = plan_sessions(cfg, nworkers, _worker_memory(cfg, nworkers, parallel), grid=grid)
            else:
                log.debug("cube %s: on the cluster: serial tclean estimated at %.1f s (%s), %d workers save up to "
                          "%.1f s against a start-up of %.1f s", plan.imagename, choice.estimated_serial_s,
                          work.describe(), choice.nworkers, choice.saved_s, choice.start_up_s)
        if restart and len(plan.specs) > 1:
            raise PreflightError(f"imagename={plan.imagename!r}: continuing from the earlier run's images needs the "
                                 f"cube in one session, but it is planned in {len(plan.specs)} (cube_chunksize or "
                                 "the memory estimate); choose a new imagename, or remove the old products.")
        if restart:
            log.info("cube %s: %s", plan.imagename, in_process_reason or "continued from the earlier run's images")
        log.info("cube %s: %d channels in %d %s (%s), %s", plan.imagename, plan.nchan, len(plan.specs),
                 "session(s)" if sessions else "sub-cube(s)", ", ".join(str(s.nchan) for s in plan.specs),
                 "on Dask" if parallel else "in-process")
        if parallel and keep:
            client = kept_client(cfg.cluster)  # the live one planned for, or started now
        elif parallel and client is None:
            client = _open(stack, cfg)
        # One writer per cube name: a newer run of the same name (a cleared or retried task whose older
        # try still runs somewhere) claims it, and this run then publishes nothing.
        claim = DirClaim(plan.imagename)
        loop = None
        try:
            if sessions:
                try:
                    imaged = plan
                    if parallel and wants_copies(cfg.extras.relayout_ms, len(plan.specs), int(plan.niter or 0)):
                        imaged = stack.enter_context(sessions_read_copies(plan))
                    results, loop = _run_sessions(imaged, client if parallel else None, progress,
                                                  start_from=plan.imagename if restart else None)
                except BaseException:
                    # Nothing reuses a failed exact loop's session images (a new run starts the loop
                    # again), so a failure leaves no folder of them behind: this run's only.
                    shutil.rmtree(os.path.dirname(plan.specs[0].subcube_dir), ignore_errors=True)
                    raise
            else:
                bar = stack.enter_context(Progress(len(plan.specs), desc=f"pclean {os.path.basename(plan.imagename)}",
                                                   unit="sub-cube", bar=progress))
                results = _run_on_dask(client, plan, bar) if parallel else _run_in_process(plan, bar)
            with claim.publishing():
                concat = concat_products(plan, results, mode=cfg.extras.concat_mode,
                                         keep_subcubes=cfg.extras.keep_subcubes, restoringbeam=plan.restoringbeam)
                if sessions and saves_model_after_loop(plan.tclean_kwargs, len(plan.specs)):
                    _save_model(plan)
        except BaseException:
            claim.release()
            raise
    if loop is not None:
        iterations, stop_reason = loop.iterations, loop.stop_reason
    else:
        iterations = sum(r.iterations for r in results)
        stop_reason = "; ".join(sorted({r.stop_reason for r in results if r.stop_reason}))
    return PcleanResult(
        imagename=plan.imagename, specmode=cfg.tclean_kwargs()["specmode"], parallel=parallel,
        products=concat.products, iterations=iterations, stop_reason=stop_reason,
        seconds=time.monotonic() - t0, nworkers=nworkers, nsubcubes=len(plan.specs), subcubes=results,
        concat=concat, cube_loop=loop.model_dump(mode="json") if loop is not None else None,
        in_process_reason=in_process_reason,
        summary=tclean_summary(int(plan.tclean_kwargs.get("niter", 0) or 0),
                               loop.summary if loop is not None else {"iterdone": iterations}))


def _save_model(plan: CubePlan) -> None:
    """savemodel of a cube imaged in split sessions: from this process, the only writer of the MS
    (the user's MS, not a relayout copy), once the whole cube's model is published."""
    t = time.perf_counter()
    workdir = os.path.join(plan.workdir, f"savemodel-{uuid.uuid4().hex[:8]}")
    try:
        save_cube_model(plan.tclean_kwargs, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("cube %s: model saved (savemodel=%r) in %.1f s", os.path.basename(plan.imagename),
             plan.tclean_kwargs.get("savemodel"), time.perf_counter() - t)


def _run_sessions(plan: CubePlan, client: Any, progress: bool, start_from: str | None = None):
    """The exact loop; its progress in iterations against niter (the one total known upfront)."""
    niter = int(plan.tclean_kwargs.get("niter", 0) or 0)
    with Progress(max(niter, 0), desc=f"pclean {os.path.basename(plan.imagename)}", unit="iteration",
                  bar=progress, logger=log) as bar:
        seen = [0]

        def on_cycle(info: dict) -> None:
            bar.advance(f"major cycle {info['cycle']}, {info['elapsed_s']:.1f} s", n=max(0, info["iterations"] - seen[0]))
            seen[0] = info["iterations"]

        return run_cube_loop(plan, client, on_cycle=on_cycle, progress_file=progress_file_for(plan.imagename),
                             start_from=start_from)
