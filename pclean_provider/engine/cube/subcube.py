"""Image one sub-cube: the function a Dask worker (or this process) runs per SubcubeSpec.

Idempotent: everything is written into a fresh temporary folder next to the sub-cube's folder and
renamed into place only once tclean succeeded and the frequency axis was checked, so a rerun
(Dask retry after a lost worker, an Airflow clear) replaces that sub-cube's products whole and
a failed run leaves the previous ones untouched.

Fenced: each call claims the sub-cube's folder when it starts (atomic_files.DirClaim), and only
the newest claimant swaps its output in. A cleared try still running in CASA that finishes after
the newer try discards its output instead of overwriting the newer products.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import threading
import time

import psutil

from pclean_provider import products
from pclean_provider.atomic_files import (
    DirClaim,
    SupersededWriteError,
    process_owner,
    remove_dead_stagings,
    staging_name,
)
from pclean_provider.casa.cube_grid import CubeGridError, define_cube_grid
from pclean_provider.casa.image_concat import extract_channels, image_frequencies
from pclean_provider.casa.runtime import ensure_casa_runtime, set_casa_log
from pclean_provider.casa.tclean_runner import run_tclean
from pclean_provider.engine.cube.plan import localize_start
from pclean_provider.engine.models import FREQUENCY_RTOL, SubcubeResult, SubcubeSpec

log = logging.getLogger(__name__)

# Frequencies are doubles written as 17-digit strings and read back by CASA; a relative
# difference beyond this means the sub-cube is not on the full cube's grid.


class SubcubeError(RuntimeError):
    """A sub-cube could not be imaged or is not on the planned grid."""


class SubcubeSuperseded(SubcubeError, SupersededWriteError):
    """A newer try of this sub-cube started after this one: its products are kept, this try's dropped."""


# Tests of the fence set this to a FIFO: the call stops just before its swap until the test writes
# a line into it (blocking on the FIFO, so the test decides the order without timing). Unset in use.
PAUSE_BEFORE_SWAP_ENV = "PCLEAN_SUBCUBE_PAUSE_FIFO"


def _pause_before_swap() -> None:
    fifo = os.environ.get(PAUSE_BEFORE_SWAP_ENV)
    if not fifo:
        return
    print(f"pclean-subcube: paused before swap (pid {os.getpid()})", file=sys.stderr, flush=True)
    with open(fifo) as handle:
        handle.readline()


class _PeakRss:
    """Samples this process's resident memory while a sub-cube runs (ru_maxrss would report the
    worker's lifetime peak, not this sub-cube's)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, self._proc.memory_info().rss)
        except psutil.Error:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _local_kwargs(spec: SubcubeSpec) -> dict:
    """The sub-cube's tclean keywords, its start re-read from the cube's grid as CASA defines it in
    this process (plan.localize_start says why)."""
    if not spec.cube_tclean_kwargs or spec.tclean_kwargs.get("start", "") in ("", None):
        return spec.tclean_kwargs
    try:
        grid = define_cube_grid(spec.cube_tclean_kwargs)
    except CubeGridError as err:
        raise SubcubeError(f"sub-cube {spec.index}: CASA cannot define the cube here: {err}") from err
    here = grid.frequencies_hz[spec.chan_start:spec.chan_stop]
    if len(here) != spec.nchan or any(abs(g - e) > FREQUENCY_RTOL * abs(e)
                                      for g, e in zip(here, spec.frequencies_hz, strict=True)):
        raise SubcubeError(f"sub-cube {spec.index}: the cube's grid here differs from the planned one; "
                           "the MS or CASA differs between planner and worker. Re-plan.")
    return localize_start(spec, grid)


# Per product folder: casacore's table files, logs and the like, beyond the pixels.
_PRODUCT_OVERHEAD_BYTES = 256 * 1024
_PRODUCTS_PER_SUBCUBE = 8  # image residual model psf pb mask sumwt weight


def _check_free_space(spec: SubcubeSpec, parent: str) -> None:
    """Refuse before CASA starts when the sub-cube cannot fit: casacore aborts the whole process
    on a full disk (std::terminate, nothing to catch), which would take the worker down with it."""
    imsize = spec.tclean_kwargs.get("imsize") or [0]
    imsize = [imsize] if isinstance(imsize, int) else list(imsize)
    nx, ny = int(imsize[0]), int(imsize[-1])
    nchan = spec.nchan + (2 if spec.padded else 0)
    per_product = _PRODUCT_OVERHEAD_BYTES + 4 * nx * ny * nchan
    need = _PRODUCTS_PER_SUBCUBE * per_product * (2 if spec.padded else 1)  # padded: the copy, then the cut
    free = shutil.disk_usage(parent).free
    if free < need:
        raise SubcubeError(
            f"sub-cube {spec.index}: about {need / 2**20:.1f} MiB are needed under {parent} and only "
            f"{free / 2**20:.1f} MiB are free; free space there (the earlier products of this sub-cube are "
            "untouched) and retry")


def image_subcube(spec: SubcubeSpec | dict | str) -> SubcubeResult:
    """Run tclean for one sub-cube; returns where its products are and what it did."""
    if isinstance(spec, str):
        spec = SubcubeSpec.model_validate_json(spec)
    elif isinstance(spec, dict):
        spec = SubcubeSpec.model_validate(spec)

    t0 = time.monotonic()
    parent = os.path.dirname(spec.subcube_dir)
    os.makedirs(parent, exist_ok=True)
    # Staging folders of earlier tries of this sub-cube whose process died (a killed worker) are garbage.
    remove_dead_stagings(spec.subcube_dir)
    _check_free_space(spec, parent)
    claim = DirClaim(spec.subcube_dir)
    # Not `staged`: this writer is fenced, its staging folder goes in only through its claim (a newer
    # try may have claimed the folder meanwhile), and the owner in the name lets a later run remove
    # the folder if this process dies.
    staging = staging_name(spec.subcube_dir, owner=process_owner())
    scratch = os.path.join(staging, "scratch")
    os.makedirs(scratch)
    info = ensure_casa_runtime(omp_threads=1)
    previous_log = info.log_path
    staged_log = os.path.join(staging, "casa.log")
    set_casa_log(staged_log)
    staged_prefix = os.path.join(staging, spec.product_basename)
    try:
        run_prefix = staged_prefix
        if spec.padded:
            os.makedirs(os.path.join(staging, "padded"))
            run_prefix = os.path.join(staging, "padded", spec.product_basename)
        with _PeakRss() as rss:
            summary = run_tclean(_local_kwargs(spec), run_prefix, cwd=scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        if spec.padded:
            # Keep only the owned channels; the padding channel belongs to a neighbour sub-cube.
            for suffix in products.existing(run_prefix):
                extract_channels(run_prefix + suffix, staged_prefix + suffix,
                                 spec.chan_start - spec.image_chan_start, spec.nchan)
            shutil.rmtree(os.path.join(staging, "padded"), ignore_errors=True)
        got = image_frequencies(staged_prefix + products.IMAGE)
        if len(got) != spec.nchan or any(
                abs(g - e) > FREQUENCY_RTOL * abs(e) for g, e in zip(got, spec.frequencies_hz, strict=True)):
            raise SubcubeError(
                f"sub-cube {spec.index} (channels {spec.chan_start}-{spec.chan_stop - 1}) came out on another "
                f"frequency grid than planned: {got[:3]}... vs {spec.frequencies_hz[:3]}...")
        written = products.existing(staged_prefix)
    except BaseException:
        set_casa_log(previous_log)
        shutil.rmtree(staging, ignore_errors=True)
        claim.release()
        raise
    set_casa_log(previous_log)
    _pause_before_swap()
    try:
        claim.replace(staging)
    except SupersededWriteError as exc:
        raise SubcubeSuperseded(f"sub-cube {spec.index}: {exc}") from None
    seconds = time.monotonic() - t0
    stop_reason = summary.stop_reason
    if spec.niter == 0 and int(spec.cube_tclean_kwargs.get("niter", 0) or 0) > 0:
        stop_reason = "niter share used up (0 of the cube's niter)"
    result = SubcubeResult(
        index=spec.index, chan_start=spec.chan_start, chan_stop=spec.chan_stop, nchan=spec.nchan,
        frequencies_hz=got, product_prefix=spec.product_prefix, products=written, niter=spec.niter,
        iterations=summary.iterations, nmajor_done=summary.nmajor_done, stop_code=summary.stop_code,
        stop_reason=stop_reason, peak_residual=summary.peak_residual, seconds=seconds,
        peak_rss_bytes=int(rss.peak), host=socket.gethostname(), pid=os.getpid(),
        casa_log=os.path.join(spec.subcube_dir, "casa.log"))
    log.info("sub-cube %d/%d channels %d-%d: %d iterations (%s), %.1f s, peak RSS %.0f MiB",
             spec.index + 1, spec.nparts, spec.chan_start, spec.chan_stop - 1, result.iterations,
             result.stop_reason or "-", seconds, result.peak_rss_bytes / 2**20)
    return result
