"""The exact cube: sub-cube sessions on the workers, one iteration controller for the whole cube.

CASA's own imager cleans several image fields with one iteration controller: every field's
deconvolver reports `initminorcycle`, the controller merges the records and decides convergence
once, hands every deconvolver the same minor-cycle controls, and merges their
`executeminorcycle` records (casatasks imagerhelpers, `hasConverged`/`runMinorCycleCore`). Here
the fields are the sub-cubes of one cube: each lives as a session on a worker (imager, normalizer,
deconvolver; built once, kept for every cycle), the coordinator holds the one iterbotsink, and
only those small records travel.

The order of the steps is task_tclean's, kept by the one loop of engine/major_minor.py;
`_CubeSteps` runs each step on every session at once (PSF, PB, major and minor cycles, masks,
restore, pbcor) and merges the records in `CubeIterationControl`. After the loop each session
publishes its own channels as its products.

A worker lost in the middle: its sessions are rebuilt on a surviving worker from their images on
disk (the model as it was before an interrupted minor cycle), the interrupted step is redone on
them only, and the run goes on with the same result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from pclean_provider import products
from pclean_provider.casa.cube_session import (
    CubeIterationControl,
    automask_alignment,
    build_cube_records,
    open_cube_session,
)
from pclean_provider.casa.image_concat import image_frequencies, paged_copy
from pclean_provider.casa.iteration import STOP_REASONS
from pclean_provider.casa.session_protocol import Operation
from pclean_provider.engine.imaging_errors import ImagingPartError
from pclean_provider.engine.major_minor import run_major_minor
from pclean_provider.engine.models import CubePlan, SubcubeResult
from pclean_provider.engine.part_backends import DaskParts, PartsLost, SerialParts
from pclean_provider.engine.progress import ProgressFile

log = logging.getLogger("pclean_provider.cube")

# A lost worker's sessions are rebuilt this many times in one run before it fails.
MAX_REBUILDS = 4


class CubeLoopResult(BaseModel):
    iterations: int = 0
    major_cycles: int = 0
    stopcode: int = 0
    stop_reason: str = ""
    summary: dict[str, Any] = Field(default_factory=dict)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    rebuilt_sessions: list[int] = Field(default_factory=list)
    workers: list[str] = Field(default_factory=list)


class _Sessions:
    """Runs one step on every session; rebuilds sessions whose worker was lost, then redoes the step on them."""

    def __init__(self, backend: Any, specs: list[Any], automask: bool = False) -> None:
        self.backend = backend
        self.specs = {s.part: s for s in specs}
        self.automask = automask
        self.rebuilt: list[int] = []
        # Set once the deconvolvers have computed their first statistics (initminorcycle): a rebuilt
        # deconvolver must catch up on that before it may set up masks or clean.
        self.deconvolving = False

    def run(self, operation: str, **kwargs: Any) -> list[str | None]:
        replies: dict[int, Any] = {}
        todo: list[int] | None = None
        while True:
            try:
                for reply in self.backend.run(operation, parts=todo, **kwargs):
                    replies[reply.part] = reply
                break
            except PartsLost as lost:
                replies.update(lost.done)
                self._rebuild(sorted(lost.lost), operation, lost)
                todo = sorted(lost.lost)
        return [replies[k].value for k in sorted(replies)]

    def _rebuild(self, parts: list[int], operation: str, cause: PartsLost) -> None:
        if len(self.rebuilt) + len(parts) > MAX_REBUILDS or not hasattr(self.backend, "reassign"):
            raise ImagingPartError(cause.part, cause.nparts, operation, cause.reason, "cube")
        for part in parts:
            worker = self.backend.reassign(part)
            log.warning("cube: %s lost its worker during %s; rebuilding it on %s from its images on disk",
                        self.specs[part].label, operation, worker)
        self.backend.open([self.specs[p] for p in parts])
        if operation == Operation.MINOR_CYCLE:
            self.backend.run(Operation.RESTORE_MODEL_BACKUP, parts=parts)
        if self.deconvolving and operation != Operation.INIT_MINOR:
            self.backend.run(Operation.INIT_MINOR, parts=parts)
            if operation == Operation.MINOR_CYCLE and not self.automask:
                # The mask on disk is the one the interrupted minor cycle used; a user or PB mask is
                # loaded again as is (auto-multithresh would grow a new one: its mask on disk is kept).
                self.backend.run(Operation.SETUP_MASK, parts=parts)
                self.backend.run(Operation.INIT_MINOR, parts=parts)
        self.rebuilt.extend(parts)


class _CubeSteps:
    """The cube's imaging steps (engine.major_minor.ImagingSteps): every step on every session,
    their records merged by the one iteration controller (None without cleaning)."""

    def __init__(self, sessions: _Sessions, control: CubeIterationControl | None, result: CubeLoopResult,
                 stages: dict[str, float], t0: float, on_cycle: Callable[[dict[str, Any]], Any] | None, *,
                 gridder: str, automask: bool, keep_backup: bool) -> None:
        self.sessions = sessions
        self.control = control
        self.result = result
        self.stages = stages
        self.t0 = t0
        self.on_cycle = on_cycle
        self.gridder = gridder
        self.automask = automask
        # Only a session on a worker can be lost mid-cycle and need the model from before it.
        self.keep_backup = keep_backup
        self.init_records: list[str | None] = []
        self.automask_aligned = False

    def timed(self, stage: str, operation: str, **kw: Any) -> list[str | None]:
        t = time.perf_counter()
        out = self.sessions.run(operation, **kw)
        self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t
        return out

    def make_psf(self) -> None:
        self.timed("psf_s", Operation.MAKE_PSF)

    def make_pb(self) -> None:
        self.timed("pb_s", Operation.MAKE_PB, gridder=self.gridder)

    def major_cycle(self, *, clean_cycle: bool) -> None:
        last = self.control.is_last_cycle() if self.control is not None else True
        self.timed("major_s", Operation.MAJOR_CYCLE, lastcycle=last)
        if self.control is not None:
            self.control.end_major_cycle()
        if clean_cycle:
            self.result.major_cycles += 1

    def report_dirty_image(self, *, cleaning: bool) -> None:
        # Cycle 0 is reported as soon as the dirty image is there, cleaned or not.
        _report(self.on_cycle, 0, 0, self.t0)

    def check_convergence(self) -> int:
        self.init_records[:] = self.timed("minor_s", Operation.INIT_MINOR)
        self.sessions.deconvolving = True
        self.control.merge_init(self.init_records)
        reached = self.control.nmajor >= 0 and self.result.major_cycles >= self.control.nmajor
        return self.control.stop_code(reached)

    def update_mask(self) -> None:
        if self.automask and not self.automask_aligned:
            # Once, on the first statistics of every session (the check before the first mask):
            # auto-multithresh then grows every session's mask from the whole cube's sidelobe level.
            _align_automask(self.sessions, self.init_records)
            self.automask_aligned = True
        self.timed("mask_s", Operation.SETUP_MASK)

    def minor_cycle(self) -> int:
        return self.control.merge_exec(self.timed("minor_s", Operation.MINOR_CYCLE, controls=self.control.controls(),
                                                  keep_backup=self.keep_backup))

    def report_cycle(self, cycle: int, stopcode: int) -> None:
        if cycle == 0:
            return  # the dirty image's report is cycle 0 (report_dirty_image)
        self.result.iterations = int(self.control.summary().get("iterdone", 0))
        _report(self.on_cycle, self.result.major_cycles, self.result.iterations, self.t0)

    def end_cleaning(self, stopcode: int) -> None:
        if stopcode and self.automask:
            # The mask the last minor cycle used, not the one grown after it. tclean reverts at every
            # check that stops; before the first minor cycle a session has no earlier mask to go back
            # to, so the check that ends the loop is the one that matters.
            self.sessions.run(Operation.REVERT_AUTOMASK)
        self.result.summary = self.control.summary()
        self.result.iterations = int(self.result.summary.get("iterdone", 0))
        self.result.stopcode = int(stopcode)
        self.result.stop_reason = STOP_REASONS.get(int(stopcode), "")

    def restore(self) -> None:
        self.timed("restore_s", Operation.RESTORE)

    def pbcor(self) -> None:
        self.timed("restore_s", Operation.PBCOR)

    def publish(self) -> None:
        """Each session's own channels become its products (after restore and pbcor, outside the loop)."""
        self.timed("publish_s", Operation.PUBLISH)


def _copy_earlier_images(earlier: str, specs: list[Any]) -> None:
    """The earlier run's images become the one session's (paged copies: a concatenated cube may be a
    reference to its parts, which an imager cannot write), so its imager and deconvolver open them."""
    if len(specs) != 1:
        raise ValueError(f"continuing from {earlier}: one session expected, got {len(specs)}")
    for suffix in products.SINGLE_TERM_PRODUCTS:
        if products.is_casa_image(earlier + suffix):
            paged_copy(earlier + suffix, specs[0].product_prefix + suffix)


def _new_backend(client: Any, run_id: str, nparts: int) -> Any:
    if client is None:
        return SerialParts(run_id, nparts, imaging="cube", opener=open_cube_session)
    return DaskParts(client, run_id, nparts, imaging="cube", opener=open_cube_session)


def run_cube_loop(plan: CubePlan, client: Any = None, *, log_dir: str | None = None,
                  on_cycle: Callable[[dict[str, Any]], Any] | None = None,
                  progress_file: str | None = None,
                  start_from: str | None = None) -> tuple[list[SubcubeResult], CubeLoopResult]:
    """Image and clean the planned cube; every spec of `plan` becomes one session.

    Writes each session's products at its spec's `product_prefix`; returns one SubcubeResult per
    spec (for the concatenation) and what the iteration controller did. With `progress_file`, one
    progress record per major cycle is appended there (engine.progress.ProgressFile); whoever waits
    from afar, e.g. an Airflow trigger, logs them.

    `start_from`: an earlier run's image name (tclean's restart, one session only): its images are
    copied in as the session's, and calcpsf/calcres are honoured as tclean honours them.
    """
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    run_id = uuid.uuid4().hex[:10]
    kwargs = plan.tclean_kwargs
    for spec in plan.specs:
        # A session writes its images in place; leftovers of an earlier run would be picked up as a start model.
        shutil.rmtree(spec.subcube_dir, ignore_errors=True)
        os.makedirs(spec.subcube_dir)
    if start_from is not None:
        _copy_earlier_images(start_from, plan.specs)
    records = build_cube_records(kwargs, [(s.chan_start, s.chan_stop) for s in plan.specs],
                                 [s.product_prefix for s in plan.specs], run_id,
                                 os.path.join(plan.workdir, f"sessions-{run_id}"), log_dir=log_dir)
    stages["define_s"] = time.perf_counter() - t0
    niter = int(kwargs.get("niter", 0) or 0)
    gridder = str(kwargs.get("gridder", "standard"))
    automask = "auto" in str(kwargs.get("usemask", ""))
    backend = _new_backend(client, run_id, len(records.sessions))
    sessions = _Sessions(backend, records.sessions, automask=automask)
    control = CubeIterationControl(records.iteration) if niter > 0 else None
    result = CubeLoopResult(workers=list(getattr(backend, "workers", [])))
    if progress_file:
        records_file = ProgressFile(progress_file, run_id, "cube")
        user_on_cycle = on_cycle

        def on_cycle(info: dict[str, Any]) -> None:
            records_file.cycle(f"cube {os.path.basename(plan.imagename)}: major cycle {info['cycle']}, "
                               f"{info['iterations']} iterations, {info['elapsed_s']:.1f} s", **info)
            if user_on_cycle is not None:
                user_on_cycle(info)

    try:
        t = time.perf_counter()
        backend.open(records.sessions)
        stages["open_s"] = time.perf_counter() - t
        steps = _CubeSteps(sessions, control, result, stages, t0, on_cycle, gridder=gridder, automask=automask,
                           keep_backup=client is not None)
        # calcpsf/calcres=False take the PSF/residual on disk, which only a continued run has.
        run_major_minor(steps, niter, restoration=bool(kwargs.get("restoration", True)),
                        pbcor=bool(kwargs.get("pbcor")),
                        calcpsf=start_from is None or bool(kwargs.get("calcpsf", True)),
                        calcres=start_from is None or bool(kwargs.get("calcres", True)))
        steps.publish()
    finally:
        if control is not None:
            control.close()
        try:
            backend.close()
        except Exception as exc:  # a lost worker has nothing left to close
            log.warning("cube: closing sessions: %s", exc)
        shutil.rmtree(os.path.join(plan.workdir, f"sessions-{run_id}"), ignore_errors=True)
    result.rebuilt_sessions = sessions.rebuilt
    result.stage_seconds = {k: round(v, 3) for k, v in stages.items()}
    elapsed = time.perf_counter() - t0
    results = [_session_result(spec, result, elapsed) for spec in plan.specs]
    log.info("cube %s: %d iterations, %d major cycles, %s; stages %s", os.path.basename(plan.imagename),
             result.iterations, result.major_cycles, result.stop_reason or "no cleaning", result.stage_seconds)
    return results, result


def _align_automask(sessions: _Sessions, init_records: list[str | None]) -> None:
    """Give every session's auto-multithresh the whole cube's PSF sidelobe level (see
    cube_session.automask_alignment); a session rebuilt later gets the aligned records too."""
    parts = sorted(sessions.specs)
    changes = automask_alignment(init_records, [sessions.specs[p].deconvolution for p in parts])
    for part, record in changes.items():
        sessions.specs[part] = sessions.specs[part].model_copy(update={"deconvolution": json.loads(record)})
        sessions.backend.run(Operation.REPLACE_DECONVOLVER, parts=[part], deconvolution=record)


def _report(on_cycle: Callable[[dict[str, Any]], Any] | None, cycle: int, iterations: int, t0: float) -> None:
    info = {"cycle": cycle, "iterations": iterations, "elapsed_s": round(time.perf_counter() - t0, 2)}
    log.info("cube major cycle %d: %d iterations, %.1f s", cycle, iterations, info["elapsed_s"])
    if on_cycle is not None:
        on_cycle(info)


def _session_result(spec: Any, loop: CubeLoopResult, elapsed: float) -> SubcubeResult:
    got = image_frequencies(spec.product_prefix + products.IMAGE if os.path.isdir(spec.product_prefix + products.IMAGE)
                            else spec.product_prefix + products.PSF)
    return SubcubeResult(
        index=spec.index, chan_start=spec.chan_start, chan_stop=spec.chan_stop, nchan=spec.nchan,
        frequencies_hz=got, product_prefix=spec.product_prefix, products=products.existing(spec.product_prefix),
        niter=spec.niter, iterations=loop.iterations, nmajor_done=loop.major_cycles, stop_code=loop.stopcode,
        stop_reason=loop.stop_reason, seconds=elapsed, peak_rss_bytes=0, host=socket.gethostname(),
        pid=os.getpid(), casa_log="")
