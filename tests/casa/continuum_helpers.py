"""Shared pieces of the continuum tests: parameters, the serial tclean reference, comparisons.

Tolerances (stated once, used everywhere):
- niter=0: PSF, residual and image within 1e-5 of the peak; sum of weights within 1e-5 relative.
  The only difference from serial tclean is the order in which float32 grids of the parts are
  added (measured: ~2e-7 of the peak), so 1e-5 leaves room for other data without hiding a real
  error (a missing part or an unnormalised weight is > 1e-2).
- cleaned to a threshold: image within 2 % of the peak. The minor cycle is deterministic, but a
  component picked at a different pixel after a rounding tie changes everything after it; the
  measured difference is ~1e-6.
- restoring beam: major/minor within 0.2 %, position angle within 0.5 degree (the published
  pclean is 21 % off; the fit of identical PSFs agrees to ~1e-6).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from tests.image_compare import beams, max_abs_diff_over_peak, pixels

BASE = dict(specmode="mfs", imsize=[96, 96], cell="8arcsec", nterms=2, scales=[0, 4, 10], robust=0.5,
            pblimit=0.2)
CLEAN = dict(niter=300, threshold="40mJy")

NITER0_TOL = 1e-5
SUMWT_TOL = 1e-5  # float32 sums of ~1e5 weights added in another order: measured 1.1e-6
CLEAN_TOL = 0.02
BEAM_TOL = 0.002
PA_TOL_DEG = 0.5


def kwargs_for(vis: str, deconvolver: str, weighting: str, niter: int) -> dict:
    kw = dict(BASE, vis=str(vis), deconvolver=deconvolver, weighting=weighting)
    kw.update(CLEAN if niter else dict(niter=0))
    return kw


def product_suffixes(imagename: str) -> set[str]:
    """'.image', '.psf.tt0', ... of the CASA images under one name (not logs, not progress)."""
    out = set()
    for path in glob.glob(glob.escape(imagename) + ".*"):
        suffix = path[len(imagename):]
        if os.path.isdir(path) and not suffix.endswith(".workdirectory"):
            out.add(suffix)
    return out


def terms(deconvolver: str, kind: str) -> list[str]:
    if deconvolver != "mtmfs":
        return [f".{kind}"]
    n = {"psf": 3, "sumwt": 3}.get(kind, 2)
    return [f".{kind}.tt{i}" for i in range(n)]


def assert_beams_match(ours: str, ref: str) -> None:
    b1, b2 = beams(ours), beams(ref)
    assert b1 and b2, f"no restoring beam: {ours} {b1}, {ref} {b2}"
    (maj1, min1, pa1), (maj2, min2, pa2) = b1[0], b2[0]
    assert abs(maj1 - maj2) / maj2 < BEAM_TOL, f"beam major {maj1:.4f} vs tclean {maj2:.4f} arcsec"
    assert abs(min1 - min2) / min2 < BEAM_TOL, f"beam minor {min1:.4f} vs tclean {min2:.4f} arcsec"
    assert abs(pa1 - pa2) < PA_TOL_DEG, f"beam pa {pa1:.3f} vs tclean {pa2:.3f} deg"


def beam_error(ours: str, ref: str) -> tuple[float, float]:
    """(largest relative axis error, position angle difference in degrees)."""
    (maj1, min1, pa1), (maj2, min2, pa2) = beams(ours)[0], beams(ref)[0]
    return max(abs(maj1 - maj2) / maj2, abs(min1 - min2) / min2), abs(pa1 - pa2)


def assert_sumwt_match(ours: str, ref: str, deconvolver: str) -> None:
    # Higher Taylor terms of the sum of weights are small differences of large sums (weights
    # times (nu - nu0)/nu0), so every term is compared relative to the zeroth.
    scale = None
    for suffix in terms(deconvolver, "sumwt"):
        a, b = pixels(ours + suffix), pixels(ref + suffix)
        scale = scale if scale is not None else float(np.max(np.abs(b)))
        assert np.max(np.abs(a - b)) <= SUMWT_TOL * scale, f"sum of weights {suffix}: {a.ravel()} vs {b.ravel()}"


def assert_images_match(ours: str, ref: str, deconvolver: str, kinds: list[str], tol: float) -> dict:
    diffs = {}
    for kind in kinds:
        for suffix in terms(deconvolver, kind):
            diffs[suffix] = max_abs_diff_over_peak(ours + suffix, ref + suffix)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    assert not bad, f"differences over {tol:g} of the peak: {bad} (all: {diffs})"
    return diffs
