"""Split a tclean cube into sub-cubes that together give exactly tclean's cube.

The frequency grid comes from CASA (`casa.cube_grid.define_cube_grid`: the same
`synthesisimager.defineimage` call tclean makes), so `nchan=-1`, channel/frequency/velocity
`start` and `width`, `outframe`, `veltype` and `restfreq` resolve exactly as in tclean. Each
sub-cube is then a tclean run over a contiguous channel range of that grid, given its first
channel's frequency and the grid's increment as exact frequencies (17 significant digits, so the
double round-trips bit for bit), in the grid's frame (velocity cubes: the first channel's velocity
from CASA's own conversion); the first sub-cube of a default-start cube keeps start='' (see
`subcube_tclean_kwargs` for the edge-channel reason). Every sub-cube's grid is checked with CASA at
planning time; where CASA would move it (a sub-cube wholly beyond the data: tclean shifts such a
start onto the data) the sub-cube is widened with padding channels, imaged, and the padding
dropped. One-channel sub-cubes are always imaged with one neighbour (see `padded_range`). The
frequency axis of every finished sub-cube is checked again against the plan.

Every sub-cube keeps the full data selection (spw, field, ...), as CASA's own parallel cube imager
does: tclean then picks, channel by channel, the same visibilities as the serial run, and weight
densities over the same data (perchanweightdensity=False included).

Iteration parameters mean what they mean for tclean's whole cube:
- niter: tclean counts it over the whole cube, so a sub-cube must not get `niter` again (the
  published pclean does, and cleans up to N times more). Each sub-cube gets a share proportional
  to its channels (largest remainder: the shares sum to exactly `niter`). When the run stops on
  threshold/nsigma/nmajor (niter does not bind, the normal production case) the share changes
  nothing. When niter binds, the total stays at tclean's scale (tclean too checks niter only
  between minor cycles and may overshoot within one), but which channels get the iterations
  follows the shares rather than tclean's channel order.
- threshold, nsigma (per-plane noise), cycleniter (per plane): per channel already; unchanged.
- nmajor: each channel gets at most nmajor major cycles, as in the serial cube; unchanged.
- cyclefactor: tclean derives the cycle threshold from the peak residual and PSF sidelobe of the
  cube being cleaned; a sub-cube derives it over its own channels, so major cycles fall at other
  points. Both stop at the same threshold; the images agree to within a few 1e-3 of the peak
  (tests hold 2 %).
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any

from pclean_provider.casa.cube_grid import CubeGridError, define_cube_grid
from pclean_provider.engine.cube.memory import estimate_subcube_bytes, max_channels_that_fit
from pclean_provider.engine.models import FREQUENCY_RTOL, CubePlan, SubcubeSpec
from pclean_provider.errors import PcleanInputError
from pclean_provider.products import SUBCUBES


class PlanError(PcleanInputError):
    """The cube cannot be split as asked (names the parameter and the fix)."""


def split_channels(nchan: int, nworkers: int, cube_chunksize: int = -1,
                   max_chunk: int | None = None) -> list[tuple[int, int]]:
    """Contiguous [start, stop) channel ranges covering 0..nchan.

    cube_chunksize -1: one range per worker (as even as possible, the first ranges one channel
    longer when it does not divide); C > 0: C channels each, the last range shorter. `max_chunk`
    (from the memory estimate) caps every range. Never more ranges than channels, never an empty one.
    """
    if nchan < 1:
        raise PlanError(f"nchan={nchan}: a cube needs at least one channel.")
    if nworkers < 1:
        raise PlanError(f"nworkers={nworkers}: need at least one worker.")
    if cube_chunksize == 0 or cube_chunksize < -1:
        raise PlanError(f"cube_chunksize={cube_chunksize}: use -1 (one sub-cube per worker) or a positive "
                        "number of channels per sub-cube.")
    cap = max(1, max_chunk) if max_chunk else nchan
    if cube_chunksize == -1:
        nparts = min(nworkers, nchan)
        nparts = max(nparts, math.ceil(nchan / cap))
        nparts = min(nparts, nchan)
        base, extra = divmod(nchan, nparts)
        sizes = [base + (1 if i < extra else 0) for i in range(nparts)]
    else:
        size = min(cube_chunksize, cap, nchan)
        sizes = [size] * (nchan // size)
        if nchan % size:
            sizes.append(nchan % size)
    ranges = []
    start = 0
    for size in sizes:
        ranges.append((start, start + size))
        start += size
    return ranges


def share_niter(niter: int, sizes: list[int]) -> list[int]:
    """Shares of a cube-wide niter, proportional to channels, summing to exactly niter."""
    total = sum(sizes)
    if niter <= 0 or total <= 0:
        return [0] * len(sizes)
    exact = [niter * s / total for s in sizes]
    shares = [math.floor(x) for x in exact]
    left = niter - sum(shares)
    # Largest remainder first; ties go to the earlier sub-cube (deterministic plans).
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


NITER_SHARING = ("niter is counted over the whole cube (as tclean does); each sub-cube gets a share "
                 "proportional to its channels (largest remainder, shares sum to niter). Exact when niter "
                 "does not bind; otherwise the total matches tclean, the split among channels may not.")


def padded_range(a: int, b: int, nchan: int) -> tuple[int, int]:
    """Channels tclean images for the owned range [a, b).

    A one-channel sub-cube is imaged together with a neighbour channel, which is dropped
    afterwards: tclean run for a single channel maps the data onto it slightly differently from
    the full cube (measured: up to 4e-5 of the peak inside the cube; at the cube's ends a partly
    covered edge channel gets 2 % more weight, or is filled where the cube leaves it empty). With
    two or more channels every channel is identical, so nothing else is padded.
    """
    if b - a == 1 and nchan >= 2:
        return (a, a + 2) if b < nchan else (a - 1, b)
    return a, b


NO_ITERATIONS_THRESHOLD = "1e30Jy"


def _frequency(hz: float) -> str:
    # 17 significant digits: the double CASA gave us comes back bit for bit.
    return f"{hz:.17g}Hz"


def subcube_tclean_kwargs(base: dict[str, Any], *, start_hz: float, width_hz: float, nchan: int,
                          frame: str, restfreq_hz: float | None, niter: int,
                          first: bool = False, start_kms: float | None = None) -> dict[str, Any]:
    """The tclean keywords of one sub-cube, derived from the full cube's keywords.

    The first sub-cube of a default-start cube keeps start='' and the user's width: then tclean
    treats the cube's first channel specially (measured: a channel only partly covered by the
    frame-converted data stays empty), and an explicit frequency start, even the identical one,
    fills it. Keeping start/width and changing only nchan gives the same grid (checked against
    the plan after every sub-cube) and the same edge channel. Later sub-cubes start inside the
    cube, where an exact frequency start reproduces tclean, including the last (upper edge) channel.
    """
    kw = dict(base)
    kw["nchan"] = nchan
    if not first and start_kms is not None:
        # A velocity cube stays a velocity cube: CASA places a velocity start differently from a
        # frequency start near the data's edge (it shifts a frequency start that lies beyond the data).
        kw["start"] = f"{start_kms:.17g}km/s"
    elif not first:
        kw["start"] = _frequency(start_hz)
        kw["width"] = _frequency(width_hz)
    if kw.get("specmode", "cube") == "cube" and not first:
        # The grid's frame is what tclean resolved outframe to (e.g. '' -> LSRK).
        kw["outframe"] = frame
    if not kw.get("restfreq") and restfreq_hz:
        # Without it a sub-cube would take its rest frequency from its own data; the full cube's keeps
        # the header (and any velocity axis) identical.
        kw["restfreq"] = [_frequency(restfreq_hz)]
    kw["niter"] = niter
    if niter == 0 and int(base.get("niter", 0)) > 0:
        # No iterations left for this sub-cube in the cube's niter, but the cube cleans: tclean must
        # still set up the deconvolver so the sub-cube gets the mask the cube has there (niter=0 writes
        # none). One allowed iteration under an unreachable threshold does that and cleans nothing.
        kw["niter"] = 1
        kw["threshold"] = NO_ITERATIONS_THRESHOLD
        kw["nsigma"] = 0.0
    # The common beam is a property of the whole cube; sub-cubes restore per channel and the
    # concatenation step re-restores with the cube's common beam.
    if isinstance(kw.get("restoringbeam"), str) and kw["restoringbeam"].lower() == "common":
        kw["restoringbeam"] = ""
    kw["parallel"] = False
    kw["interactive"] = False
    return kw


def localize_start(spec: SubcubeSpec, grid) -> dict[str, Any]:
    """The sub-cube's tclean keywords with start/width taken from `grid`, the full cube's grid as
    CASA defines it in the process that is about to run tclean.

    A partly covered edge channel is knife-edge: a mHz shift of the grid (CASA's frame conversion
    differs that much between processes) can decide whether any visibility falls into it. Serial
    tclean defines its grid and images in one process; a sub-cube does the same with this.
    """
    kw = dict(spec.tclean_kwargs)
    start = kw.get("start", "")
    if start in ("", None):
        return kw  # tclean's own default start: nothing planned to replace
    if grid.nchan < spec.image_chan_stop:
        raise PlanError(f"the cube has {grid.nchan} channels here, the plan {len(spec.frequencies_hz)}+; re-plan.")
    ia = spec.image_chan_start if spec.image_chan_start >= 0 else spec.chan_start
    if isinstance(start, str) and start.endswith("km/s") and grid.velocities_kms:
        kw["start"] = f"{grid.velocities_kms[ia]:.17g}km/s"
    elif isinstance(start, str) and start.endswith("Hz"):
        kw["start"] = _frequency(grid.frequencies_hz[ia])
        kw["width"] = _frequency(grid.width_hz)
    return kw


def _default_start(kw: dict[str, Any]) -> bool:
    # Only the default start gets tclean's own first-channel handling; an explicit start is given
    # per sub-cube (as a velocity for velocity cubes, as a frequency otherwise).
    return kw.get("start", "") in ("", None)


def _abs_vis(vis: str | list[str]) -> str | list[str]:
    if isinstance(vis, list):
        return [os.path.abspath(os.path.expanduser(v)) for v in vis]
    return os.path.abspath(os.path.expanduser(vis))


def _same_grid(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= FREQUENCY_RTOL * abs(w)
                                         for g, w in zip(got, want, strict=True))


def plan_from_grid(tclean_kwargs: dict[str, Any], grid, nworkers: int, cube_chunksize: int = -1,
                   worker_memory_bytes: int | None = None, verify=None) -> CubePlan:
    """The plan for a grid already defined by CASA (pure unless `verify` is given).

    `verify(sub_kwargs) -> frequencies` asks CASA which grid a sub-cube's tclean call would make;
    a sub-cube whose grid CASA would move is widened (padding channels dropped after imaging).
    """
    kw = dict(tclean_kwargs)
    kw["vis"] = _abs_vis(kw["vis"])
    if not kw.get("imagename"):
        raise PlanError("imagename is empty; set imagename='path/prefix' for the output cube.")
    imagename = os.path.abspath(os.path.expanduser(kw["imagename"]))
    kw["imagename"] = imagename
    imsize = kw.get("imsize", [100])
    stokes = kw.get("stokes", "I")
    max_chunk = None
    if worker_memory_bytes:
        max_chunk = max_channels_that_fit(worker_memory_bytes, imsize, stokes)
    ranges = split_channels(grid.nchan, nworkers, cube_chunksize, max_chunk)
    niter = int(kw.get("niter", 0))
    shares = share_niter(niter, [b - a for a, b in ranges])
    workdir = imagename + SUBCUBES
    specs = []
    for index, ((a, b), share) in enumerate(zip(ranges, shares, strict=True)):
        freqs = grid.frequencies_hz[a:b]
        ia, ib = padded_range(a, b, grid.nchan)
        grow = 1
        while True:
            # Iterations spent in padding channels are thrown away with them; scale the share so the
            # owned channels keep their budget.
            run_niter = share * (ib - ia) // (b - a)
            sub_kw = subcube_tclean_kwargs(kw, start_hz=grid.frequencies_hz[ia], width_hz=grid.width_hz,
                                           nchan=ib - ia, frame=grid.frame, restfreq_hz=grid.restfreq_hz,
                                           niter=run_niter, first=(ia == 0 and _default_start(kw)),
                                           start_kms=grid.velocities_kms[ia] if grid.velocities_kms else None)
            if verify is None or _same_grid(verify(sub_kw), grid.frequencies_hz[ia:ib]):
                break
            if (ia, ib) == (0, grid.nchan):
                raise PlanError(f"CASA does not reproduce the cube's grid for channels {a}-{b - 1} even as one "
                                "cube; check start/width/nchan against the data (spw).")
            # CASA moved this sub-cube's start (it lies beyond the data, where tclean shifts a cube
            # back onto the data): widen it towards the cube's middle until the grid holds.
            if ib < grid.nchan and (ia == 0 or (ia + ib) / 2 < grid.nchan / 2):
                ib = min(grid.nchan, ib + grow)
            else:
                ia = max(0, ia - grow)
            grow *= 2
        specs.append(SubcubeSpec(
            index=index, nparts=len(ranges), chan_start=a, chan_stop=b, nchan=b - a,
            image_chan_start=ia, image_chan_stop=ib,
            start_hz=freqs[0], width_hz=grid.width_hz, frame=grid.frame, frequencies_hz=list(freqs),
            vis=kw["vis"], imagename=imagename,
            # Named by channel range: a re-plan with another split never reuses a folder of a different
            # range, so products of two plans cannot mix.
            subcube_dir=os.path.join(workdir, f"chan{a:05d}-{b - 1:05d}"),
            niter=share, tclean_kwargs=sub_kw, cube_tclean_kwargs=kw,
            estimated_memory_bytes=estimate_subcube_bytes(b - a, imsize, stokes)))
    return CubePlan(
        imagename=imagename, workdir=workdir, nchan=grid.nchan, frequencies_hz=list(grid.frequencies_hz),
        width_hz=grid.width_hz, frame=grid.frame, restfreq_hz=grid.restfreq_hz, niter=niter,
        niter_sharing=NITER_SHARING, restoringbeam=tclean_kwargs.get("restoringbeam", ""),
        nworkers=nworkers, cube_chunksize=cube_chunksize, worker_memory_bytes=worker_memory_bytes,
        estimated_memory_bytes_per_subcube=max(s.estimated_memory_bytes for s in specs), tclean_kwargs=kw,
        specs=specs)


def cube_grid(cfg):
    """The config's tclean keywords and the cube's grid as CASA defines it (reads the MS once); what
    `plan_sessions` takes as `grid` to plan the same cube again without asking CASA twice."""
    kwargs = cfg.tclean_kwargs()
    if not cfg.is_cube:
        raise PlanError(f"specmode={kwargs.get('specmode')!r} is not a cube; the cube planner needs "
                        "specmode='cube' or 'cubedata'.")
    try:
        return kwargs, define_cube_grid(kwargs)
    except CubeGridError as err:
        raise PlanError(f"{err} (check nchan, start, width, outframe, restfreq and spw)") from err


def plan_subcubes(cfg, nworkers: int, worker_memory_bytes: int | None = None) -> CubePlan:
    """Plan a cube config: CASA defines the grid (reads the MS once), then the split is pure logic."""
    kwargs, grid = cube_grid(cfg)
    if not grid.linear:
        raise PlanError("the cube's spectral axis is tabular (non-linear in frequency, e.g. veltype='optical' "
                        "with a velocity width); sub-cubes cannot reproduce it. Use veltype='radio' or a "
                        "frequency width.")
    def verify(sub_kwargs: dict[str, Any]) -> list[float]:
        try:
            return define_cube_grid(sub_kwargs).frequencies_hz
        except CubeGridError:
            return []

    return plan_from_grid(kwargs, grid, nworkers, cfg.extras.cube_chunksize, worker_memory_bytes, verify=verify)


def session_ranges(nchan: int, nworkers: int, max_chunk: int | None = None, single: bool = False) -> list[tuple[int, int]]:
    """Channel ranges of the sub-cube sessions of the exact loop: one contiguous share per worker.

    A worker's channels form one session, so each worker reads its data once per cycle however fine
    `cube_chunksize` is; more sessions than workers only when the memory estimate caps a session
    (`max_chunk`). A session never holds a single channel of a cube that has more (CASA maps the
    data onto a one-channel image differently from the full cube), so an odd one is merged into its
    neighbour. `single` keeps the whole cube as one session.
    """
    if single or nchan < 2:
        return [(0, nchan)]
    ranges = split_channels(nchan, max(1, min(nworkers, nchan // 2)), -1, max_chunk)
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if merged and (b - a < 2 or merged[-1][1] - merged[-1][0] < 2):
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < 2:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


SESSION_NITER = ("niter counts over the whole cube in one iteration controller, exactly as in tclean "
                 "(sub-cube sessions, merged records).")


def plan_sessions(cfg, nworkers: int, worker_memory_bytes: int | None = None, grid=None) -> CubePlan:
    """The plan of the exact loop: the cube's CASA-defined grid split into session ranges (`grid`:
    what `cube_grid(cfg)` returned, when the caller has it already)."""
    # Not at the top: casa.cube_session loads numpy, and the cube operators import this module in
    # the Airflow process only for the fan-out's batch arithmetic.
    from pclean_provider.casa.cube_session import needs_single_session

    kwargs, grid = grid if grid is not None else cube_grid(cfg)
    single = bool(needs_single_session(kwargs)) or not grid.linear
    imsize = kwargs.get("imsize", [100])
    stokes = kwargs.get("stokes", "I")
    max_chunk = max_channels_that_fit(worker_memory_bytes, imsize, stokes) if worker_memory_bytes else None
    ranges = session_ranges(grid.nchan, nworkers, max_chunk, single=single)
    plan = plan_from_grid(kwargs, grid, nworkers, cfg.extras.cube_chunksize, worker_memory_bytes)
    # A folder of this run's own: an older try of the same cube that still runs somewhere (a cleared
    # task) keeps writing into its folder, never into this run's.
    run_dir = os.path.join(plan.workdir, f"run-{uuid.uuid4().hex[:8]}")
    specs = []
    for index, (a, b) in enumerate(ranges):
        specs.append(SubcubeSpec(
            index=index, nparts=len(ranges), chan_start=a, chan_stop=b, nchan=b - a,
            start_hz=grid.frequencies_hz[a], width_hz=grid.width_hz, frame=grid.frame,
            frequencies_hz=list(grid.frequencies_hz[a:b]), vis=plan.tclean_kwargs["vis"], imagename=plan.imagename,
            subcube_dir=os.path.join(run_dir, f"chan{a:05d}-{b - 1:05d}"), niter=plan.niter,
            tclean_kwargs={}, estimated_memory_bytes=estimate_subcube_bytes(b - a, imsize, stokes)))
    return plan.model_copy(update={
        "specs": specs, "niter_sharing": SESSION_NITER,
        "estimated_memory_bytes_per_subcube": max(s.estimated_memory_bytes for s in specs)})


#: What a sub-cube batch is sized for when nothing better is known: one sub-cube's wall time (a
#: small tclean run, CASA already loaded) and how long one Airflow task should keep the cluster busy
#: so that its scheduling cost (about a second) stays a small fraction of it.
DEFAULT_SUBCUBE_SECONDS = 20.0
DEFAULT_TARGET_TASK_SECONDS = 300.0


def batch_ranges(nsubcubes: int, nworkers: int, *, max_batches: int, subcubes_per_task: int | None = None,
                 target_task_seconds: float = DEFAULT_TARGET_TASK_SECONDS,
                 subcube_seconds: float = DEFAULT_SUBCUBE_SECONDS) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of sub-cube indexes, one per Airflow task.

    Two granularities: Dask runs every sub-cube as a task of its own (as fine as one channel), while
    Airflow sees one task per batch. A batch is sized to keep every worker busy for about
    `target_task_seconds` (`nworkers * target_task_seconds / subcube_seconds` sub-cubes), or to
    `subcubes_per_task` when the template sets it; either way it is grown until the batches fit in
    `max_batches` (Airflow's map limit, or the per-MS batch tasks of a pipeline), so a cube of any
    channel count maps. The batches are then evened out (they differ by one sub-cube at most).
    """
    if nsubcubes < 1:
        raise PlanError(f"nsubcubes={nsubcubes}: a cube has at least one sub-cube.")
    if max_batches < 1:
        raise PlanError(f"max_batches={max_batches}: at least one Airflow task must image the sub-cubes.")
    if subcubes_per_task is not None and subcubes_per_task < 1:
        raise PlanError(f"subcubes_per_task={subcubes_per_task}: use a positive number of sub-cubes per Airflow "
                        "task, or leave it unset to derive it from the cluster size.")
    if subcubes_per_task is None:
        if target_task_seconds <= 0 or subcube_seconds <= 0:
            raise PlanError(f"target_task_seconds={target_task_seconds}, subcube_seconds={subcube_seconds}: "
                            "both must be positive to derive the sub-cubes per task.")
        rounds = max(1, math.floor(target_task_seconds / subcube_seconds))
        size = max(1, nworkers) * rounds
    else:
        size = subcubes_per_task
    size = max(size, math.ceil(nsubcubes / max_batches))
    nbatches = math.ceil(nsubcubes / size)
    base, extra = divmod(nsubcubes, nbatches)
    ranges = []
    start = 0
    for i in range(nbatches):
        stop = start + base + (1 if i < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges
