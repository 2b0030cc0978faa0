"""Turn a product's metrics into scores with bands and messages people can act on."""

from __future__ import annotations

from pclean_provider.pipeline import qa_metrics as m
from pclean_provider.pipeline.qa_models import Limits, ProductMetrics, QaThresholds, Score, band_of

# Fixed scores for conditions that are not a matter of degree.
SCORE_NOTHING_CLEANED = 0.1
SCORE_DIVERGED = 0.3
SCORE_UNCLEANED_CHANNELS = 0.6
SCORE_HIT_NITER = 0.8


def _score(metric, value, unit, limits: Limits | None, applies_to, message, fixed=None) -> Score:
    score = fixed if fixed is not None else m.score_from_limits(value, limits)
    return Score(
        metric=metric,
        value=value,
        unit=unit,
        score=round(float(score), 4),
        band=band_of(score),
        applies_to=applies_to,
        message=message,
    )


def score_product(pm: ProductMetrics, t: QaThresholds) -> list[Score]:
    what = "cube" if pm.kind == "cube" else "continuum image"
    scores: list[Score] = []

    dr = pm.dynamic_range
    scores.append(
        _score(
            "dynamic_range",
            dr,
            "",
            t.dynamic_range,
            f"{what} {pm.image}",
            f"peak {pm.peak:.4g} {pm.unit} over emission-free rms {pm.rms_emission_free:.3g}"
            if dr is not None
            else "no emission-free pixels to measure the noise",
        )
    )

    rr = pm.residual_peak_to_rms
    if pm.residual is not None:
        scores.append(
            _score(
                "residual_peak_to_rms",
                rr,
                "sigma",
                t.residual_peak_to_rms,
                f"residual {pm.residual}",
                f"largest |residual| is {rr:.1f} x the residual rms"
                + ("; flux is left uncleaned" if rr is not None and rr > t.residual_peak_to_rms.good else "")
                if rr is not None
                else "residual is empty",
            )
        )

    sens = pm.sensitivity
    if sens.ratio is not None:
        scores.append(
            _score(
                "rms_to_theoretical",
                sens.ratio,
                "",
                t.rms_to_theoretical,
                f"{what} {pm.image}",
                f"rms {sens.measured_rms_jy:.3g} Jy/beam is {sens.ratio:.2f} x the natural-weight "
                f"theoretical {sens.theoretical_rms_jy:.3g} Jy/beam",
            )
        )

    if pm.beam_median is None:
        scores.append(
            _score("restoring_beam", None, "", None, f"{what} {pm.image}", "image has no restoring beam", fixed=0.0)
        )
    elif pm.kind == "cube" and pm.nchan > 2:
        frac = len(pm.deviant_beam_channels) / pm.nchan
        chans = pm.deviant_beam_channels
        msg = (
            f"{len(chans)} of {pm.nchan} channels have a deviant beam: channels {_ranges(chans)}"
            if chans
            else f"all {pm.nchan} channel beams agree (median {pm.beam_median.major_arcsec:.2f}\" x "
            f"{pm.beam_median.minor_arcsec:.2f}\")"
        )
        scores.append(_score("beam_outlier_fraction", frac, "", t.beam_outlier_fraction, f"cube {pm.image}", msg))

    scores.append(_convergence_score(pm, t))

    for src in pm.sources:
        scores.append(
            _score(
                "source_flux_error",
                abs(src.flux_ratio - 1.0) if src.flux_ratio is not None else None,
                "fraction",
                t.flux_error if src.shape == "point" else t.extended_flux_error,
                f"source {src.name}",
                f"recovered {src.recovered_flux_jy:.4g} Jy of {src.expected_flux_jy:.4g} Jy "
                f"(ratio {src.flux_ratio:.3f}, {src.method}, {src.channels_used} channel(s))"
                if src.flux_ratio is not None
                else "source not recovered",
            )
        )
        scores.append(
            _score(
                "source_position_offset",
                src.offset_pix,
                "pixel",
                t.position_offset_pix,
                f"source {src.name}",
                f"found {src.offset_pix:.2f} px ({src.offset_arcsec:.2f}\") from the true position"
                if src.offset_pix is not None
                else "source not recovered",
            )
        )
    return scores


def _convergence_score(pm: ProductMetrics, t: QaThresholds) -> Score:
    c = pm.convergence
    iters = f"{c.iterations} iterations" if c.iterations is not None else "iterations unknown"
    stop = f", stopped by {c.stop_reason}" if c.stop_reason else ""
    applies = f"model {pm.imagename}.model"
    if c.cleaned_nothing:
        why = " (niter=0)" if c.niter == 0 else ""
        return _score(
            "clean_convergence",
            c.model_flux_jy or 0.0,
            "Jy",
            None,
            applies,
            f"the clean model is empty: nothing was cleaned{why}; {iters}{stop}. Check niter, "
            "threshold and the mask",
            fixed=SCORE_NOTHING_CLEANED,
        )
    base = f"model flux {c.model_flux_jy:.4g} Jy in {c.model_nonzero_pixels} pixels, {iters}{stop}"
    if c.stop_code in (5, 6):
        return _score("clean_convergence", c.model_flux_jy, "Jy", None, applies, "diverged: " + base, fixed=SCORE_DIVERGED)
    if c.stop_code == 7:
        return _score(
            "clean_convergence", c.model_flux_jy, "Jy", None, applies, "stopped on an empty mask: " + base,
            fixed=SCORE_DIVERGED,
        )
    if c.uncleaned_channels:
        return _score(
            "clean_convergence",
            c.model_flux_jy,
            "Jy",
            None,
            applies,
            f"channels {_ranges(c.uncleaned_channels)} have emission but an empty model; " + base,
            fixed=SCORE_UNCLEANED_CHANNELS,
        )
    if c.stop_code == 1 and (pm.residual_peak_to_rms or 0) > t.residual_peak_to_rms.fair:
        return _score(
            "clean_convergence", c.model_flux_jy, "Jy", None, applies,
            "hit the iteration limit before the threshold: " + base, fixed=SCORE_HIT_NITER,
        )
    return _score("clean_convergence", c.model_flux_jy, "Jy", None, applies, base, fixed=1.0)


def _ranges(chans: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' so that long channel lists stay readable."""
    if not chans:
        return ""
    parts, start, prev = [], chans[0], chans[0]
    for c in chans[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if c is not None:
            start = prev = c
    return ", ".join(parts)
