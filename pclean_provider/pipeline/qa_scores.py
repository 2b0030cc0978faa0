"""Turn a product's metrics into scores with bands and messages people can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pclean_provider import products
from pclean_provider.pipeline import qa_metrics as m
from pclean_provider.pipeline.qa_models import (
    GridMetrics,
    Limits,
    ProductMetrics,
    QaThresholds,
    Score,
    band_of,
)

# Fixed scores for conditions that are not a matter of degree.
SCORE_NOTHING_CLEANED = 0.1
SCORE_DIVERGED = 0.3
SCORE_UNCLEANED_CHANNELS = 0.6
SCORE_HIT_NITER = 0.8
# The image misses part of the primary beam's half power: sources there are lost to review.
SCORE_PB_NOT_COVERED = 0.2
# The same, but the imaging plan cut imsize on purpose and recorded why: someone should look.
SCORE_PB_CAPPED = 0.5
# A single-pointing image many primary beams wide: mostly noise, at a large cost.
SCORE_IMAGE_TOO_WIDE = 0.5
# A primary beam above 1: primary-beam corrected fluxes there are wrong by that factor.
SCORE_PB_ABOVE_ONE = 0.2
# A channel weighted unlike both neighbours: worth a look, the fluxes may still be right.
SCORE_WEIGHT_JUMP = 0.8


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


def score_product(pm: ProductMetrics, t: QaThresholds, plan: Mapping[str, Any] | None = None) -> list[Score]:
    """All scores of one product; ``plan`` (the imaging plan, if any) words the grid's fixes."""
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

    cell = max(pm.cell_arcsec) if pm.cell_arcsec else 0.0
    if pm.beam_median is None:
        scores.append(
            _score("restoring_beam", None, "", None, f"{what} {pm.image}",
                   "image has no restoring beam: the PSF could not be fitted", fixed=0.0)
        )
    elif m.pixels_per_beam(pm.beam_median.minor_arcsec, cell) == 0.0:
        # Beams that agree at 0.00" are not consistent, they are missing: the PSF fit had less
        # than a pixel to work with. Say so instead of calling them optimal.
        b = pm.beam_median
        metric = "beam_outlier_fraction" if pm.kind == "cube" and pm.nchan > 2 else "restoring_beam"
        scores.append(
            _score(metric, None, "", None, f"{what} {pm.image}",
                   f"degenerate restoring beam {b.major_arcsec:.2f}\" x {b.minor_arcsec:.2f}\": smaller than a "
                   f"pixel ({cell:.3g}\" cell), so the PSF could not be fitted; the cell is too coarse for "
                   "this data (see pixels_per_beam)", fixed=0.0)
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

    if pm.grid is not None:
        scores.extend(grid_scores(pm.grid, t, plan, applies_to=f"{what} {pm.image}"))
    scores.extend(_channel_consistency_scores(pm, t))

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


def plan_decision(plan: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """The imaging plan's decision about ``name`` (e.g. "cell", "imsize"), if it recorded one."""
    for d in (plan or {}).get("decisions") or []:
        if isinstance(d, Mapping) and d.get("name") == name:
            return d
    return None


def _decision_text(d: Mapping[str, Any]) -> str:
    reason = f": {d['reason']}" if d.get("reason") else ""
    return f"{d.get('name')} {_value_text(d.get('value'))} ({d.get('source', 'unknown source')}{reason})"


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _imsize_text(size: list[int]) -> str:
    return str(size[0]) if len(set(size)) == 1 else f"[{', '.join(str(n) for n in size)}]"


def _arcsec(value: float) -> str:
    """Angles as people write them: 0.34", 28.2", 1910" (no exponents)."""
    return f"{value:.0f}\"" if abs(value) >= 100 else f"{value:.3g}\""


def grid_scores(
    g: GridMetrics, t: QaThresholds, plan: Mapping[str, Any] | None = None, applies_to: str = "image grid"
) -> list[Score]:
    """Scores of the image grid: beam sampling, primary-beam coverage and image width.

    Each message names what to change (a cell or imsize value, or ``auto`` for the imaging
    plan to derive it), because a wrong grid is fixed in the template, not in the data.
    """
    out = [_pixels_per_beam_score(g, t, plan, applies_to)]
    cov = _pb_coverage_score(g, t, plan, applies_to)
    if cov is not None:
        out.append(cov)
    width = _image_width_score(g, t, applies_to)
    if width is not None:
        out.append(width)
    return out


def _pixels_per_beam_score(g: GridMetrics, t: QaThresholds, plan, applies_to: str) -> Score:
    ppb, cell, target = g.pixels_per_beam, g.cell_arcsec, t.pixels_per_beam_target
    score = m.score_pixels_per_beam(ppb, t.pixels_per_beam_min, t.pixels_per_beam_max, target)
    pinned = plan_decision(plan, "cell")
    pinned_note = (
        f"; the imaging plan kept {_decision_text(pinned)}" if pinned and pinned.get("source") == "pinned" else ""
    )
    if ppb <= 0 or g.beam_minor_arcsec is None:
        estimate = (plan or {}).get("beam_estimate_arcsec")
        hint = ""
        if isinstance(estimate, list | tuple) and len(estimate) >= 2 and float(estimate[1]) > 0:
            hint = (f" (the plan's beam estimate has a {float(estimate[1]):.2f}\" minor axis: cell "
                    f"{m.format_cell(m.suggest_cell(float(estimate[1]), target))})")
        why = f"; {g.beam_note}" if g.beam_note else ""
        message = (
            f"beam smaller than a pixel or could not be fitted ({cell:.3g}\" cell{why}): the cell is far too "
            f"coarse for this data's resolution; set cell to 1/{target:g} of the beam's minor axis"
            f"{hint} or cell: auto{pinned_note}"
        )
    elif ppb < t.pixels_per_beam_min:
        message = (
            f"{ppb:.1f} pixels across the beam's minor axis ({g.beam_minor_arcsec:.3g}\"); set cell to at most "
            f"{m.format_cell(m.suggest_cell(g.beam_minor_arcsec, target))} ({target:g} pixels per beam) "
            f"or cell: auto{pinned_note}"
        )
    elif ppb > t.pixels_per_beam_max:
        message = (
            f"cell far finer than useful: {ppb:.1f} pixels across the beam's minor axis "
            f"({g.beam_minor_arcsec:.3g}\" with a {cell:.3g}\" cell) cost memory and time for nothing; set cell "
            f"to about {m.format_cell(m.suggest_cell(g.beam_minor_arcsec, target))} ({target:g} pixels per beam) "
            f"or cell: auto{pinned_note}"
        )
    else:
        message = f"{ppb:.1f} pixels across the beam's minor axis ({g.beam_minor_arcsec:.3g}\", {cell:.3g}\" cell)"
        if score < 0.9:
            message += (
                f"; {m.format_cell(m.suggest_cell(g.beam_minor_arcsec, target))} would give {target:g} pixels per beam"
            )
    return _score("pixels_per_beam", ppb, "pixel", None, applies_to, message, fixed=score)


def _pb_coverage_score(g: GridMetrics, t: QaThresholds, plan, applies_to: str) -> Score | None:
    if g.pb_edge is None:
        return None
    level = t.pb_edge_level_max
    size = " x ".join(str(n) for n in g.imsize)
    fwhm = f"primary beam FWHM {_arcsec(g.pb_fwhm_arcsec)}" if g.pb_fwhm_arcsec else "primary beam"
    applies = f"primary beam {g.pb_image}" if g.pb_image else applies_to
    if g.pb_edge <= level:
        return _score(
            "pb_edge_level", g.pb_edge, "", None, applies,
            f"the image edge reaches primary-beam level {g.pb_edge:.2f} (<= {level:g}): the {size} image covers "
            f"the {fwhm} at half power", fixed=1.0,
        )
    fix = (
        f"set imsize to at least {_imsize_text(g.needed_imsize)} (at the {g.cell_arcsec:.3g}\" cell) or imsize: auto"
        if g.needed_imsize
        else "set imsize: auto (the image sees too little of the primary beam to extrapolate the size needed)"
    )
    base = (
        f"the image edge is at primary-beam level {g.pb_edge:.2f} (> {level:g}): the {size} image "
        f"({_arcsec(g.image_width_arcsec)} wide) misses part of the {fwhm} at half power"
    )
    capped = plan_decision(plan, "imsize")
    if capped is not None and capped.get("source") == "capped":
        return _score(
            "pb_edge_level", g.pb_edge, "", None, applies,
            f"{base}; the imaging plan capped {_decision_text(capped)}; without the cap: {fix}",
            fixed=SCORE_PB_CAPPED,
        )
    return _score("pb_edge_level", g.pb_edge, "", None, applies, f"{base}; {fix}", fixed=SCORE_PB_NOT_COVERED)


def _image_width_score(g: GridMetrics, t: QaThresholds, applies_to: str) -> Score | None:
    if g.image_width_pb is None or not g.pb_fwhm_arcsec:
        return None
    n = g.image_width_pb
    base = (
        f"the image is {n:.1f} primary beams wide ({_arcsec(g.image_width_arcsec)} across, primary beam FWHM "
        f"{_arcsec(g.pb_fwhm_arcsec)} from {g.pb_fwhm_source or 'the .pb'})"
    )
    mosaic = g.gridder is not None and g.gridder in products.WEIGHT_GRIDDERS
    if n <= t.image_width_pb_max or mosaic:
        why = f" (gridder {g.gridder}: several pointings)" if mosaic and n > t.image_width_pb_max else ""
        return _score("image_width_pb", n, "FWHM", None, applies_to, base + why, fixed=1.0)
    # Two FWHMs reach well below the usual pb limit of 0.2 and leave room for sidelobes.
    suggested = m.good_imsize(2.0 * g.pb_fwhm_arcsec / g.cell_arcsec)
    return _score(
        "image_width_pb", n, "FWHM", None, applies_to,
        f"{base}: most of it lies outside the primary beam and costs memory and time; with the standard gridder "
        f"set imsize to about {suggested} (2 FWHM at the {g.cell_arcsec:.3g}\" cell) or imsize: auto",
        fixed=SCORE_IMAGE_TOO_WIDE,
    )


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
    where = f" in channel {c.model_flux_channel} (the most of any)" if c.model_flux_channel is not None else ""
    base = f"model flux {c.model_flux_jy:.4g} Jy{where}, {c.model_nonzero_pixels} pixels in all, {iters}{stop}"
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


def _channel_consistency_scores(pm: ProductMetrics, t: QaThresholds) -> list[Score]:
    """A primary beam above 1 and sums of weights that jump between neighbouring channels, by channel."""
    out = []
    if pm.pb_peak_max is not None:
        chans = pm.pb_above_one_channels
        if chans:
            msg = (f"the primary beam peaks at {pm.pb_peak_max:.4g} (a normalised beam peaks at 1) in "
                   f"channel(s) {_ranges(chans)}: primary-beam corrected fluxes there are off by that "
                   "factor; image those channels again (for a mosaic cube, in one chunk of the band) and compare")
            out.append(_score("pb_peak", pm.pb_peak_max, "", None, f"primary beam {pm.imagename}.pb", msg,
                              fixed=SCORE_PB_ABOVE_ONE))
        else:
            out.append(_score("pb_peak", pm.pb_peak_max, "", None, f"primary beam {pm.imagename}.pb",
                              f"the primary beam peaks at {pm.pb_peak_max:.4g} (<= {t.pb_peak_max:g}) in every "
                              "channel", fixed=1.0))
    if pm.kind == "cube" and pm.nchan > 2:
        chans = pm.sumwt_jump_channels
        if chans:
            out.append(_score("sumwt_jumps", float(len(chans)), "channels", None, f"sum of weights {pm.imagename}.sumwt",
                              f"channel(s) {_ranges(chans)} have a sum of weights more than {t.sumwt_jump_max:g} x "
                              "apart from both neighbours: their data were weighted or gridded unlike the "
                              "channels around them", fixed=SCORE_WEIGHT_JUMP))
    return out


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
