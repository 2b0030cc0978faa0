"""The synthesized beam a target's data will give, estimated from its weighted uv coverage.

tclean fits a Gaussian to the main lobe of the PSF it grids. The PSF is the Fourier transform of
the imaging weights, so its main lobe can be measured without gridding: along a direction d of the
sky, PSF(t) = sum_i w_i cos(2 pi t (u_i . d)) / sum_i w_i. We find where the PSF falls to one half
in directions 7.5 degrees apart and report twice the shortest and longest of those distances as
the FWHM of the minor and major axes (the longest's direction is the position angle). For a
uniformly filled disk this is the true half-power width of the main lobe; on the simulated arrays
measured so far a Gaussian fitted by tclean to the same lobe agrees to a few per cent in the minor
axis, the one the cell follows (bench/RESULTS.md).

The imaging weights follow tclean's schemes: natural (the data weights), uniform and Briggs (the
data weights divided by the gridded weight density of their uv cell, the cell being one over the
image's field of view), radial (weights grow with uv distance). A Gaussian uv taper multiplies in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
# Cap on the points in one PSF evaluation: beyond this the estimate no longer changes measurably
# and each evaluation costs more.
MAX_POINTS = 100_000
# Directions in which the PSF's half-power radius is measured.
DIRECTION_STEP_DEG = 7.5
# tclean fits its restoring beam to the PSF's main lobe above this level (its psfcutoff default).
PSF_CUTOFF = 0.35
# Half the side, in pixels, of the grid the main lobe is fitted on.
FIT_GRID_HALF = 24


@dataclass(frozen=True)
class BeamEstimate:
    major_arcsec: float
    minor_arcsec: float
    pa_deg: float
    points: int

    def as_list(self) -> list[float]:
        return [round(self.major_arcsec, 4), round(self.minor_arcsec, 4), round(self.pa_deg, 2)]


def imaging_weights(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, weighting: str, robust: float,
                    fov_rad: float, uvtaper_arcsec: float | None = None) -> np.ndarray:
    """Per-point imaging weights of ``weighting`` for an image ``fov_rad`` across (uv cell 1/fov)."""
    w = np.asarray(w, dtype=float)
    out = w.copy()
    if weighting in ("uniform", "briggs", "briggsabs", "briggsbwtaper", "superuniform") and len(w):
        cell = 1.0 / fov_rad
        # tclean grids each visibility and its conjugate; the density of a cell counts both.
        iu = np.floor(np.concatenate([u, -u]) / cell + 0.5).astype(np.int64)
        iv = np.floor(np.concatenate([v, -v]) / cell + 0.5).astype(np.int64)
        keys = iu * 4_000_003 + iv
        uniq, inverse = np.unique(keys, return_inverse=True)
        density = np.bincount(inverse, weights=np.concatenate([w, w]), minlength=len(uniq))
        per_point = density[inverse[: len(w)]]
        if weighting in ("uniform", "superuniform"):
            out = np.divide(w, per_point, out=np.zeros_like(w), where=per_point > 0)
        else:
            # Briggs: f^2 = (5 * 10^-R)^2 / (sum of squared cell densities / sum of weights).
            f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (float(np.sum(density ** 2)) / float(np.sum(density)))
            out = w / (1.0 + per_point * f2)
    elif weighting == "radial":
        out = w * np.hypot(u, v)
    if uvtaper_arcsec:
        # An image-plane Gaussian of FWHM theta is a uv Gaussian of FWHM 4 ln2 / (pi theta).
        fwhm_uv = 4.0 * math.log(2.0) / (math.pi * uvtaper_arcsec / ARCSEC_PER_RAD)
        out = out * np.exp(-4.0 * math.log(2.0) * (u ** 2 + v ** 2) / fwhm_uv ** 2)
    return out


def estimate_beam(u: np.ndarray, v: np.ndarray, weights: np.ndarray) -> BeamEstimate | None:
    """The PSF main lobe's FWHM along its axes, from uv points in wavelengths and imaging weights;
    None when there is nothing to estimate from (no points, or all weights zero)."""
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    w = np.asarray(weights, dtype=float)
    keep = (w > 0) & np.isfinite(u) & np.isfinite(v) & ((u != 0) | (v != 0))
    u, v, w = u[keep], v[keep], w[keep]
    if len(w) == 0:
        return None
    if len(w) > MAX_POINTS:
        # A seeded random subset: the points come in dumps of baselines, and a regular step sharing
        # a factor with their count would keep only some baselines; a fixed seed keeps it repeatable.
        keep_idx = np.sort(np.random.default_rng(0).choice(len(w), MAX_POINTS, replace=False))
        u, v, w = u[keep_idx], v[keep_idx], w[keep_idx]
    total = float(w.sum())
    # Second moments about the origin (each point stands for itself and its conjugate): the
    # curvature of the PSF's peak, which seeds the search for its half-power points.
    cov = np.array([[np.sum(w * u * u), np.sum(w * u * v)], [np.sum(w * u * v), np.sum(w * v * v)]]) / total

    def half_width(direction: np.ndarray) -> float:
        proj = 2.0 * math.pi * (u * direction[0] + v * direction[1])

        def psf(t: float) -> float:
            return float(np.sum(w * np.cos(proj * t)) / total)

        spread = float(direction @ cov @ direction)
        # Start from the Gaussian with the same curvature at the peak, then bracket and bisect.
        guess = math.sqrt(math.log(2.0) / (2.0 * math.pi ** 2 * max(spread, 1e-30)))
        lo, hi = 0.0, guess
        while psf(hi) > 0.5 and hi < 64 * guess:
            lo, hi = hi, hi * 1.5
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if psf(mid) > 0.5:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-3 * hi:
                break
        return 0.5 * (lo + hi)

    # The half-power radius every few degrees (the PSF is symmetric, so half a turn suffices)
    # bounds the main lobe; it sizes the grid on which the lobe is then fitted.
    angles = np.radians(np.arange(0.0, 180.0, DIRECTION_STEP_DEG))
    radii = [half_width(np.array([math.sin(a), math.cos(a)])) for a in angles]
    fitted = _fit_main_lobe(u, v, w, min(radii), max(radii))
    if fitted is not None:
        major, minor, pa = fitted
    else:
        i_max = int(np.argmax(radii))
        minor, major = 2.0 * min(radii) * ARCSEC_PER_RAD, 2.0 * max(radii) * ARCSEC_PER_RAD
        # Directions are measured from north (v) through east (u), as a position angle is.
        pa = (math.degrees(angles[i_max]) + 90.0) % 180.0 - 90.0
    return BeamEstimate(major_arcsec=major, minor_arcsec=minor, pa_deg=pa, points=len(w))


def _fit_main_lobe(u: np.ndarray, v: np.ndarray, w: np.ndarray, r_min: float, r_max: float):
    """(major, minor arcsec, pa deg) of a Gaussian fitted to the PSF's main lobe above PSF_CUTOFF,
    as tclean fits its restoring beam (psfcutoff 0.35); None if the lobe cannot be fitted.

    The PSF is evaluated on a small grid around the peak by a separable direct Fourier sum
    (cos(2 pi (u x + v y)) is the real part of a product of two phase factors, so the grid costs
    one complex matrix product), and the lobe's pixels connected to the peak are fitted by weighted
    least squares on the logarithm, centre and peak held at the origin and 1.
    """
    pixel = max(r_min / 4.0, 2.0 * r_max / FIT_GRID_HALF)
    axis = pixel * np.arange(-FIT_GRID_HALF, FIT_GRID_HALF + 1)
    phase_x = np.exp(2j * math.pi * np.outer(axis, u))  # x (east) pairs with u
    phase_y = np.exp(2j * math.pi * np.outer(v, axis))  # y (north) pairs with v
    grid = np.real((phase_x * w) @ phase_y) / float(w.sum())  # grid[ix, iy]
    c = FIT_GRID_HALF
    lobe = np.zeros(grid.shape, dtype=bool)
    stack = [(c, c)]
    while stack:
        i, j = stack.pop()
        if 0 <= i < grid.shape[0] and 0 <= j < grid.shape[1] and not lobe[i, j] and grid[i, j] > PSF_CUTOFF:
            lobe[i, j] = True
            stack.extend(((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)))
    ix, iy = np.nonzero(lobe)
    if len(ix) < 6 or lobe[0, :].any() or lobe[-1, :].any() or lobe[:, 0].any() or lobe[:, -1].any():
        return None
    x, y, val = axis[ix], axis[iy], grid[ix, iy]
    # ln P = -(a x^2 + 2 b x y + c y^2); weights P^2 make this close to a fit of P itself.
    design = np.stack([x * x, 2 * x * y, y * y], axis=1)
    weight = val ** 2
    coef, *_ = np.linalg.lstsq(design * weight[:, None], -np.log(val) * weight, rcond=None)
    quad = np.array([[coef[0], coef[1]], [coef[1], coef[2]]])
    eigval, eigvec = np.linalg.eigh(quad)  # ascending: the smaller curvature is the major axis
    if eigval[0] <= 0:
        return None
    major = 2.0 * math.sqrt(math.log(2.0) / eigval[0]) * ARCSEC_PER_RAD
    minor = 2.0 * math.sqrt(math.log(2.0) / eigval[1]) * ARCSEC_PER_RAD
    east, north = eigvec[0, 0], eigvec[1, 0]
    pa = (math.degrees(math.atan2(east, north)) + 90.0) % 180.0 - 90.0
    return major, minor, pa

