"""The one major/minor loop of every exact imaging mode, in task_tclean's order.

casatasks' task_tclean drives its imager (imagerhelpers/imager_base.py) through one fixed list of
steps, and the images match serial tclean only when that list is kept:

  PSF -> PB -> dirty image (a major cycle that does not count toward nmajor) ->
  converged? -> masks -> converged? ->
  { minor cycle -> major cycle (only when the minor cycle cleaned) -> masks -> converged? }
  -> restore -> pbcor

The loop ends on a stop code of the iteration control or on a minor cycle that cleaned nothing.
With niter=0 there is no iteration control: the dirty image is the result (restored when asked).
calcpsf=False takes the PSF and PB an earlier run left (neither is made), calcres=False its
residual (no dirty image). Because the order is tclean's, niter, cycleniter, cyclefactor,
threshold, nsigma, nmajor, masks and auto-multithresh act as they do in serial tclean, however
the work of each step is spread over the workers.

`run_major_minor` holds that order and nothing else. How each step runs is the business of an
`ImagingSteps` object, one per imaging mode:

- the cube (engine/cube/loop.py): sub-cube sessions on the workers do PSF, PB, major AND minor
  cycles; one iteration controller on the coordinator merges their records;
- the continuum (engine/continuum/run.py): row parts on the workers do PSF and major cycles; the
  coordinator's normalizer, deconvolver and iteration controller do normalisation, masks,
  convergence and the minor cycle.

A steps object keeps its own counters (the major cycles that count toward nmajor), stage timings
and progress records; the loop hands it the cycle number and the stop code.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ImagingSteps", "run_major_minor"]


class ImagingSteps(Protocol):
    """The named steps of one imaging run, as task_tclean asks them of its imager."""

    def make_psf(self) -> None:
        """The PSF, normalized, its beam fitted (tclean's makePSF)."""

    def make_pb(self) -> None:
        """The primary beam (makePB)."""

    def major_cycle(self, *, clean_cycle: bool) -> None:
        """Predict the model's visibilities and grid the new residual (runMajorCycle).

        clean_cycle=False is the dirty image, which does not count toward nmajor.
        """

    def report_dirty_image(self, *, cleaning: bool) -> None:
        """Progress hook: the first residual is there (made now, or left by an earlier run with
        calcres=False); `cleaning` says whether the loop goes on to clean it (niter > 0)."""

    def check_convergence(self) -> int:
        """The iteration control's stop code on the current residual (hasConverged); 0: go on."""

    def update_mask(self) -> None:
        """Set up the masks on the current residual (updateMask): user, PB or auto-multithresh."""

    def minor_cycle(self) -> int:
        """One minor cycle with the iteration control's limits (runMinorCycle); the iterations done."""

    def report_cycle(self, cycle: int, stopcode: int) -> None:
        """Progress hook after a convergence check: cycle 0 is the check before the first minor
        cycle, then one per minor cycle."""

    def end_cleaning(self, stopcode: int) -> None:
        """The loop is over with `stopcode` (0: a minor cycle cleaned nothing): the iteration
        control's summary (tclean's getSummary) is taken here, before the images are restored."""

    def restore(self) -> None:
        """The restored image (restoreImages)."""

    def pbcor(self) -> None:
        """The primary-beam-corrected image (pbcorImages)."""


def run_major_minor(steps: ImagingSteps, niter: int, *, calcpsf: bool = True, calcres: bool = True,
                    restoration: bool = True, pbcor: bool = False) -> int:
    """Run `steps` in task_tclean's order; returns the stop code (0 without cleaning, or when the
    last minor cycle cleaned nothing)."""
    if calcpsf:
        steps.make_psf()
        steps.make_pb()
    if calcres:
        steps.major_cycle(clean_cycle=False)
    steps.report_dirty_image(cleaning=niter > 0)
    stopcode = 0
    if niter > 0:
        stopcode = _clean(steps)
        steps.end_cleaning(stopcode)
    if restoration:
        steps.restore()
        if pbcor:
            steps.pbcor()
    return stopcode


def _clean(steps: ImagingSteps) -> int:
    # The first check gives the deconvolvers the residual's statistics that the mask set-up needs
    # (auto-multithresh grows its mask from them); its stop code is not used, as no mask is set up
    # yet. The second decides with the mask in place.
    steps.check_convergence()
    steps.update_mask()
    stopcode = steps.check_convergence()
    steps.report_cycle(0, stopcode)
    cycle = 0
    while not stopcode:
        iterations = steps.minor_cycle()
        if iterations:
            steps.major_cycle(clean_cycle=True)
        steps.update_mask()
        stopcode = steps.check_convergence()
        cycle += 1
        steps.report_cycle(cycle, stopcode)
        if not iterations:
            # tclean ends here even without a stop code: a minor cycle that cleaned nothing (e.g. in
            # an auto-mask with nothing left in it) gives no new residual to go on with.
            break
    return stopcode
