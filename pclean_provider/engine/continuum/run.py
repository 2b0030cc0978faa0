"""Row-parallel continuum (mfs) imaging: major cycles on every part, one minor cycle on the coordinator.

The order of work is CASA's own parallel continuum order (casatasks imagerhelpers,
PyParallelContSynthesisImager), so the result matches serial tclean:

1. one global coordinate system from the full selection; rows cut into contiguous ranges
   (synthesisutils.contdatapartition); every part imager built once on its rows;
2. weighting: every part computes its weight density, the coordinator sums them and every part
   loads the sum - so briggs/uniform weights (and the beam) do not depend on the parts;
3. PSF on every part, gathered, normalized, beam fitted; primary beam made once (skipped with
   calcpsf=False);
4. dirty image: model scattered, a major cycle on every part, residual gathered and normalized
   (skipped with calcres=False);
5. masks and convergence on the coordinator, then minor cycle / major cycle until the iterbot stops;
6. restore, pbcor, part images removed;
7. savemodel: the parts closed, one imager in this process predicts the final model into the
   MeasurementSet(s) (`_without_model_writes` says why the parts never write it).

Steps 3-6 are the one major/minor loop of engine/major_minor.py (task_tclean's order, shared with
the cube); `_ContinuumSteps` says how each of them runs on the parts and the coordinator's tools.

Restart, as tclean's restart=True: the images an earlier run left under imagename are copied
into the staging folder first, so the model, mask, PSF and residual on disk are where this run
continues; restart=False writes the next numbered name instead (`output_name`).

With `client=None` the same steps run in this process with one part (serial tclean's layout:
the imager writes the products themselves). A part on a worker always images onto its own part
images, even when it is the only part: see `_shares_images`.
The products are written under a staging name and renamed into place only when the run has
succeeded: a failed run (a lost worker, a CASA error on one part) leaves no image under the
requested name, never one built from the surviving parts.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

from pclean_provider.atomic_files import (
    DirClaim,
    process_owner,
    put_set_in_place,
    remove_dead_stagings,
    staging_name,
)
from pclean_provider.casa import continuum_parts as cp
from pclean_provider.casa.deconvolver_session import ConvergenceState, CoordinatorTools, image_peak
from pclean_provider.casa.imager_session import open_part, save_model
from pclean_provider.casa.iteration import STOP_REASONS
from pclean_provider.casa.records import decode_record, encode_record
from pclean_provider.casa.runtime import default_log_dir, ensure_casa_runtime, set_casa_log
from pclean_provider.casa.session_protocol import Operation
from pclean_provider.config.casa_bridge import CasaRecords, casa_records_for
from pclean_provider.engine.continuum.models import ContinuumResult, CycleReport
from pclean_provider.engine.continuum.outliers import read_outlier_file, write_staged_outlier_file
from pclean_provider.engine.continuum.preflight import (
    ContinuumInputError,
    check_continuum_inputs,
    existing_products,
    outlierfile_of,
    output_name,
)
from pclean_provider.engine.continuum.stages import StageClock, stage_table
from pclean_provider.engine.major_minor import run_major_minor
from pclean_provider.engine.part_backends import DaskParts, SerialParts
from pclean_provider.engine.progress import Progress, ProgressFile, progress_file_for
from pclean_provider.products import RESIDUAL, WORKDIRECTORY, first_term

log = logging.getLogger("pclean_provider.continuum")

__all__ = ["ContinuumResult", "CycleReport", "run_continuum"]


class _Progress:
    """One log line, one on_cycle call and one progress record per major cycle."""

    def __init__(self, run_id: str, path: str, on_cycle: Callable[[CycleReport], Any] | None,
                 t0: float, bar_total: int | None = None) -> None:
        self.run_id = run_id
        self.on_cycle = on_cycle
        self.t0 = t0
        self.reports: list[CycleReport] = []
        self.bar = None
        if bar_total is not None:
            # Counted in minor-cycle iterations: the one unit whose total (niter) is known upfront.
            self.bar = Progress(total=max(1, bar_total), desc="continuum", unit="iteration", bar=True,
                                logger=log)
        self.file = ProgressFile(path, run_id, "continuum")

    @property
    def path(self) -> str:
        return self.file.path

    def cycle(self, cycle: int, iterations: int, peak: float | None, flux: float | None,
              major_s: float, minor_s: float, stopcode: int = 0, reason: str | None = None) -> CycleReport:
        report = CycleReport(run_id=self.run_id, cycle=cycle, iterations=iterations, peak_residual=peak,
                             model_flux=flux, elapsed_s=time.perf_counter() - self.t0, major_s=major_s,
                             minor_s=minor_s, stopcode=stopcode, stop_reason=reason)
        previous = self.reports[-1].iterations if self.reports else 0
        self.reports.append(report)
        if self.bar is not None:
            self.bar.advance(report.line(), n=max(0, iterations - previous))
        else:
            log.info(report.line())
        self.file.cycle(report.line(), **report.model_dump(mode="json", exclude={"run_id"}))
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finished(self, result: ContinuumResult) -> None:
        # The stages stay in the result object; one line per major cycle is what a tail reads.
        summary = result.model_dump(mode="json", exclude={"cycles", "summary", "stages"})
        self.file.finished(f"continuum run {self.run_id} finished: {result.iterations} iterations, "
                           f"{result.major_cycles} major cycles, {result.stop_reason or 'no cleaning'}", summary)

    def failed(self, exc: BaseException) -> None:
        self.file.failed(exc)

    def stop(self, stopcode: int, reason: str | None) -> None:
        if self.reports:
            last = self.reports[-1]
            if last.stopcode != stopcode:
                self.reports[-1] = last.model_copy(update={"stopcode": stopcode, "stop_reason": reason})
                self.file.stopped(stopcode, reason)


def _nparts_for(client: Any, nparts: int | None) -> int:
    if nparts is not None:
        if nparts < 1:
            raise ContinuumInputError(f"nparts={nparts}: needs at least 1 part.")
        return nparts
    if client is None:
        return 1
    return max(1, len(client.nthreads()))


def run_continuum(cfg: Any, client: Any = None, on_cycle: Callable[[CycleReport], Any] | None = None,
                  *, nparts: int | None = None, keep_partimages: bool | None = None,
                  progress: bool = False, cluster_start_s: float | None = None,
                  inputs_checked: bool = False) -> ContinuumResult:
    """Image a continuum (specmode='mfs') config; parts on the Dask `client`'s workers, or in-process.

    `nparts` defaults to the number of workers (1 without a client); `keep_partimages` to
    cfg.extras.keep_partimages; `progress=True` shows a progress bar (command line). Every major
    cycle is logged, passed to `on_cycle` and appended to `<imagename>.progress.jsonl`.
    Raises ContinuumInputError for a request it cannot honour (before any work) and
    ImagingPartError when a part fails (no product is then left under imagename).
    The result keeps every stage's time (`stages`; `cluster_start_s`, when the caller started
    the cluster for this run, is kept as the first one) and the log ends with their table.
    `inputs_checked=True`: the caller has just run preflight.check_continuum_inputs on this
    config (pclean() does, before it starts a cluster), so the MS selections are not opened twice.
    """
    t0 = time.perf_counter()
    clock = StageClock()
    if cluster_start_s is not None:
        clock.add("cluster start", cluster_start_s)
    if not inputs_checked:
        with clock.stage("input checks"):
            check_continuum_inputs(cfg)
    outlierfile = outlierfile_of(cfg)
    rec = casa_records_for(cfg.replace(outlierfile="") if outlierfile else cfg)
    final = output_name(rec)
    if keep_partimages is None:
        keep_partimages = bool(getattr(getattr(cfg, "extras", None), "keep_partimages", False))
    n = _nparts_for(client, nparts)
    if client is None and n != 1:
        # Several imagers in one process would only take turns: no gain, more memory.
        raise ContinuumInputError(f"nparts={n} needs a Dask client; without one the run is serial (nparts=1).")

    # A serial part logs to its own file in the staging folder; the caller's log comes back after.
    previous_log = ensure_casa_runtime().log_path
    run_id = uuid.uuid4().hex[:10]
    if n > 1 and rec.gridding.get("gridder") == "mosaic":
        with clock.stage("partition and coordinates"):
            selection = cp.check_selection(rec.selection)
            why = cp.mosaic_field_order_blocker(selection, cp.partition_rows(selection, n))
        if why:
            # One part is serial tclean's own gridding: exact, not parallel.
            log.warning("continuum run %s: one part instead of %d: %s", run_id, n, why)
            n = 1
    parent = os.path.dirname(final)
    base = os.path.basename(final)
    os.makedirs(parent, exist_ok=True)
    # Owned by this process: a later run removes it if this process dies (a killed coordinator), and
    # leaves it while this one lives.
    remove_dead_stagings(final)
    # One writer per image name: a newer run of the same name (a cleared or retried task whose older
    # try still runs somewhere) claims it, and this run then publishes nothing.
    claim = DirClaim(final)
    staging = staging_name(final, owner=process_owner())
    os.makedirs(staging)
    staged_name = os.path.join(staging, base)
    # Under the name asked for, where a caller tailing it (an Airflow trigger) looks for it.
    tracker = _Progress(run_id, progress_file_for(rec.imagename), on_cycle, t0,
                        bar_total=rec.niter if progress else None)
    log.info("continuum run %s: %s -> %s, %d part(s)%s", run_id, rec.selection["ms0"]["msname"], final, n,
             "" if client is None else f" on {len(client.nthreads())} worker(s)")

    if outlierfile:
        try:
            return _run_outlier_fields(cfg, rec, outlierfile, tracker, clock, t0, run_id, staging)
        finally:
            # The outlier fields' one tclean call publishes each field itself: no fence there.
            claim.release()
            tracker.close()
            set_casa_log(previous_log)

    backend = (SerialParts(run_id, n, imaging="continuum", opener=open_part) if client is None
               else DaskParts(client, run_id, n, imaging="continuum", opener=open_part))
    if client is not None:
        # The workers' one-time set-up overlaps the coordinator's partitioning (see warm_up).
        backend.warm_up({k: _part_log_path(staging, k) for k in range(n)})
    try:
        # A restart works on copies, so a failed run leaves the earlier products as they were.
        earlier = _copy_earlier_products(final, staged_name, rec)
        savemodel = _savemodel(rec)
        loop_rec = _without_model_writes(rec) if savemodel != "none" else rec
        loop_rec = _with_earlier_cfcache(loop_rec, final)
        result = _run(loop_rec.with_imagename(staged_name), backend, tracker, n, run_id, staging, client is None,
                      clock)
        with clock.stage("close parts"):
            _close_quietly(backend)
        if savemodel != "none":
            with clock.stage("savemodel"):
                _save_model(rec, staged_name, staging, savemodel, run_id)
        with clock.stage("publish"), claim.publishing():
            products = _publish(staging, base, parent, keep_partimages, replace=earlier)
    except BaseException as exc:
        tracker.failed(exc)
        _close_quietly(backend)
        _discard(staging, run_id)
        claim.release()
        raise
    finally:
        tracker.close()
        if client is None:
            set_casa_log(previous_log)
    result.update(imagename=final, products=products, progress_file=tracker.path,
                  part_images_kept=keep_partimages and not _shares_images(client is None, n),
                  cycles=tracker.reports,
                  elapsed_s=time.perf_counter() - t0, workers=list(getattr(backend, "workers", [])),
                  stages=clock.stages, cluster_start_s=cluster_start_s,
                  setup_s=clock.total("partition and coordinates", "open parts", "weight density"),
                  psf_s=clock.total("psf", "psf gather", "pb"),
                  major_cycle_s=clock.total("scatter model", "major cycle on parts", "gather residual"),
                  minor_cycle_s=clock.total("minor cycle", "mask and convergence"),
                  restore_s=clock.total("restore", "pbcor"))
    out = ContinuumResult(run_id=run_id, nparts=n, **result)
    tracker.finished(out)
    log.info("continuum run %s finished: %d iterations, %d major cycles, %s, %.1f s (minor cycle %.0f%%)\n%s",
             run_id, out.iterations, out.major_cycles, out.stop_reason or "no cleaning", out.elapsed_s,
             100 * out.minor_cycle_share, stage_table(out.stages, out.elapsed_s))
    return out


def _run_outlier_fields(cfg: Any, rec: CasaRecords, outlierfile: str, tracker: _Progress, clock: StageClock,
                        t0: float, run_id: str, staging: str) -> ContinuumResult:
    """The one-process exact path of a run with outlier fields: serial tclean itself, staged.

    Every field gets a staging folder beside its own products (fields may live in different
    folders, and a rename is atomic only within one file system); earlier images are copied in
    for a restart, and each field is published only when tclean has finished them all.
    """
    final = os.path.abspath(rec.imagename)
    fields = read_outlier_file(outlierfile, final)
    names = [final] + [f.imagename for f in fields]
    stagings = [staging] + [staging_name(n, owner=process_owner()) for n in names[1:]]
    staged = [os.path.join(d, os.path.basename(n)) for d, n in zip(stagings, names, strict=True)]
    log.info("continuum run %s: outlier fields (%d) take the one-process exact path (serial tclean)",
             run_id, len(fields))
    try:
        earlier = []
        for d, n, st in zip(stagings, names, staged, strict=True):
            os.makedirs(d, exist_ok=True)
            earlier.append(_copy_earlier_products(n, st, rec))
        kwargs = cfg.tclean_kwargs()
        kwargs.update(imagename=staged[0], outlierfile=write_staged_outlier_file(
            fields, staged[1:], os.path.join(staging, "outliers.txt")))
        with clock.stage("tclean (one process, outlier fields)"):
            summary = cp.run_tclean_here(kwargs, cwd=os.path.join(staging, "tclean"))
        products: list[str] = []
        with clock.stage("publish"):
            for d, n, prior in zip(stagings, names, earlier, strict=True):
                products += _publish(d, os.path.basename(n), os.path.dirname(n), False, replace=prior)
    except BaseException as exc:
        tracker.failed(exc)
        for d in stagings:
            _discard(d, run_id)
        raise
    iterations = int(summary.get("iterdone", 0))
    stopcode = int(summary.get("stopcode", 0) or 0)
    reason = STOP_REASONS.get(stopcode)
    tracker.cycle(0, iterations, image_peak(_residual_name(final, rec)), None, 0.0, 0.0, stopcode, reason)
    elapsed = time.perf_counter() - t0
    out = ContinuumResult(run_id=run_id, imagename=final, products=products, nparts=1, workers=["in-process"],
                          iterations=iterations, major_cycles=max(0, int(summary.get("nmajordone", 1)) - 1),
                          stopcode=stopcode, stop_reason=reason, cycles=tracker.reports, elapsed_s=elapsed,
                          progress_file=tracker.path, summary=summary, stages=clock.stages,
                          cluster_start_s=next((s.seconds for s in clock.stages if s.stage == "cluster start"), None))
    tracker.finished(out)
    log.info("continuum run %s finished (one process, %d outlier field(s)): %d iterations, %.1f s\n%s", run_id,
             len(fields), iterations, elapsed, stage_table(out.stages, elapsed))
    return out


def _with_earlier_cfcache(rec: CasaRecords, final: str) -> CasaRecords:
    """An A-projection run without a cfcache name uses `<imagename>.cf`, as tclean does: when an
    earlier run left it, this run reads it where it is (tclean reuses it too) instead of staging a
    new one that could not be published over it."""
    earlier = final + ".cf"
    if not str(rec.gridding.get("gridder", "")).startswith("awpr") or rec.gridding.get("cfcache"):
        return rec
    if not (os.path.isdir(earlier) and os.listdir(earlier)):
        return rec
    out = rec.model_copy(deep=True)
    out.gridding["cfcache"] = earlier
    return out


def _part_log_path(staging: str, part: int) -> str:
    """Where a remote part's CASA log goes: the run's logs folder, kept when the run fails."""
    return os.path.join(staging, "logs", f"casa-part{part + 1}.log")


def _close_quietly(backend: Any) -> None:
    try:
        backend.close()
    except Exception as exc:  # a lost worker has nothing left to close
        log.warning("closing part imagers: %s", exc)


def _discard(staging: str, run_id: str) -> None:
    """Drop a failed run's images; keep its part logs where CASA logs live, for the post-mortem."""
    logs = os.path.join(staging, "logs")
    if os.path.isdir(logs):
        try:
            kept = os.path.join(str(default_log_dir()), f"continuum-{run_id}")
            shutil.move(logs, kept)
            log.warning("continuum run %s failed; its part logs are in %s", run_id, kept)
        except Exception as exc:  # the logs are a courtesy; the run's error is what matters
            log.warning("continuum run %s: could not keep the part logs: %s", run_id, exc)
    shutil.rmtree(staging, ignore_errors=True)


def _savemodel(rec: CasaRecords) -> str:
    """tclean's savemodel as the user gave it (the bridge keeps it in every MS's selection)."""
    kinds = {str(sel.get("savemodel", "none")) for sel in rec.selection.values()}
    kinds.discard("none")
    return kinds.pop() if kinds else "none"


def _without_model_writes(rec: CasaRecords) -> CasaRecords:
    """The records of the loop when the model is saved after it: no part writes to any MS.

    The parts hold row ranges of the SAME MeasurementSet; letting each write its rows' model in
    the last major cycle (CASA's own parallel mode) means several processes writing one table,
    and the first of them adding the MODEL_DATA column while the others read it. One writer
    after the loop (`_save_model`) is tclean's own path whenever the model cannot be saved in the
    loop (auto-masking, nsigma), and gives the same visibilities: the model is the final one.
    """
    out = rec.model_copy(deep=True)
    for sel in out.selection.values():
        sel.update(readonly=True, usescratch=False, savemodel="none")
    out.iteration["savemodel"] = "none"
    return out


def _save_model(rec: CasaRecords, staged_name: str, staging: str, savemodel: str, run_id: str) -> None:
    """Write the final model into the MeasurementSet(s) from this process, the only writer."""
    t = time.perf_counter()
    # Without the loop's read-only flags: checkselectionparams derives them from savemodel again.
    selection = cp.check_selection({key: {k: v for k, v in sel.items() if k not in ("readonly", "usescratch")}
                                    for key, sel in rec.selection.items()})
    staged = rec.with_imagename(staged_name)
    save_model(selection, staged.image, staged.gridding, staged.normalization,
               workdir=os.path.join(staging, "savemodel"))
    log.info("continuum run %s: model saved (savemodel=%r) in %.1f s", run_id, savemodel, time.perf_counter() - t)


def _copy_earlier_products(final: str, staged_name: str, rec: CasaRecords) -> list[str]:
    """Copy the earlier run's images into the staging folder; returns their suffixes.

    tclean's restart=True: the imagers and the deconvolver open images that exist instead of
    making new ones, so the model (and mask, PSF, residual) on disk is where this run continues.
    """
    copied = []
    for path in existing_products(final, rec):
        suffix = path[len(final):]
        shutil.copytree(path, staged_name + suffix, symlinks=True)
        copied.append(suffix)
    if copied:
        log.info("continuing from the images of an earlier run: %s", ", ".join(copied))
    return copied


def _publish(staging: str, base: str, parent: str, keep_partimages: bool,
             replace: list[str] = ()) -> list[str]:
    """Rename the finished products into place (same folder, so each rename is atomic).

    Every destination is checked before the first rename, so a clash leaves no half-published set.
    The earlier run's products this run continued from (`replace`, suffixes) and an earlier
    folder of part images are replaced (atomic_files.put_set_in_place: the old ones go into the
    staging folder and are deleted with it).
    """
    names = [n for n in sorted(os.listdir(staging))
             if n.startswith(base + ".") and (keep_partimages or not n.endswith(WORKDIRECTORY))]
    replaceable = {base + s for s in replace} | {base + WORKDIRECTORY}
    clashes = [os.path.join(parent, n) for n in names
               if os.path.lexists(os.path.join(parent, n)) and n not in replaceable]
    if clashes:
        raise FileExistsError(f"{', '.join(clashes)} appeared while the run was going; nothing was "
                              "published - remove them and run again")
    moves = [(os.path.join(staging, name), os.path.join(parent, name)) for name in names]
    put_set_in_place(moves, aside=os.path.join(staging, ".replaced"))
    products = [dst for _, dst in moves if not dst.endswith(WORKDIRECTORY)]
    shutil.rmtree(staging, ignore_errors=True)
    return products


def _shares_images(serial: bool, nparts: int) -> bool:
    """Whether the one part images straight onto the products, as serial tclean's imager does.

    Only when that part lives in the coordinator's own process. casacore table locks belong to a
    process: the coordinator's deconvolver keeps a read lock on the model after a minor cycle
    (casatools offers no call to drop it), and a part imager in another process that shared the
    model would wait for its write lock forever (seen with one worker: stuck in the second major
    cycle). A remote part therefore gets its own part images, as in CASA's parallel imager, and
    the normalizer copies the model to it and gathers its residual back.
    """
    return serial and nparts == 1


def _run(rec: CasaRecords, backend: Any, progress: _Progress, n: int, run_id: str, staging: str,
         serial: bool, clock: StageClock) -> dict[str, Any]:
    imagename = rec.imagename

    # 1. partition and global coordinates.
    with clock.stage("partition and coordinates"):
        selection = cp.check_selection(rec.selection)
        gridding = rec.gridding
        if cp.uses_cfcache(gridding) and not gridding.get("cfcache"):
            # tclean's default cache name; staged with the products and published beside them.
            gridding = dict(gridding, cfcache=imagename + ".cf")
        # One part holds the whole selection, so its imager derives the very coordinate system
        # the coordinator would (same selection, same image parameters): defining the image a
        # second time here would only cost a pass over the MS's metadata. The A-projection cache,
        # though, is filled by the coordinator's imager (global_coordinates) in every case.
        needs_global = n > 1 or cp.uses_cfcache(gridding)
        csys = cp.global_coordinates(selection, rec.image, gridding) if needs_global else None
        row_parts = cp.partition_rows(selection, n)
    shared = _shares_images(serial, n)
    part_names = [imagename] if shared else [cp.part_image_name(imagename, k) for k in range(n)]
    if not shared:
        cp.part_workdir(imagename).mkdir(parents=True, exist_ok=True)
    specs = []
    for k in range(n):
        image = dict(rec.image, imagename=part_names[k])
        if csys is not None:
            image["csys"] = encode_record(csys)
        part_gridding = dict(gridding, imagename=part_names[k])
        workdir = os.path.join(staging, f"part{k + 1}")
        specs.append(cp.PartSpec(run_id=run_id, part=k, nparts=n, selection=row_parts[k], image=image,
                                 gridding=part_gridding, weighting=rec.weighting, workdir=workdir,
                                 log_dir=None if serial else os.path.join(staging, "logs")))
    clock.on_parts("open parts", lambda: backend.open(
        specs, serial_layout=shared, normalization=rec.normalization if shared else None))

    niter = rec.niter
    with clock.stage("open parts"):
        coord = CoordinatorTools(imagename=imagename, normalization=rec.normalization,
                                 deconvolution=rec.deconvolution, iteration=rec.iteration,
                                 part_images=None if shared else part_names,
                                 with_deconvolver=niter > 0 or rec.restoration, with_iterbot=niter > 0)
    try:
        # 2. weight density summed over all parts (one part already holds the full density).
        if _needs_weight_density_sum(n, rec) and rec.weighting.get("multifield"):
            with clock.stage("weight density"):
                scratch = os.path.join(staging, "weightdensity", os.path.basename(imagename))
                density = cp.mosaic_weight_density(selection, decode_record(specs[0].image), gridding,
                                                   rec.weighting, scratch)
            clock.on_parts("weight density", lambda: backend.run(Operation.SET_WEIGHT_DENSITY, path=density))
            shutil.rmtree(os.path.dirname(scratch), ignore_errors=True)
        elif _needs_weight_density_sum(n, rec):
            clock.on_parts("weight density", lambda: backend.run(Operation.WEIGHT_DENSITY))
            with clock.stage("weight density"):
                scratch = os.path.join(staging, "weightdensity", os.path.basename(imagename))
                sumgrid = coord.gather_weight_density(scratch)
            clock.on_parts("weight density", lambda: backend.run(Operation.SET_WEIGHT_DENSITY, path=sumgrid))
            with clock.stage("weight density"):
                coord.weight_density_loaded(scratch)

        # 3.-6. PSF, PB, dirty image, masks, convergence, minor and major cycles, restore, pbcor.
        steps = _ContinuumSteps(rec, backend, coord, progress, clock)
        run_major_minor(steps, niter, calcpsf=rec.calcpsf, calcres=rec.calcres, restoration=rec.restoration,
                        pbcor=rec.pbcor)
    finally:
        coord.close()
    return {"iterations": int(steps.summary.get("iterdone", 0)), "major_cycles": steps.major_count,
            "stopcode": steps.stopcode, "stop_reason": steps.reason, "summary": steps.summary}


class _ContinuumSteps:
    """The continuum's imaging steps (engine.major_minor.ImagingSteps): PSF and major cycles on
    every row part, gathered and normalized by the coordinator's tools, which also hold the masks,
    the convergence checks and the minor cycle.

    Every step is timed on the StageClock under the stage names the result sums (ContinuumResult's
    psf_s, major_cycle_s, minor_cycle_s, ...), and every cycle is one CycleReport with its
    major-cycle and minor-cycle seconds.
    """

    def __init__(self, rec: CasaRecords, backend: Any, coord: CoordinatorTools, progress: _Progress,
                 clock: StageClock) -> None:
        self.rec = rec
        self.backend = backend
        self.coord = coord
        self.progress = progress
        self.clock = clock
        self.major_count = 0  # the major cycles after minor cycles: what nmajor counts
        self.major_s = 0.0  # this cycle's major cycle (none: 0)
        self.minor_s = 0.0  # this cycle's minor cycle, mask updates and convergence checks
        self.state: ConvergenceState | None = None
        self.stopcode = 0
        self.reason: str | None = None
        self.summary: dict[str, Any] = {}
        self._checks_from: float | None = None
        self._mask_updated = False

    def make_psf(self) -> None:
        self.clock.on_parts("psf", lambda: self.backend.run(Operation.MAKE_PSF))
        with self.clock.stage("psf gather"):
            self.coord.normalize_psf()

    def make_pb(self) -> None:
        # One part makes it, as CASA's parallel imager: the PB comes from the image's coordinates, not the rows.
        self.clock.on_parts("pb", lambda: self.backend.run(Operation.MAKE_PB, parts=[0]))
        with self.clock.stage("pb"):
            self.coord.normalize_pb()

    def major_cycle(self, *, clean_cycle: bool) -> None:
        if clean_cycle:
            self.major_count += 1
        t_major = time.perf_counter()
        last = self.coord.is_last_cycle()
        with self.clock.stage("scatter model", cycle=self.major_count):
            self.coord.before_major_cycle()
        self.clock.on_parts("major cycle on parts", lambda: self.backend.run(Operation.MAJOR_CYCLE, lastcycle=last),
                            cycle=self.major_count)
        with self.clock.stage("gather residual", cycle=self.major_count):
            self.coord.after_major_cycle()
        self.major_s = time.perf_counter() - t_major

    def report_dirty_image(self, *, cleaning: bool) -> None:
        if not cleaning:
            # No iteration control to ask: the peak is read from the residual image.
            self.progress.cycle(0, 0, image_peak(_residual_name(self.rec.imagename, self.rec)), 0.0,
                                self.major_s, 0.0)

    def check_convergence(self) -> int:
        self._start_checks()
        self.state = self.coord.has_converged(self.major_count)
        if self._mask_updated:
            self._end_checks()
        return self.state.stopcode

    def update_mask(self) -> None:
        self._start_checks()
        self.coord.update_mask()
        self._mask_updated = True

    def _start_checks(self) -> None:
        if self._checks_from is None:
            self._checks_from = time.perf_counter()

    def _end_checks(self) -> None:
        # One "mask and convergence" stage per cycle: from its first check or mask update to the
        # check after the mask update (before the loop: converged? -> masks -> converged?).
        seconds = time.perf_counter() - self._checks_from
        self.clock.add("mask and convergence", seconds, cycle=self.major_count)
        self.minor_s += seconds
        self._checks_from = None
        self._mask_updated = False

    def minor_cycle(self) -> int:
        t_minor = time.perf_counter()
        with self.clock.stage("minor cycle", cycle=self.major_count):
            minor = self.coord.minor_cycle()
        self.minor_s = time.perf_counter() - t_minor
        self.major_s = 0.0
        return minor.iterations

    def report_cycle(self, cycle: int, stopcode: int) -> None:
        state = self.state
        if cycle == 0:
            # Before the first minor cycle: nothing cleaned yet, and the stop (if any) is told by stop().
            self.progress.cycle(0, 0, state.peak_residual, state.model_flux, self.major_s, self.minor_s)
        else:
            self.progress.cycle(cycle, self.coord.iterations_done(), state.peak_residual, state.model_flux,
                                self.major_s, self.minor_s, state.stopcode, state.reason)

    def end_cleaning(self, stopcode: int) -> None:
        self.stopcode, self.reason = self.state.stopcode, self.state.reason
        self.progress.stop(self.stopcode, self.reason)
        self.summary = self.coord.summary()

    def restore(self) -> None:
        with self.clock.stage("restore"):
            self.coord.restore()

    def pbcor(self) -> None:
        with self.clock.stage("pbcor"):
            self.coord.pbcor()


def _needs_weight_density_sum(nparts: int, rec: CasaRecords) -> bool:
    """Briggs/uniform weights depend on the density of ALL the data; natural ones do not."""
    return nparts > 1 and rec.weighting["type"] not in ("natural", "radial")


def _residual_name(imagename: str, rec: CasaRecords) -> str:
    return imagename + first_term(RESIDUAL, rec.deconvolver)
