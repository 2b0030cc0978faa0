"""The coordinator's tools of a continuum run: one normalizer, one deconvolver, one iterbotsink.

The normalizer gathers the parts' images (weight density, PSF, residual) into the full image,
normalizes it, and scatters the model back; the deconvolver runs the minor cycle and the masks
on the gathered image; the iterbotsink owns every stopping rule (niter, cycleniter, threshold,
nsigma, nmajor, cyclefactor), so convergence is decided once for the whole data set, exactly as
in tclean, whatever the number of parts.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from typing import Any

from pydantic import BaseModel

from pclean_provider.casa.iteration import STOP_REASONS, iteration_summary
from pclean_provider.products import MASK

#: Where the mask that the last minor cycle used is kept while automasking grows the next one.
_PREV_MASK = ".prev" + MASK



class MinorCycleResult(BaseModel):
    iterations: int
    peak_residual: float | None = None
    model_flux: float | None = None


class ConvergenceState(BaseModel):
    stopcode: int
    peak_residual: float | None = None
    model_flux: float | None = None

    @property
    def stopped(self) -> bool:
        return self.stopcode > 0

    @property
    def reason(self) -> str | None:
        return STOP_REASONS.get(self.stopcode)


def _float(rec: dict, *keys: str) -> float | None:
    for key in keys:
        if key in rec:
            try:
                return float(rec[key])
            except (TypeError, ValueError):
                return None
    return None


class CoordinatorTools:
    """Normalizer + deconvolver + iterbotsink for one image field, on the coordinator."""

    def __init__(self, *, imagename: str, normalization: dict[str, Any], deconvolution: dict[str, Any],
                 iteration: dict[str, Any], part_images: list[str] | None, with_deconvolver: bool,
                 with_iterbot: bool) -> None:
        import casatools

        self.imagename = imagename
        self.deconvolution = deconvolution
        self.iteration = iteration
        self.normpars = copy.deepcopy(normalization)
        if part_images:
            self.normpars["partimagenames"] = list(part_images)
        self.ps = casatools.synthesisnormalizer()
        self.ps.setupnormalizer(normpars=self.normpars)
        self.sd = None
        self.ib = None
        self.model_flux: float | None = 0.0  # total model flux after the last minor cycle
        if with_deconvolver:
            self.sd = casatools.synthesisdeconvolver()
            self.sd.setupdeconvolution(decpars=deconvolution)
        if with_iterbot:
            self.ib = casatools.iterbotsink()
            self.ib.setupiteration(iterpars=iteration)

    # -- weighting -------------------------------------------------------------------------
    def gather_weight_density(self, scratch_name: str) -> str:
        """Sum the parts' weight densities; returns the summed grid every part must load.

        The sum is made by a normalizer of its own under `scratch_name` (a folder of its own),
        never under the run's imagename: there the gather would open the images a restarted run
        continues from, and the grid it then makes is refused by the parts ("Imaging weight
        calculation is requested for a data that was not selected", seen on every restart).
        """
        import casatools

        os.makedirs(os.path.dirname(scratch_name), exist_ok=True)
        ps = casatools.synthesisnormalizer()
        try:
            ps.setupnormalizer(normpars=dict(self.normpars, imagename=scratch_name))
            ps.gatherweightdensity()
            return str(ps.scatterweightdensity())
        finally:
            ps.done()

    @staticmethod
    def weight_density_loaded(scratch_name: str) -> None:
        """After every part has loaded the sum: drop it, and the PSF template the gather made beside it."""
        shutil.rmtree(os.path.dirname(scratch_name), ignore_errors=True)

    # -- psf and pb ------------------------------------------------------------------------
    def normalize_psf(self) -> None:
        self.ps.gatherpsfweight()
        self.ps.dividepsfbyweight()
        self.ps.divideweightbysumwt()
        if self.sd is not None:
            # Fits the PSF beam (and applies restoringbeam/psfcutoff) as tclean does.
            self.sd.checkrestoringbeam()
        else:
            self.ps.makepsfbeamset()

    def normalize_pb(self) -> None:
        self.ps.normalizeprimarybeam()

    # -- major cycle -----------------------------------------------------------------------
    def is_last_cycle(self) -> bool:
        if self.ib is None:
            return True
        return self.ib.cleanComplete(lastcyclecheck=True) > 0

    def before_major_cycle(self) -> None:
        self.ps.dividemodelbyweight()
        self.ps.scattermodel()

    def after_major_cycle(self) -> None:
        if self.ib is not None:
            self.ib.endmajorcycle()
        self.ps.gatherresidual()
        self.ps.divideresidualbyweight()
        self.ps.multiplymodelbyweight()

    # -- minor cycle, masks, convergence ---------------------------------------------------
    @property
    def automask(self) -> bool:
        return "auto" in str(self.deconvolution.get("usemask", ""))

    def update_mask(self) -> bool:
        return bool(self.sd.setupmask())

    def has_converged(self, major_count: int) -> ConvergenceState:
        self.ib.resetminorcycleinfo()
        initrec = self.sd.initminorcycle()
        self.ib.mergeinitrecord(initrec, 0)
        nmajor = int(self.iteration.get("nmajor", -1))
        reached = nmajor >= 0 and major_count >= nmajor
        stopcode = int(self.ib.cleanComplete(reachedMajorLimit=reached))
        if stopcode > 0 and self.automask:
            self._revert_automask()
        return ConvergenceState(stopcode=stopcode, peak_residual=_float(initrec, "peakresidual"),
                                model_flux=self.model_flux)

    def _revert_automask(self) -> None:
        # tclean keeps the mask that the last minor cycle really used, not the one grown after it.
        prev = self.imagename + _PREV_MASK
        if os.path.isdir(prev):
            shutil.rmtree(self.imagename + MASK, ignore_errors=True)
            shutil.move(prev, self.imagename + MASK)

    def minor_cycle(self) -> MinorCycleResult:
        controls = self.ib.getminorcyclecontrols()
        self.ib.resetminorcycleinfo()
        exrec = self.sd.executeminorcycle(iterbotrecord=controls)
        self.ib.mergeexecrecord(exrec, 0)
        if self.automask and os.path.isdir(self.imagename + MASK):
            prev = self.imagename + _PREV_MASK
            shutil.rmtree(prev, ignore_errors=True)
            shutil.copytree(self.imagename + MASK, prev)
        flux = None
        matrix = exrec.get("summaryminor")
        # Rows of CASA's minor-cycle summary: iterations, peak residual, model flux, ...
        if matrix is not None and getattr(matrix, "ndim", 0) == 2 and matrix.shape[0] >= 3 and matrix.shape[1]:
            flux = float(matrix[2, -1])
        self.model_flux = flux if flux is not None else self.model_flux
        return MinorCycleResult(iterations=int(exrec.get("iterdone", 0)),
                                peak_residual=_float(exrec, "peakresidual"), model_flux=flux)

    def iterations_done(self) -> int:
        if self.ib is None:
            return 0
        details = self.ib.getiterationdetails()
        return int(details.get("iterdone", 0))

    def summary(self) -> dict[str, Any]:
        return {} if self.ib is None else iteration_summary(self.ib)

    # -- products --------------------------------------------------------------------------
    def restore(self) -> None:
        self.sd.restore()

    def pbcor(self) -> None:
        self.sd.pbcor()

    def close(self) -> None:
        for tool in (self.sd, self.ps, self.ib):
            if tool is not None:
                with contextlib.suppress(Exception):
                    tool.done()
        self.sd = self.ps = self.ib = None


def image_peak(path: str) -> float | None:
    """Largest absolute pixel of an image (the peak residual when no iterbot is running)."""
    import casatools

    if not os.path.isdir(path):
        return None
    ia = casatools.image()
    try:
        ia.open(path)
        stats = ia.statistics(robust=False, verbose=False)
        return float(max(abs(stats["max"][0]), abs(stats["min"][0]))) if len(stats.get("max", [])) else None
    finally:
        ia.close()
