"""QA metrics on plain numpy arrays (no CASA here, so every rule is unit-testable).

Robust statistics throughout: an image's noise is estimated from the median absolute
deviation, because sources and clean artefacts are exactly the outliers a plain standard
deviation would let in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
