"""Run casatasks.tclean for one sub-cube and read back what it did.

A sub-cube is a plain serial tclean over a channel range of the full cube's CASA-defined grid
(see engine/cube/plan.py for why that reproduces the serial cube). Running tclean itself, rather than
re-driving synthesisimager, keeps every tclean behaviour (weighting adjustments, restoration,
pbcor, masks, stopping rules) exactly tclean's.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from pydantic import BaseModel

from pclean_provider import products
from pclean_provider.casa.runtime import import_casatasks


class TcleanRunError(RuntimeError):
    """tclean failed or wrote no image for a sub-cube."""


class TcleanSummary(BaseModel):
    iterations: int = 0
    nmajor_done: int = 0
    stop_code: int | None = None
    stop_reason: str = ""
    peak_residual: float | None = None


def run_tclean(kwargs: dict[str, Any], imagename: str, cwd: str) -> TcleanSummary:
    """tclean with these keywords, writing `imagename`.*, scratch files in `cwd`."""
    tclean = import_casatasks().tclean

    args = dict(kwargs)
    args["imagename"] = imagename
    # The return dict carries the iteration summary; fullsummary adds per-channel detail we do not need.
    args.setdefault("fullsummary", False)
    try:
        # tclean writes scratch tables (IMAGING_WEIGHT_*, temp images) into the cwd; one folder per
        # sub-cube keeps concurrent runs from colliding. A Dask worker runs one task at a time here.
        with contextlib.chdir(cwd):
            ret = tclean(**args)
    except Exception as err:  # tclean raises assorted types (RuntimeError, AssertionError, ...)
        raise TcleanRunError(f"tclean failed for {imagename}: {err}") from err
    if ret is False or not products.existing(imagename):
        raise TcleanRunError(f"tclean returned without products for {imagename} (returned {ret!r}); "
                             "see the sub-cube's CASA log")
    ret = ret if isinstance(ret, dict) else {}
    return TcleanSummary(
        iterations=int(ret.get("iterdone", 0) or 0),
        nmajor_done=int(ret.get("nmajordone", 0) or 0),
        stop_code=int(ret["stopcode"]) if ret.get("stopcode") is not None else None,
        stop_reason=str(ret.get("stopDescription", "") or ("no cleaning (niter=0)" if not args.get("niter") else "")),
        peak_residual=peak_abs(imagename + products.RESIDUAL),
    )


def restore_with_beam(kwargs: dict[str, Any], imagename: str, cwd: str, beam: str | list[str]) -> None:
    """Re-restore existing products with a given beam, the way tclean documents it.

    tclean with niter=0, calcres=False, calcpsf=False and restart=True reuses the model, residual
    and PSF on disk and only restores (and pb-corrects), with `beam` ('common' or explicit).
    """
    tclean = import_casatasks().tclean

    args = dict(kwargs)
    args.update(imagename=imagename, niter=0, calcres=False, calcpsf=False, restart=True,
                restoration=True, restoringbeam=beam, fullsummary=False)
    try:
        with contextlib.chdir(cwd):  # scratch tables, as in run_tclean
            tclean(**args)
    except Exception as err:
        raise TcleanRunError(f"restoring {imagename} with restoringbeam={beam!r} failed: {err}") from err
    if not os.path.isdir(imagename + products.IMAGE):
        raise TcleanRunError(f"restoring {imagename} with restoringbeam={beam!r} wrote no image; see the CASA log")


def peak_abs(image: str) -> float | None:
    """Largest absolute pixel value of an image (None when it does not exist)."""
    if not os.path.isdir(image):
        return None
    import casatools

    ia = casatools.image()
    try:
        ia.open(image)
        stats = ia.statistics(robust=False, verbose=False, list=False)
        if not len(stats.get("max", [])):
            return 0.0
        return float(max(abs(float(stats["max"][0])), abs(float(stats["min"][0]))))
    finally:
        ia.close()
        ia.done()
