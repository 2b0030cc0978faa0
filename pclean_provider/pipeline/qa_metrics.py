"""QA metrics on plain numpy arrays (no CASA here, so every rule is unit-testable).

Robust statistics throughout: an image's noise is estimated from the median absolute
deviation, because sources and clean artefacts are exactly the outliers a plain standard
deviation would let in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pclean_provider.pipeline.qa_models import Limits

MAD_TO_SIGMA = 1.4826


def robust_sigma(values: np.ndarray, clip_sigma: float = 5.0, iterations: int = 3) -> float | None:
    """MAD-based standard deviation of the finite values, after iterative clipping of outliers."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 8:
        return None
    for _ in range(iterations):
        med = np.median(v)
        sigma = MAD_TO_SIGMA * np.median(np.abs(v - med))
        if sigma == 0:
            return 0.0
        kept = v[np.abs(v - med) <= clip_sigma * sigma]
        if kept.size == v.size or kept.size < 8:
            break
        v = kept
    med = np.median(v)
    return float(MAD_TO_SIGMA * np.median(np.abs(v - med)))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a 2-D boolean mask by a disc of ``radius`` pixels (shifts, no scipy needed)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    out = mask.copy()
    nx, ny = mask.shape
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            xs_dst = slice(max(dx, 0), nx + min(dx, 0))
            xs_src = slice(max(-dx, 0), nx + min(-dx, 0))
            ys_dst = slice(max(dy, 0), ny + min(dy, 0))
            ys_src = slice(max(-dy, 0), ny + min(-dy, 0))
            out[xs_dst, ys_dst] |= mask[xs_src, ys_src]
    return out


def emission_free(
    plane: np.ndarray,
    valid: np.ndarray,
    clean_mask: np.ndarray | None,
    emission_sigma: float,
    grow_pixels: int,
) -> np.ndarray:
    """Pixels of one plane that carry no emission: valid, outside the clean mask, away from sources.

    Sources are found as pixels above ``emission_sigma`` robust sigmas and grown by about a
    beam, so that their sidelobes and wings do not raise the noise estimate.
    """
    free = valid & np.isfinite(plane)
    if clean_mask is not None:
        free &= ~dilate(clean_mask > 0.5, grow_pixels)
    sigma = robust_sigma(plane[free])
    if sigma:
        bright = np.abs(plane) > emission_sigma * sigma
        free &= ~dilate(bright & valid, grow_pixels)
    return free


def beam_outliers(
    majors: Sequence[float | None],
    minors: Sequence[float | None],
    freqs_hz: Sequence[float],
    n_sigma: float,
    min_fraction: float,
) -> list[int]:
    """Channels whose beam deviates from the others (robust outlier test).

    A beam scales as 1/frequency, so beams are first scaled to a common frequency; a channel
    is deviant when its scaled major or minor axis is more than ``n_sigma`` MAD-sigmas *and*
    more than ``min_fraction`` away from the median. A channel with no beam at all, while
    others have one, is deviant too (an empty or failed channel).
    """
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    have = np.array([m is not None and n is not None for m, n in zip(majors, minors, strict=True)])
    if not have.any():
        return []
    ref = float(np.median(freqs[have])) if np.all(freqs[have] > 0) else 1.0
    scale = np.where(freqs > 0, freqs / ref, 1.0) if ref != 1.0 else np.ones_like(freqs)
    deviant = set(np.flatnonzero(~have).tolist())
    for axis in (majors, minors):
        values = np.array([a if a is not None else np.nan for a in axis], dtype=np.float64) * scale
        good = values[have]
        med = float(np.median(good))
        mad_sigma = MAD_TO_SIGMA * float(np.median(np.abs(good - med)))
        limit = max(n_sigma * mad_sigma, min_fraction * abs(med))
        for chan in np.flatnonzero(have):
            if abs(values[chan] - med) > limit:
                deviant.add(int(chan))
    return sorted(deviant)


def score_from_limits(value: float | None, limits: Limits) -> float:
    """Map a metric value to [0, 1] through the five limit points (linear in between)."""
    if value is None or not math.isfinite(value):
        return 0.0
    xs = [limits.ideal, limits.good, limits.fair, limits.poor, limits.worst]
    ys = [1.0, 0.9, 0.66, 0.33, 0.0]
    if xs[0] > xs[-1]:  # higher is better: flip so that np.interp sees increasing x
        xs, ys = xs[::-1], ys[::-1]
    return float(np.clip(np.interp(value, xs, ys), 0.0, 1.0))


def expected_flux(flux_ref_jy: float, ref_freq_hz: float, freq_hz: float, spectral_index: float) -> float:
    """A power-law source's flux at ``freq_hz`` (S = S0 (f / f0)^alpha)."""
    if ref_freq_hz <= 0 or freq_hz <= 0:
        return flux_ref_jy
    return float(flux_ref_jy * (freq_hz / ref_freq_hz) ** spectral_index)


def theoretical_rms_per_channel(
    chan_centres_hz: np.ndarray,
    chan_width_hz: float,
    ms_freqs_hz: np.ndarray,
    ms_widths_hz: np.ndarray,
    ms_weight_sum: np.ndarray,
    sigma_unit_weight: float,
) -> np.ndarray:
    """Natural-weight point-source noise for each image channel (Jy/beam).

    Each MS channel contributes its weight sum in proportion to how much of its bandwidth
    falls inside the image channel, which is how gridding with channel binning spreads it.
    The noise is sigma_unit / sqrt(sum of weights). Channels that get no weight give inf.
    """
    out = np.full(len(chan_centres_hz), np.inf)
    lo_ms = ms_freqs_hz - ms_widths_hz / 2
    hi_ms = ms_freqs_hz + ms_widths_hz / 2
    for i, f in enumerate(chan_centres_hz):
        lo, hi = f - chan_width_hz / 2, f + chan_width_hz / 2
        overlap = np.clip(np.minimum(hi, hi_ms) - np.maximum(lo, lo_ms), 0, None)
        frac = np.divide(overlap, ms_widths_hz, out=np.zeros_like(overlap), where=ms_widths_hz > 0)
        wsum = float(np.sum(frac * ms_weight_sum))
        if wsum > 0:
            out[i] = sigma_unit_weight / math.sqrt(wsum)
    return out


def theoretical_rms_total(ms_weight_sum: np.ndarray, sigma_unit_weight: float) -> float:
    total = float(np.sum(ms_weight_sum))
    return sigma_unit_weight / math.sqrt(total) if total > 0 else math.inf


# --- the image grid: pixels across the beam, primary-beam coverage -----------------------------

# A fitted beam below this fraction of a pixel is not a measurement: the PSF fit had nothing to
# resolve (the 0.00" beams of an 8" grid), so it counts as no beam at all.
DEGENERATE_BEAM_PIXELS = 0.1


def pixels_per_beam(minor_arcsec: float | None, cell_arcsec: float) -> float:
    """Pixels across the beam's minor axis; 0 when there is no usable beam (missing or degenerate)."""
    if minor_arcsec is None or not math.isfinite(minor_arcsec) or minor_arcsec <= 0 or cell_arcsec <= 0:
        return 0.0
    ppb = minor_arcsec / cell_arcsec
    return 0.0 if ppb < DEGENERATE_BEAM_PIXELS else float(ppb)


def score_pixels_per_beam(ppb: float, low: float, high: float, target: float) -> float:
    """Score of the beam sampling: error outside [low, high], 1.0 from target to twice target.

    Between ``low`` and ``target`` the score rises from the bottom of suboptimal (0.66) to 1.0;
    between twice ``target`` and ``high`` it falls back to 0.66: finer cells cost memory and
    time but harm nothing. Outside, the score stays in the error band and drops further the
    further off the grid is, so the worst grids sort first in the report.
    """
    if not math.isfinite(ppb) or ppb <= 0:
        return 0.0
    if ppb < low:
        return 0.32 * ppb / low
    if ppb > high:
        return 0.32 * high / ppb
    xs = [low, target, max(target, min(2 * target, high)), high]
    ys = [0.66, 1.0, 1.0, 0.66]
    if xs[2] >= high:  # a template with a narrow band: no falling edge
        xs, ys = xs[:3], ys[:3]
    return float(np.interp(ppb, xs, ys))


def suggest_cell(minor_arcsec: float, per_beam: float) -> float:
    """A cell giving at least ``per_beam`` pixels across the minor axis, rounded down to 2 digits."""
    raw = minor_arcsec / per_beam
    if raw <= 0 or not math.isfinite(raw):
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(raw)) - 1)
    return math.floor(raw / scale + 1e-9) * scale


def format_cell(arcsec: float) -> str:
    """A cell as tclean takes it ("0.34arcsec"), without float noise."""
    return f"{float(f'{arcsec:.3g}'):g}arcsec"


def good_imsize(n: float) -> int:
    """Smallest even size >= n whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    size = max(2, int(math.ceil(n - 1e-9)))
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1 and size % 2 == 0:
            return size
        size += 1


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0, :], a[-1, :], a[:, 0], a[:, -1]])


def _border_xy(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.concatenate([np.zeros(ny), np.full(ny, nx - 1), np.arange(nx), np.arange(nx)])
    ys = np.concatenate([np.arange(ny), np.arange(ny), np.zeros(nx), np.full(nx, ny - 1)])
    return xs, ys


@dataclass
class PbCoverage:
    """How far an image reaches into the primary beam, from one plane of the product's .pb.

    ``edge`` is the largest .pb on the image border: where the border comes closest to the
    pointing centre (the mid-points of the edges for a centred pointing). When it is above the
    required level, part of that level's circle lies outside the image. The primary beam is then
    taken as a Gaussian through the centre value and that edge value to say how large the image
    has to be; otherwise its FWHM is measured directly as the area above half the peak.
    """

    peak: float
    peak_xy: tuple[int, int]
    edge: float
    edge_xy: tuple[int, int]
    fwhm_pix: float | None
    fwhm_measured: bool  # False: extrapolated through the Gaussian
    needed_imsize: list[int] | None  # None: the edge already reaches the level (or no estimate)


def gaussian_radius(peak: float, value: float, radius: float, level: float) -> float | None:
    """Radius where a centred Gaussian through (0, peak) and (radius, value) falls to ``level``.

    None when the two points do not define a falling Gaussian (flat or rising profile).
    """
    if not (peak > value > 0) or radius <= 0 or level <= 0:
        return None
    if level >= peak:
        return 0.0
    # peak * exp(-r^2 / (2 s^2)): ln(peak / value) = radius^2 / (2 s^2)
    two_s2 = radius**2 / math.log(peak / value)
    return math.sqrt(two_s2 * math.log(peak / level))


# Above this fraction of the peak at the image edge, the image sees only the flat top of the
# primary beam, whose shape there says little about its width (a real beam is not a Gaussian):
# no size is extrapolated from it.
PB_EXTRAPOLATION_MAX = 0.98


def size_reaching(fwhm_pix: float, level: float) -> float:
    """Diameter (pixels) at which a Gaussian primary beam of that FWHM falls to ``level``."""
    return fwhm_pix * math.sqrt(math.log(1.0 / level) / math.log(2.0))


def pb_coverage(pb: np.ndarray, valid: np.ndarray, level: float = 0.5) -> PbCoverage | None:
    """Coverage of one (x, y) .pb plane; pixels the imager masked (below its pblimit) count as 0.

    None when the plane holds no positive value (no primary beam to judge). When the edge is
    almost at the peak (a tiny image), ``fwhm_pix`` and ``needed_imsize`` stay None.
    """
    data = np.where(valid & np.isfinite(pb), pb, 0.0)
    nx, ny = data.shape
    if data.size == 0 or not np.any(data > 0):
        return None
    px, py = np.unravel_index(int(np.argmax(data)), data.shape)
    peak = float(data[px, py])
    border = _border(data)
    bx, by = _border_xy(nx, ny)
    i = int(np.argmax(border))
    edge, ex, ey = float(border[i]), int(bx[i]), int(by[i])
    half = 0.5 * peak
    needed = None
    if edge <= level and edge < half:
        # The half-power region lies inside the image: measure it (any shape, e.g. a mosaic's).
        fwhm_pix = 2.0 * math.sqrt(float(np.count_nonzero(data >= half)) / math.pi)
        measured = True
    elif edge > PB_EXTRAPOLATION_MAX * peak:
        fwhm_pix, measured = None, False
    else:
        r_edge = math.hypot(ex - px, ey - py)
        r_half = gaussian_radius(peak, edge, r_edge, half)
        fwhm_pix = 2.0 * r_half if r_half is not None else None
        measured = False
    if edge > level and fwhm_pix is not None:
        r_level = gaussian_radius(peak, edge, math.hypot(ex - px, ey - py), level)
        if r_level is not None:
            # The image must reach r_level from the pointing centre on every side.
            cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
            needed = [
                max(n, good_imsize(2.0 * (r_level + abs(p - c)) + 1))
                for n, p, c in ((nx, px, cx), (ny, py, cy))
            ]
    return PbCoverage(peak, (int(px), int(py)), edge, (ex, ey), fwhm_pix, measured, needed)


def primary_beam_above(pb_peaks: Sequence[float | None], limit: float) -> list[int]:
    """Channels whose primary beam peaks above `limit`.

    A normalised primary beam never exceeds 1; a channel above it (seen in serial tclean's own
    mosaic cubes, where the convolution functions depend on how CASA chunks the band) scales every
    flux there by the wrong factor after primary-beam correction.
    """
    return [c for c, peak in enumerate(pb_peaks) if peak is not None and math.isfinite(peak) and peak > limit]


def weight_jumps(sumwt: Sequence[float], max_ratio: float) -> list[int]:
    """Channels whose sum of weights differs from BOTH its weighted neighbours by more than `max_ratio`.

    The same data give neighbouring channels nearly the same sum of weights, so a channel apart
    from both sides means its data were gridded differently (an edge channel mapped otherwise, a
    chunk of the band weighted on its own). A step between two runs of channels (spws of
    different widths) moves no channel away from both neighbours and is not flagged; channels
    with no weight at all (flagged or outside the data) are left out.
    """
    w = [float(x) for x in sumwt]
    out = []
    for c, here in enumerate(w):
        if here <= 0 or not math.isfinite(here):
            continue
        sides = [w[k] for k in (c - 1, c + 1) if 0 <= k < len(w) and w[k] > 0 and math.isfinite(w[k])]
        if sides and all(max(here, s) / min(here, s) > max_ratio for s in sides):
            out.append(c)
    return out
