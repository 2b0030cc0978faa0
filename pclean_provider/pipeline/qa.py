"""QA of one imaging product: metrics, scores, and the qa.json / qa.html reports.

``run_qa`` is what the DAG's QA task (through ``pclean qa``) and people call. It reads the
product through ``pclean_provider.casa.image_io`` (the only CASA contact), computes metrics with
``qa_metrics``, scores them with ``qa_scores``, and writes the reports atomically.

Theoretical sensitivity (``rms_to_theoretical``): given ``vis``, the MS's Stokes I natural
weights are summed per MS channel, and their absolute noise scale is measured from the data
(the parallel-hand difference, see ``image_io.visibility_weight_sums``). A point source's
noise under natural weighting is then sigma_unit / sqrt(sum of weights) over the visibilities
gridded into the channel. For a cube the level of a typical channel comes from the MS; the
channel-to-channel shape comes from the product's ``.sumwt`` (which knows what the gridder
really put into each channel, e.g. an edge channel only partly covered after the frame
conversion). Briggs or uniform weighting raise the measured rms above this natural-weight
floor by design; the ``rms_to_theoretical`` limits leave room for that.

The image grid is judged from the product itself, so that a grid chosen by hand, by a template
or by an imaging plan is held to the same rules: pixels across the restoring beam's minor axis
(``pixels_per_beam``; a beam under a tenth of a pixel counts as not fitted), whether the image
edge reaches the primary beam's half power (``pb_edge_level``, from the product's .pb) and how
many primary beams wide the image is (``image_width_pb``). Their messages name the cell or
imsize to use, because a wrong grid is fixed in the template, not in the data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pclean_provider import products
from pclean_provider.atomic_files import write_text as atomic_write_text
from pclean_provider.casa import image_io
from pclean_provider.errors import PcleanInputError
from pclean_provider.pipeline import qa_metrics as m
from pclean_provider.pipeline.qa_models import (
    BeamInfo,
    ChannelMetrics,
    Convergence,
    GridMetrics,
    ProductMetrics,
    QaReport,
    QaThresholds,
    Score,
    Sensitivity,
    SourceRecovery,
    band_of,
)
from pclean_provider.pipeline.qa_scores import score_product

log = logging.getLogger(__name__)

# Channels fitted per source in a cube: enough for a robust median, cheap on big cubes.
MAX_FIT_CHANNELS = 16


class QaInputError(PcleanInputError):
    """The product to check is missing or the arguments do not fit it."""


# Why an empty product scores 0: worded for the reviewer who gets the ticket, not for a developer.
NOTHING_IMAGED = (
    "no valid, non-zero pixels in any channel: nothing was imaged (fully flagged or empty selection?)"
)


class _NothingToJudge(Exception):
    """The product exists but holds nothing to measure; it goes to review, not to an error."""


def load_plan(plan: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The imaging plan of one target, from its JSON file or as a mapping; stored as given.

    Only ``decisions`` (a list of objects with a ``name``) is required: the report shows those;
    every other field (parameters, pb_fwhm_arcsec, beam_estimate_arcsec, ...) is kept if present.
    """
    if plan is None:
        return None
    if isinstance(plan, str | os.PathLike):
        path = Path(plan)
        if not path.is_file():
            raise QaInputError(f"plan={path} does not exist; pass the imaging plan's JSON file")
        try:
            plan = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise QaInputError(f"plan={path} is not valid JSON ({exc})") from exc
    if not isinstance(plan, Mapping):
        raise QaInputError(f"plan must be a JSON object (one imaging target), got {type(plan).__name__}")
    decisions = plan.get("decisions")
    if not isinstance(decisions, list) or not all(isinstance(d, Mapping) and d.get("name") for d in decisions):
        raise QaInputError(
            "plan has no 'decisions' list of objects with a 'name' (and value, source, reason); pass the "
            "imaging plan of one target"
        )
    # Round-trip through JSON so that what is stored is exactly what qa.json will hold.
    try:
        return json.loads(json.dumps(dict(plan)))
    except (TypeError, ValueError) as exc:
        raise QaInputError(f"plan holds values that are not JSON ({exc})") from exc


def product_paths(imagename: str | os.PathLike) -> dict[str, str]:
    """The product's images by role (image, residual, model, mask, pb, sumwt, pbcor, alpha).

    Accepts the imagename prefix (as given to tclean) or a path ending in ``.image``. mtmfs
    products (``.image.tt0``) use their Taylor term 0 images.
    """
    base = products.imagename_of(imagename)
    kind = products.TAYLOR_DECONVOLVER if products.is_taylor_product(base) else ""
    roles = {
        "image": base + products.first_term(products.IMAGE, kind),
        "residual": base + products.first_term(products.RESIDUAL, kind),
        "model": base + products.first_term(products.MODEL, kind),
        "mask": base + products.MASK,
        "pb": base + products.first_term(products.PB, kind),
        "sumwt": base + products.first_term(products.SUMWT, kind),
        "pbcor": base + products.first_term(products.IMAGE, kind) + products.PBCOR,
        "alpha": base + products.ALPHA,
    }
    found = {role: path for role, path in roles.items() if os.path.isdir(path)}
    found["base"] = base
    return found


def load_truth(truth: str | os.PathLike | Mapping[str, Any] | list | None) -> list[dict[str, Any]]:
    """Sources from a simulator truth file (or its parsed content) with a ref frequency each."""
    if truth is None:
        return []
    if isinstance(truth, str | os.PathLike):
        path = Path(truth)
        if not path.is_file():
            raise QaInputError(f"truth={path} does not exist; pass the simulator's truth JSON file")
        truth = json.loads(path.read_text())
    if isinstance(truth, list):
        sources, top = truth, {}
    else:
        sources, top = truth.get("sources", []), truth
    out = []
    for i, src in enumerate(sources):
        try:
            out.append(
                {
                    "name": str(src.get("name", f"source{i}")),
                    "ra_deg": float(src["ra_deg"]),
                    "dec_deg": float(src["dec_deg"]),
                    "flux_jy": float(src["flux_jy"]),
                    "ref_freq_hz": float(src.get("ref_freq_hz", top.get("ref_freq_hz", 0.0)) or 0.0),
                    "spectral_index": float(src.get("spectral_index", 0.0) or 0.0),
                    "shape": str(src.get("shape", "point")),
                    "line": src.get("line") or None,
                    "major_arcsec": src.get("major_arcsec"),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise QaInputError(
                f"truth source #{i} lacks ra_deg/dec_deg/flux_jy ({exc}); expected the simulator's truth JSON"
            ) from exc
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _median_finite(values) -> float | None:
    arr = np.array([v for v in values if v is not None and math.isfinite(v) and v > 0])
    return float(np.median(arr)) if arr.size else None


def run_qa(
    imagename: str | os.PathLike,
    kind: Literal["cube", "mfs"] = "cube",
    truth: str | os.PathLike | Mapping[str, Any] | None = None,
    thresholds: QaThresholds | Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    imaging_summary: Mapping[str, Any] | None = None,
    vis: str | os.PathLike | None = None,
    html: bool = True,
    plan: str | os.PathLike | Mapping[str, Any] | None = None,
) -> QaReport:
    """Compute metrics and scores of one product; write qa.json, qa.schema.json and qa.html.

    ``out_dir`` defaults to ``<imagename>.qa``. ``imaging_summary`` is tclean's return dict
    (iterdone, niter, stopcode, stopDescription) when the caller has it. Images are read one
    channel at a time, so memory stays at a few planes whatever the cube size.

    ``plan`` is the imaging plan the product was made with (its JSON file or the parsed
    mapping): it is stored in the report and shown in qa.html, and its recorded decisions word
    the grid checks (a capped imsize makes a short primary-beam coverage a warning).

    A product with nothing to measure (no valid, non-zero pixel in any channel) is not an input
    error: its report scores 0 with the reason, and the gate sends it to review.
    """
    if kind not in ("cube", "mfs"):
        raise QaInputError(f"kind={kind!r} is not valid; use kind='cube' or kind='mfs'")
    if thresholds is None:
        thresholds = QaThresholds()
    elif not isinstance(thresholds, QaThresholds):
        thresholds = QaThresholds.model_validate(dict(thresholds))
    paths = product_paths(imagename)
    if "image" not in paths:
        raise QaInputError(
            f"imagename={imagename}: no {paths['base']}.image (or .image.tt0) found; pass the "
            "imagename prefix given to tclean/pclean"
        )
    if vis is not None and not os.path.isdir(vis):
        raise QaInputError(f"vis={vis} does not exist; pass the MeasurementSet the product was imaged from")
    sources = load_truth(truth)
    plan_data = load_plan(plan)
    out = Path(out_dir) if out_dir is not None else Path(paths["base"] + ".qa")

    with contextlib.ExitStack() as stack:
        def reader(role: str, with_beams: bool = False):
            if role not in paths:
                return None
            return stack.enter_context(image_io.ImageReader(paths[role], with_beams=with_beams))

        img = reader("image", with_beams=True)
        res, model, mask, sumwt = reader("residual"), reader("model"), reader("mask"), reader("sumwt")
        try:
            scan = _scan_channels(img, res, model, mask, thresholds)
        except _NothingToJudge as exc:
            return _not_judged(paths, kind, thresholds, plan_data, str(exc), out, html)
        channels = scan.channels
        peak, (px, py, pc) = scan.peak, scan.peak_pixel
        peak_ra, peak_dec = image_io.pixel_to_world(paths["image"], px, py, pc)
        arrays = None
        if html:
            # matplotlib takes seconds to import: only a run that draws qa.html loads it.
            from pclean_provider.pipeline.report_html import ReportArrays

            cube = img.nchan > 1
            res_plane = res.plane(pc if cube else 0) if res is not None else None
            arrays = ReportArrays(
                image_map=scan.peak_map,
                image_title="Image: peak over channels" if cube else "Image",
                residual_map=res_plane[0] if res_plane else None,
                residual_valid=res_plane[1] if res_plane else None,
                residual_title=(f"Residual, channel {pc} (image peak)" if cube else "Residual"),
                residual_sample=scan.residual_sample,
            )
        sumwt_per_chan = (
            np.array([sumwt.plane(c)[0].ravel()[0] for c in range(sumwt.nchan)]) if sumwt is not None else None
        )
        sensitivity = _sensitivity(vis, img, sumwt_per_chan, channels, scan.rms_free_all, kind)
        pb_peaks = _pb_peaks(reader("pb"))
        recovered = _recover_sources(sources, paths, img, stack, image_io, kind) if sources else []
        grid = _grid_metrics(img, channels, scan.deviant, paths, reader, thresholds, plan_data)

    rms_at_peak = channels[pc].rms_emission_free or scan.rms_free_all
    dyn = peak / rms_at_peak if rms_at_peak else None
    ratios = [ch.residual_peak / ch.rms_residual for ch in channels if ch.residual_peak is not None and ch.rms_residual]
    res_peak_all = max((ch.residual_peak for ch in channels if ch.residual_peak is not None), default=None)
    convergence = _convergence(channels, scan, imaging_summary, thresholds, has_model=model is not None)

    metrics = ProductMetrics(
        imagename=paths["base"],
        kind=kind,
        image=paths["image"],
        residual=paths.get("residual"),
        unit=img.unit,
        shape=list(img.shape),
        nchan=img.nchan,
        cell_arcsec=list(img.cell_arcsec),
        freq_min_hz=float(np.min(img.freqs_hz) - img.chan_width_hz / 2),
        freq_max_hz=float(np.max(img.freqs_hz) + img.chan_width_hz / 2),
        peak=peak,
        peak_pixel=[px, py, pc],
        peak_ra_deg=peak_ra,
        peak_dec_deg=peak_dec,
        rms_emission_free=scan.rms_free_all or 0.0,
        rms_residual=_median_finite(ch.rms_residual for ch in channels),
        dynamic_range=_finite(dyn),
        residual_peak=res_peak_all,
        residual_peak_to_rms=_finite(max(ratios)) if ratios else None,
        beam_median=_median_beam(img.beams),
        deviant_beam_channels=scan.deviant,
        channels=channels,
        convergence=convergence,
        sensitivity=sensitivity,
        sources=recovered,
        grid=grid,
        pb_peak_max=max((p for p in pb_peaks if p is not None), default=None),
        pb_above_one_channels=m.primary_beam_above(pb_peaks, thresholds.pb_peak_max),
        sumwt_jump_channels=(m.weight_jumps(sumwt_per_chan, thresholds.sumwt_jump_max)
                             if sumwt_per_chan is not None else []),
    )
    scores = score_product(metrics, thresholds, plan_data)
    if kind == "cube" and img.nchan == 1:
        for s in scores:
            s.message += " (a one-channel cube)"
    overall = min((s.score for s in scores), default=0.0)
    report = QaReport(
        created_utc=_now(),
        imagename=paths["base"],
        kind=kind,
        thresholds=thresholds,
        metrics=metrics,
        scores=scores,
        overall_score=overall,
        overall_band=band_of(overall),
        plan=plan_data,
    )
    write_reports(report, out, arrays=arrays)
    log.info("QA %s: overall %.2f (%s), gate %s; reports in %s", paths["base"], overall, report.overall_band,
             report.gate(), out)
    return report


def _not_judged(paths, kind, thresholds: QaThresholds, plan, reason: str, out: Path, html: bool) -> QaReport:
    """The report of a product QA cannot measure: overall 0 (error) with the reason, for review."""
    score = Score(
        metric="product_content", value=0.0, unit="pixels", score=0.0, band="error",
        applies_to=f"image {paths['image']}", message=reason,
    )
    report = QaReport(
        created_utc=_now(),
        imagename=paths["base"],
        kind=kind,
        thresholds=thresholds,
        metrics=None,
        scores=[score],
        overall_score=0.0,
        overall_band="error",
        not_judged_reason=reason,
        plan=plan,
    )
    write_reports(report, out, html=html)
    log.warning("QA %s: not judged (%s); gate %s; reports in %s", paths["base"], reason, report.gate(), out)
    return report


def write_reports(report: QaReport, out_dir: Path, *, arrays=None, html: bool | None = None) -> QaReport:
    """Write qa.schema.json, qa.html and, last, qa.json.

    qa.html is written when the pictures' arrays are given, or when ``html`` asks for it (a
    product that could not be judged gets a short page without pictures). qa.json comes last so
    that its presence means the whole report is there.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report.files = {
        "qa.json": str(out_dir / "qa.json"),
        "qa.schema.json": str(out_dir / "qa.schema.json"),
    }
    atomic_write_text(out_dir / "qa.schema.json", json.dumps(QaReport.model_json_schema(), indent=2))
    if html is None:
        html = arrays is not None
    if html:
        from pclean_provider.pipeline.report_html import render_html  # matplotlib: see run_qa

        report.files["qa.html"] = str(out_dir / "qa.html")
        atomic_write_text(out_dir / "qa.html", render_html(report, arrays))
    atomic_write_text(out_dir / "qa.json", report.model_dump_json(indent=2))
    return report


@dataclass
class _Scan:
    channels: list[ChannelMetrics]
    deviant: list[int]
    peak: float
    peak_pixel: tuple[int, int, int]
    peak_map: np.ndarray  # max over channels (NaN where never valid)
    residual_sample: np.ndarray  # a subsample of valid, non-zero residual pixels
    rms_free_all: float | None
    model_flux: float | None
    model_nonzero: int | None
    mask_pixels: int | None
    mask_total: int | None


def _scan_channels(img, res, model, mask, t: QaThresholds) -> _Scan:
    """One pass over the channels: per-channel metrics plus what the report's pictures need."""
    nchan = img.nchan
    beams = img.beams or [None] * nchan
    majors = [b.major_arcsec if b else None for b in beams]
    minors = [b.minor_arcsec if b else None for b in beams]
    med_major = _median_finite(majors)
    cell = max(img.cell_arcsec) if max(img.cell_arcsec) > 0 else 1.0
    # Grow sources and masks by about a beam before measuring the noise around them.
    grow = int(round(med_major / cell)) if med_major else 3
    grow = max(2, min(grow, max(img.nx, img.ny) // 8))
    deviant = (
        m.beam_outliers(majors, minors, img.freqs_hz, t.beam_outlier_sigma, t.beam_outlier_min_fraction)
        if nchan > 2
        else []
    )
    # Keep at most ~1e6 residual pixels for the histogram, spread over all channels.
    step = max(1, (img.nx * img.ny * nchan) // 1_000_000)

    channels: list[ChannelMetrics] = []
    peak_map = np.full((img.nx, img.ny), np.nan)
    best = (-np.inf, (0, 0, 0))
    samples: list[np.ndarray] = []
    model_flux = 0.0 if model is not None else None
    model_nonzero = 0 if model is not None else None
    mask_pixels = 0 if mask is not None else None
    mask_total = 0 if mask is not None else None
    report_every = max(1, nchan // 10)
    for c in range(nchan):
        if c % report_every == 0 or c == nchan - 1:
            log.info("QA %s: channel %d/%d", os.path.basename(img.path), c + 1, nchan)
        plane, valid = img.plane(c)
        valid &= np.isfinite(plane)
        cmask = None
        if mask is not None:
            cmask, _ = mask.plane(min(c, mask.nchan - 1))
            mask_pixels += int(np.count_nonzero(cmask > 0.5))
            mask_total += cmask.size
            if np.count_nonzero(cmask[valid] > 0.5) > 0.5 * max(1, np.count_nonzero(valid)):
                # A mask over most of the image (tclean's default when no mask is given) says
                # nothing about where the emission is; the bright-pixel test finds it instead.
                cmask = None
        empty = not valid.any() or not np.any(plane[valid] != 0)
        rms_free = peak = None
        if not empty:
            free = m.emission_free(plane, valid, cmask, t.emission_sigma, grow)
            rms_free = m.robust_sigma(plane[free])
            masked = np.where(valid, plane, -np.inf)
            ix, iy = np.unravel_index(int(np.argmax(masked)), masked.shape)
            peak = float(plane[ix, iy])
            if peak > best[0]:
                best = (peak, (int(ix), int(iy), c))
            peak_map = np.fmax(peak_map, np.where(valid, plane, np.nan))
        rms_res = res_peak = None
        if res is not None:
            rplane, rvalid = res.plane(c)
            rvalid &= np.isfinite(rplane)
            if rvalid.any() and np.any(rplane[rvalid] != 0):
                values = rplane[rvalid]
                rms_res = m.robust_sigma(values)
                res_peak = float(np.max(np.abs(values)))
                samples.append(values[values != 0][::step])
        chan_model = None
        if model is not None:
            mplane, _ = model.plane(c)
            chan_model = float(np.sum(mplane))
            model_flux += chan_model
            model_nonzero += int(np.count_nonzero(mplane))
        beam = beams[c]
        channels.append(
            ChannelMetrics(
                channel=c,
                freq_hz=float(img.freqs_hz[c]),
                rms_residual=_finite(rms_res),
                rms_emission_free=_finite(rms_free),
                peak=_finite(peak),
                residual_peak=_finite(res_peak),
                model_flux=chan_model,
                beam=BeamInfo(major_arcsec=beam.major_arcsec, minor_arcsec=beam.minor_arcsec, pa_deg=beam.pa_deg)
                if beam
                else None,
                beam_deviant=c in deviant,
            )
        )
    if not np.isfinite(best[0]):
        raise _NothingToJudge(NOTHING_IMAGED)
    return _Scan(
        channels=channels,
        deviant=deviant,
        peak=float(best[0]),
        peak_pixel=best[1],
        peak_map=peak_map,
        residual_sample=np.concatenate(samples) if samples else np.zeros(0),
        rms_free_all=_median_finite(ch.rms_emission_free for ch in channels),
        model_flux=model_flux,
        model_nonzero=model_nonzero,
        mask_pixels=mask_pixels,
        mask_total=mask_total,
    )


def _grid_metrics(img, channels, deviant, paths, reader, t: QaThresholds, plan) -> GridMetrics:
    """The grid facts the grid scores judge: beam sampling and primary-beam coverage."""
    cell = max(img.cell_arcsec)
    usable = [
        (ch.channel, ch.beam.minor_arcsec)
        for ch in channels
        if ch.beam is not None and m.pixels_per_beam(ch.beam.minor_arcsec, cell) > 0
    ]
    # A deviant channel's beam (a failed fit) is the beam-consistency score's business; the
    # grid is judged on the beams that agree, unless no beam agrees with another.
    agreeing = [u for u in usable if u[0] not in deviant] or usable
    notes = []
    with_beam = sum(1 for ch in channels if ch.beam is not None)
    if not with_beam:
        notes.append("the image has no restoring beam")
    elif len(usable) < with_beam:
        notes.append(f"{with_beam - len(usable)} of {len(channels)} channel beams are under a tenth of a pixel")
    if agreeing:
        chan, minor = min(agreeing, key=lambda u: u[1])
    else:
        chan, minor = None, None
    width = max(img.nx * img.cell_arcsec[0], img.ny * img.cell_arcsec[1])
    grid = dict(
        cell_arcsec=cell,
        imsize=[img.nx, img.ny],
        beam_minor_arcsec=minor,
        beam_minor_channel=chan,
        pixels_per_beam=m.pixels_per_beam(minor, cell),
        beam_note="; ".join(notes) or None,
        image_width_arcsec=width,
        gridder=_plan_gridder(plan),
    )
    pb = reader("pb")
    if pb is not None and (pb.nx, pb.ny) == (img.nx, img.ny):
        # The lowest frequency has the widest primary beam: the hardest one to cover.
        c = int(np.argmin(pb.freqs_hz)) if pb.nchan > 1 else 0
        data, valid = pb.plane(c)
        cov = m.pb_coverage(data, valid, t.pb_edge_level_max)
        if cov is not None:
            grid.update(pb_image=paths["pb"], pb_channel=c, pb_peak=cov.peak, pb_edge=cov.edge,
                        needed_imsize=cov.needed_imsize)
            if cov.fwhm_pix:
                grid.update(
                    pb_fwhm_arcsec=cov.fwhm_pix * max(pb.cell_arcsec),
                    pb_fwhm_source="the .pb, measured at half power" if cov.fwhm_measured
                    else "the .pb, a Gaussian through its centre and edge values",
                )
    if grid.get("pb_fwhm_arcsec") is None and plan and _positive(plan.get("pb_fwhm_arcsec")):
        grid.update(pb_fwhm_arcsec=float(plan["pb_fwhm_arcsec"]), pb_fwhm_source="the imaging plan")
        if grid.get("pb_edge") is not None and grid["pb_edge"] > t.pb_edge_level_max:
            # The .pb was too flat to extrapolate; the plan's FWHM gives the size instead.
            size = m.good_imsize(m.size_reaching(grid["pb_fwhm_arcsec"] / cell, t.pb_edge_level_max))
            grid["needed_imsize"] = [max(size, img.nx), max(size, img.ny)]
    if grid.get("pb_fwhm_arcsec"):
        grid["image_width_pb"] = width / grid["pb_fwhm_arcsec"]
    return GridMetrics(**grid)


def _pb_peaks(pb) -> list[float | None]:
    """The largest valid primary-beam value of every channel (one plane in memory at a time)."""
    if pb is None:
        return []
    peaks: list[float | None] = []
    for c in range(pb.nchan):
        data, valid = pb.plane(c)
        values = data[valid & np.isfinite(data)]
        peaks.append(float(values.max()) if values.size else None)
    return peaks


def _positive(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def _plan_gridder(plan) -> str | None:
    params = (plan or {}).get("parameters")
    gridder = params.get("gridder") if isinstance(params, Mapping) else None
    return str(gridder) if gridder else None


def _median_beam(beams) -> BeamInfo | None:
    have = [b for b in beams if b is not None]
    if not have:
        return None
    return BeamInfo(
        major_arcsec=float(np.median([b.major_arcsec for b in have])),
        minor_arcsec=float(np.median([b.minor_arcsec for b in have])),
        pa_deg=float(np.median([b.pa_deg for b in have])),
    )


def _convergence(channels, scan: _Scan, summary, thresholds: QaThresholds, has_model: bool) -> Convergence:
    summary = dict(summary or {})
    uncleaned = [
        ch.channel
        for ch in channels
        if (ch.model_flux is None or ch.model_flux == 0)
        and ch.residual_peak is not None
        and ch.rms_residual
        and ch.residual_peak > thresholds.uncleaned_peak_sigma * ch.rms_residual
    ]

    def _int(key):
        value = summary.get(key)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    # A cube's model flux is per channel (Jy in each plane): the channel that holds the most says
    # how much was cleaned, where a sum over channels would be in no unit at all.
    per_channel = [(ch.model_flux, ch.channel) for ch in channels if ch.model_flux is not None]
    model_flux, model_channel = max(per_channel, key=lambda fc: abs(fc[0])) if per_channel else (scan.model_flux, None)
    return Convergence(
        model_flux_jy=model_flux,
        model_flux_channel=model_channel if len(channels) > 1 else None,
        model_nonzero_pixels=scan.model_nonzero,
        mask_pixels=scan.mask_pixels,
        mask_fraction=scan.mask_pixels / scan.mask_total if scan.mask_total else None,
        iterations=_int("iterdone"),
        niter=_int("niter"),
        stop_code=_int("stopcode"),
        stop_reason=summary.get("stopDescription") or summary.get("stop_reason"),
        cleaned_nothing=not has_model or not scan.model_nonzero,  # no model, or a model of zeros
        uncleaned_channels=uncleaned,
    )


def _sensitivity(vis, img, sumwt_per_chan, channels, rms_free_all, kind) -> Sensitivity:
    if vis is None:
        return Sensitivity(
            theoretical_rms_jy=None,
            measured_rms_jy=rms_free_all,
            ratio=None,
            method="not computed: no MeasurementSet given (pass vis=)",
        )
    ws = image_io.visibility_weight_sums(vis)
    if kind == "mfs" or img.nchan == 1:
        theo_chan = np.full(img.nchan, m.theoretical_rms_total(ws.weight_sum, ws.sigma_unit_weight_jy))
    else:
        theo_chan = m.theoretical_rms_per_channel(
            img.freqs_hz, img.chan_width_hz, ws.chan_freqs_hz, ws.chan_widths_hz, ws.weight_sum, ws.sigma_unit_weight_jy
        )
        sw = sumwt_per_chan
        finite = theo_chan[np.isfinite(theo_chan)]
        if sw is not None and len(sw) == img.nchan and np.all(sw > 0) and finite.size:
            theo_chan = float(np.median(finite)) * np.sqrt(float(np.median(sw)) / sw)
    for ch, t in zip(channels, theo_chan, strict=True):
        ch.theoretical_rms = _finite(float(t))
    ratios = [ch.rms_emission_free / ch.theoretical_rms for ch in channels if ch.rms_emission_free and ch.theoretical_rms]
    return Sensitivity(
        theoretical_rms_jy=_median_finite(ch.theoretical_rms for ch in channels),
        measured_rms_jy=rms_free_all,
        ratio=float(np.median(ratios)) if ratios else None,
        method=f"natural-weight point-source noise from {ws.nvis} visibilities: {ws.method}",
        nvis=ws.nvis,
    )


def _expected_at(src: dict[str, Any], freq_hz: float) -> float:
    line = src.get("line")
    if line:
        sigma = float(line["fwhm_hz"]) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        return float(line.get("continuum_jy", 0.0)) + float(line["peak_flux_jy"]) * math.exp(
            -0.5 * ((freq_hz - float(line["center_freq_hz"])) / sigma) ** 2
        )
    return m.expected_flux(src["flux_jy"], src["ref_freq_hz"], freq_hz, src["spectral_index"])


def _expected_over_band(src: dict[str, Any], f_lo: float, f_hi: float, f_ref: float) -> float:
    """An mfs image's flux: the power law at the image's reference frequency, a line's band mean."""
    if not src.get("line"):
        return _expected_at(src, f_ref)
    return float(np.mean([_expected_at(src, f) for f in np.linspace(f_lo, f_hi, 257)]))


def _recover_sources(sources, paths, img, stack, image_io, kind) -> list[SourceRecovery]:
    """Fit each truth source; divide by the primary beam when the image is not pb-corrected."""
    pb = stack.enter_context(image_io.ImageReader(paths["pb"], with_beams=False)) if "pb" in paths else None
    beams = img.beams or [None] * img.nchan
    cell = max(img.cell_arcsec) if max(img.cell_arcsec) > 0 else 1.0
    nx, ny = img.nx, img.ny
    planes: dict[int, np.ndarray] = {}
    pb_planes: dict[int, np.ndarray] = {}

    def plane(c: int) -> np.ndarray:
        if c not in planes:
            data, valid = img.plane(c)
            planes[c] = np.where(valid & np.isfinite(data), data, 0.0)
        return planes[c]

    def pb_gain(c: int, x: float, y: float) -> float:
        ch = min(c, pb.nchan - 1)
        if ch not in pb_planes:
            pb_planes[ch] = pb.plane(ch)[0]
        return float(pb_planes[ch][int(np.clip(round(x), 0, nx - 1)), int(np.clip(round(y), 0, ny - 1))])

    chans = list(range(img.nchan))
    if img.nchan > MAX_FIT_CHANNELS:
        chans = sorted({int(round(c)) for c in np.linspace(0, img.nchan - 1, MAX_FIT_CHANNELS)})
    # Skip channels the imager left empty (edges after the frame conversion): nothing to fit.
    chans = [c for c in chans if np.any(plane(c) != 0)]
    out = []
    for src in sources:
        log.info("QA: fitting truth source %s in %d channel(s)", src["name"], len(chans))
        x0, y0 = image_io.world_to_pixel(paths["image"], src["ra_deg"], src["dec_deg"], 0)
        if not (0 <= x0 < nx and 0 <= y0 < ny):
            continue
        beam = next((b for b in beams if b is not None), None)
        size = math.hypot(beam.major_arcsec if beam else 5 * cell, float(src.get("major_arcsec") or 0.0))
        half_box = int(max(4, round(1.5 * size / cell)))
        is_point = src["shape"] == "point"
        fluxes, expected, offsets, found, method = [], [], [], [], "gaussian fit"
        for c in chans:
            f_c = float(img.freqs_hz[c])
            if kind == "mfs":
                exp_c = _expected_over_band(src, f_c - img.chan_width_hz / 2, f_c + img.chan_width_hz / 2, f_c)
            else:
                exp_c = _expected_at(src, f_c)
            fit = image_io.fit_point_source(paths["image"], x0, y0, c, half_box)
            if fit is not None and fit.converged and fit.flux_jy > 0 and math.hypot(fit.x - x0, fit.y - y0) < half_box:
                # A point source's flux is the fitted peak: cleaning and noise change the fitted
                # width a little, and the integrated flux would follow that width.
                flux = fit.peak_jy_per_beam(beams[c]) if is_point else fit.flux_jy
                fx, fy = fit.x, fit.y
            else:
                method = "peak pixel (fit failed in some channels)"
                xs = slice(max(0, int(x0) - half_box), min(nx, int(x0) + half_box + 1))
                ys = slice(max(0, int(y0) - half_box), min(ny, int(y0) + half_box + 1))
                box = plane(c)[xs, ys]
                bx, by = np.unravel_index(int(np.argmax(box)), box.shape)
                fx, fy, flux = xs.start + bx, ys.start + by, float(box[bx, by])
            if pb is not None:
                gain = pb_gain(c, fx, fy)
                if gain > 0:
                    flux /= gain
            fluxes.append(flux)
            expected.append(exp_c)
            offsets.append(math.hypot(fx - x0, fy - y0))
            found.append((fx, fy))
        if not fluxes:
            continue
        # Summed over channels, the ratio weighs each channel by its expected flux, so a
        # spectral line's faint wings do not dominate; positions come from the bright channels.
        exp_arr, flux_arr = np.array(expected), np.array(fluxes)
        bright = exp_arr >= 0.5 * exp_arr.max() if exp_arr.max() > 0 else np.ones(len(exp_arr), bool)
        total_expected = float(exp_arr.sum())
        ratio = float(flux_arr.sum() / total_expected) if total_expected > 0 else None
        offset_pix = float(np.median(np.array(offsets)[bright]))
        found_b = [f for f, b in zip(found, bright, strict=True) if b]
        out.append(
            SourceRecovery(
                name=src["name"],
                shape=src["shape"],
                true_ra_deg=src["ra_deg"],
                true_dec_deg=src["dec_deg"],
                expected_flux_jy=total_expected / len(exp_arr),
                recovered_flux_jy=float(flux_arr.mean()),
                flux_ratio=_finite(ratio),
                offset_pix=offset_pix,
                offset_arcsec=offset_pix * cell,
                method=method
                + (" (peak)" if is_point else " (integrated)")
                + (", primary-beam corrected" if pb is not None else ""),
                channels_used=len(fluxes),
                true_pixel=[x0, y0],
                found_pixel=[float(np.median([f[0] for f in found_b])), float(np.median([f[1] for f in found_b]))],
            )
        )
    return out
