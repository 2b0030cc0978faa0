"""The self-contained qa.html: pictures first, numbers second, one file to open.

Plots are drawn with matplotlib's Agg backend (no display needed on workers) and embedded as
base64 PNGs, so the report can be mailed, archived or opened from the Airflow UI as is.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import AsinhNorm  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from pclean_provider.pipeline.qa_models import BAND_COLOURS, QaReport  # noqa: E402


@dataclass
class ReportArrays:
    """The few 2-D arrays the pictures need, collected while QA scanned the channels."""

    image_map: np.ndarray  # (x, y); NaN where no channel had a valid pixel
    image_title: str
    residual_map: np.ndarray | None
    residual_valid: np.ndarray | None
    residual_title: str
    residual_sample: np.ndarray  # residual pixel values for the histogram


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _map_figure(plane, valid, title, unit, report: QaReport, symmetric: bool, beam=None, cell=1.0):
    data = np.where(valid, plane, np.nan).T  # (y, x) for imshow with origin lower
    fig, ax = plt.subplots(figsize=(5.0, 4.3))
    finite = data[np.isfinite(data)]
    if finite.size:
        if symmetric:
            lim = float(np.nanpercentile(np.abs(finite), 99.5)) or 1.0
            vmin, vmax, cmap = -lim, lim, "RdBu_r"
        else:
            vmin = float(np.nanpercentile(finite, 1))
            vmax = float(np.nanmax(finite))
            cmap = "inferno"
    else:
        vmin, vmax, cmap = -1, 1, "gray"
    norm = None
    rms = report.metrics.rms_emission_free
    if not symmetric and rms and vmax > 20 * rms:
        # An asinh stretch keeps the noise and faint sources visible next to a bright peak.
        norm = AsinhNorm(linear_width=3 * rms, vmin=min(vmin, -3 * rms), vmax=vmax)
    if norm is not None:
        im = ax.imshow(data, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    else:
        im = ax.imshow(data, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if norm is not None:
        # Asinh's own ticks crowd around zero; zero plus 1-2-5 steps from ~5 sigma read better.
        steps = [
            m * 10.0**e
            for e in range(int(np.floor(np.log10(5 * rms))), int(np.ceil(np.log10(vmax))) + 1)
            for m in (1, 2, 5)
        ]
        steps = [v for v in steps if 5 * rms <= v <= 0.8 * vmax]
        if len(steps) > 4:
            steps = [steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, 4)]
        ticks = [0.0, *steps, vmax]
        cb.set_ticks(ticks)
        cb.ax.set_yticklabels([f"{v:.3g}" for v in ticks])
    cb.set_label(unit)
    for src in report.metrics.sources:
        if src.true_pixel:
            ax.plot(*src.true_pixel, marker="+", color="cyan", ms=14, mew=1.5)
        if src.found_pixel:
            ax.plot(*src.found_pixel, marker="x", color="lime", ms=9, mew=1.5)
    if not symmetric:
        px, py, _ = report.metrics.peak_pixel
        ax.plot(px, py, marker="o", mfc="none", mec="white", ms=16, mew=1.0)
    if beam is not None and cell > 0:
        w, h = beam.major_arcsec / cell, beam.minor_arcsec / cell
        ny, nx = data.shape
        cx, cy = 0.08 * nx + w / 2, 0.08 * ny + w / 2
        # CASA's position angle runs from north through east; imshow's angle from +x counter-clockwise.
        ax.add_patch(Ellipse((cx, cy), h, w, angle=beam.pa_deg, fc="none", ec="white", lw=1.5))
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return _png(fig)


def _rms_figure(report: QaReport) -> str:
    chans = report.metrics.channels
    f = np.array([c.freq_hz for c in chans]) / 1e9
    fig, ax = plt.subplots(figsize=(5.4, 3.3))

    def series(attr):
        return np.array([getattr(c, attr) if getattr(c, attr) is not None else np.nan for c in chans]) * 1e3

    ax.plot(f, series("rms_emission_free"), "o-", color="#2c5aa0", label="image, emission-free")
    ax.plot(f, series("rms_residual"), "s--", color="#b36b00", label="residual")
    theo = series("theoretical_rms")
    if np.isfinite(theo).any():
        ax.plot(f, theo, ":", color="#555", lw=2, label="theoretical (natural)")
        ax.set_yscale("log")
    ax.set_xlabel("frequency (GHz)")
    ax.set_ylabel("robust rms (mJy/beam)")
    ax.set_title("Noise per channel", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _beam_figure(report: QaReport) -> str:
    chans = report.metrics.channels
    idx = np.array([c.channel for c in chans])
    maj = np.array([c.beam.major_arcsec if c.beam else np.nan for c in chans])
    mnr = np.array([c.beam.minor_arcsec if c.beam else np.nan for c in chans])
    bad = np.array([c.beam_deviant for c in chans])
    fig, ax = plt.subplots(figsize=(5.4, 3.3))
    ax.plot(idx, maj, "o-", color="#2c5aa0", label="major")
    ax.plot(idx, mnr, "s-", color="#1b7f3b", label="minor")
    if bad.any():
        ax.plot(idx[bad], maj[bad], "o", ms=13, mfc="none", mec="#b3261e", mew=2, label="deviant channel")
        ax.plot(idx[bad], mnr[bad], "o", ms=13, mfc="none", mec="#b3261e", mew=2)
    ax.set_xlabel("channel")
    ax.set_ylabel("beam axis (arcsec)")
    ax.set_title("Restoring beam per channel", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _histogram_figure(values: np.ndarray, report: QaReport) -> str:
    fig, ax = plt.subplots(figsize=(5.4, 3.3))
    if values.size:
        sigma = report.metrics.rms_residual or float(np.std(values))
        lim = max(8 * sigma, float(np.max(np.abs(values))))
        bins = np.linspace(-lim, lim, 121)
        counts, _, _ = ax.hist(values, bins=bins, color="#8aa6d1", edgecolor="none", label="residual pixels")
        if sigma > 0:
            x = np.linspace(-lim, lim, 400)
            width = bins[1] - bins[0]
            gauss = values.size * width / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * (x / sigma) ** 2)
            ax.plot(x, gauss, color="#b3261e", lw=1.5, label=f"Gaussian, robust rms {sigma:.3g}")
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(2.0, float(np.max(counts)) * 3))
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel(f"residual ({report.metrics.unit})")
    ax.set_ylabel("pixels")
    ax.set_title("Residual histogram (all channels)", fontsize=11)
    ax.grid(alpha=0.3)
    return _png(fig)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1120px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px;word-break:break-all}
.badge{display:inline-block;padding:6px 14px;border-radius:16px;font-weight:600;font-size:15px;margin:12px 12px 0 0}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:6px 9px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.band{display:inline-block;min-width:78px;text-align:center;padding:2px 8px;border-radius:10px;font-weight:600;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:10px}
.card{flex:1 1 480px;max-width:calc(50% - 7px);box-sizing:border-box}.card img{display:block;max-width:100%;margin:auto}
.kv td:first-child{color:#555;width:260px}
"""


def _value(value) -> str:
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}={v}" for k, v in value.items()))
    return _fmt(value)


def _plan_section(plan: dict | None) -> list[str]:
    """The imaging plan's decisions: what the grid is and why (derived, pinned, capped, default)."""
    if not plan:
        return []
    head = [
        f"{html.escape(k)}: {_value(plan[k])}"
        for k in ("target", "ms", "kind", "pb_fwhm_arcsec", "pixels_per_beam", "beam_estimate_arcsec")
        if plan.get(k) is not None
    ]
    rows = []
    for d in plan.get("decisions") or []:
        inputs = d.get("inputs")
        rows.append(
            f"<tr><td>{html.escape(str(d.get('name', '')))}</td><td>{_value(d.get('value'))}</td>"
            f"<td>{_value(d.get('source'))}</td><td>{_value(d.get('reason'))}"
            + (f"<div class='sub'>inputs: {_value(inputs)}</div>" if inputs else "")
            + "</td></tr>"
        )
    params = plan.get("parameters")
    return [
        "<h2>Imaging plan</h2>",
        f"<div class='sub'>{' &middot; '.join(head)}</div>" if head else "",
        "<table><tr><th>decision</th><th>value</th><th>source</th><th>reason</th></tr>",
        *rows,
        "</table>",
        f"<div class='sub'>parameters: {_value(params)}</div>" if isinstance(params, dict) and params else "",
    ]


def _score_rows(report: QaReport) -> list[str]:
    rows = []
    for s in sorted(report.scores, key=lambda s: s.score):
        sfg, sbg = BAND_COLOURS[s.band]
        rows.append(
            "<tr>"
            f"<td><span class='band' style='color:{sfg};background:{sbg}'>{s.band}</span></td>"
            f"<td class='num'><b>{s.score:.2f}</b></td>"
            f"<td>{html.escape(s.metric)}</td>"
            f"<td class='num'>{_fmt(s.value)} {html.escape(s.unit)}</td>"
            f"<td>{html.escape(s.applies_to)}</td>"
            f"<td>{html.escape(s.message)}</td>"
            "</tr>"
        )
    return rows


def _head(report: QaReport) -> list[str]:
    name = report.imagename.rsplit("/", 1)[-1]
    fg, bg = BAND_COLOURS[report.overall_band]
    gate = report.gate()
    gate_fg, gate_bg = BAND_COLOURS["optimal" if gate == "archive" else "warning"]
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>QA {html.escape(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>QA report: {html.escape(name)} ({report.kind})</h1>",
        f"<div class='sub'>{html.escape(report.imagename)} &middot; {html.escape(report.created_utc)}</div>",
        f"<span class='badge' style='color:{fg};background:{bg}'>overall {report.overall_score:.2f} &middot; "
        f"{report.overall_band}</span>",
        f"<span class='badge' style='color:{gate_fg};background:{gate_bg}'>gate: {gate} "
        f"(min score {report.thresholds.min_score_for_archive:.2f})</span>",
    ]


def _not_judged_html(report: QaReport) -> str:
    """The short page of a product QA could not measure: why, and the plan it was made with."""
    parts = [
        *_head(report),
        f"<h2>Not judged</h2><p>{html.escape(report.not_judged_reason or 'nothing to measure')}</p>",
        "<h2>Scores</h2><table><tr><th>band</th><th>score</th><th>metric</th><th>value</th>"
        "<th>applies to</th><th>message</th></tr>",
        *_score_rows(report),
        "</table>",
        *_plan_section(report.plan),
        "</body></html>",
    ]
    return "\n".join(parts)


def _grid_facts(report: QaReport) -> list[tuple[str, str]]:
    g = report.metrics.grid
    if g is None:
        return []
    if g.beam_minor_arcsec is not None:
        beam = f"{g.pixels_per_beam:.2f} pixels across the {g.beam_minor_arcsec:.3g}&Prime; minor axis"
        if g.beam_minor_channel is not None and report.metrics.nchan > 1:
            beam += f" (channel {g.beam_minor_channel})"
    else:
        beam = "no usable beam"
    if g.beam_note:
        beam += f"; {html.escape(g.beam_note)}"
    facts = [("pixels per beam", beam)]
    if g.pb_edge is not None:
        needed = _value(g.needed_imsize) if g.needed_imsize else "-"
        facts.append(("primary beam at the image edge",
                      f"{g.pb_edge:.3f} (centre {_fmt(g.pb_peak)}, channel {_fmt(g.pb_channel)}); needed imsize "
                      f"{needed}"))
    if g.pb_fwhm_arcsec:
        facts.append(("primary beam FWHM",
                      f"{g.pb_fwhm_arcsec:.4g}&Prime; from {html.escape(g.pb_fwhm_source or '')}; image "
                      f"{g.image_width_arcsec:.4g}&Prime; = {_fmt(g.image_width_pb)} FWHM wide"))
    return facts


def render_html(report: QaReport, arrays: ReportArrays | None = None) -> str:
    """The full qa.html as one string (figures embedded); a short page when nothing was judged."""
    if report.metrics is None or arrays is None:
        return _not_judged_html(report)
    pm = report.metrics
    cube = pm.kind == "cube" and pm.nchan > 1
    cell = max(pm.cell_arcsec)
    beam = pm.beam_median
    image_valid = np.isfinite(arrays.image_map)
    figures = [_map_figure(arrays.image_map, image_valid, arrays.image_title, pm.unit, report, False, beam, cell)]
    if arrays.residual_map is not None:
        figures.append(
            _map_figure(
                arrays.residual_map, arrays.residual_valid, arrays.residual_title, pm.unit, report, True, beam, cell
            )
        )
    plots = []
    if cube:
        plots.append(_rms_figure(report))
        plots.append(_beam_figure(report))
    if arrays.residual_sample.size:
        plots.append(_histogram_figure(arrays.residual_sample, report))

    rows = _score_rows(report)
    conv = pm.convergence
    sens = pm.sensitivity
    facts = [
        ("peak", f"{pm.peak:.4g} {pm.unit} at pixel ({pm.peak_pixel[0]}, {pm.peak_pixel[1]}), channel "
         f"{pm.peak_pixel[2]}; RA {pm.peak_ra_deg:.5f}&deg;, Dec {pm.peak_dec_deg:.5f}&deg;"),
        ("rms (emission-free / residual)", f"{_fmt(pm.rms_emission_free)} / {_fmt(pm.rms_residual)} {pm.unit}"),
        ("dynamic range", _fmt(pm.dynamic_range)),
        ("residual peak / rms", _fmt(pm.residual_peak_to_rms)),
        ("theoretical rms", f"{_fmt(sens.theoretical_rms_jy)} Jy/beam (ratio {_fmt(sens.ratio)}); "
         f"{html.escape(sens.method)}"),
        ("restoring beam (median)", f"{beam.major_arcsec:.2f}&Prime; &times; {beam.minor_arcsec:.2f}&Prime;, "
         f"PA {beam.pa_deg:.1f}&deg;" if beam else "none"),
        ("deviant beam channels", _fmt(pm.deviant_beam_channels) if pm.deviant_beam_channels else "none"),
        ("clean model", f"{_fmt(conv.model_flux_jy)} Jy"
         + (f" in channel {conv.model_flux_channel} (the most of any)" if conv.model_flux_channel is not None else "")
         + f", {_fmt(conv.model_nonzero_pixels)} pixels in all; "
         f"mask {_fmt(conv.mask_pixels)} pixels ({_fmt(conv.mask_fraction)})"),
        ("iterations / stop", f"{_fmt(conv.iterations)} of {_fmt(conv.niter)}; {_fmt(conv.stop_reason)}"),
        ("shape / cell", f"{pm.shape} / {pm.cell_arcsec[0]:.3g}&Prime;"),
        ("frequency range", f"{pm.freq_min_hz / 1e9:.6f} - {pm.freq_max_hz / 1e9:.6f} GHz ({pm.nchan} channels)"),
        *_grid_facts(report),
    ]
    src_rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td class='num'>{s.expected_flux_jy:.4g}</td>"
        f"<td class='num'>{_fmt(s.recovered_flux_jy)}</td><td class='num'>{_fmt(s.flux_ratio)}</td>"
        f"<td class='num'>{_fmt(s.offset_pix)}</td><td class='num'>{_fmt(s.offset_arcsec)}</td>"
        f"<td>{html.escape(s.method)}</td></tr>"
        for s in pm.sources
    )
    parts = [
        *_head(report),
        "<h2>Scores</h2><table><tr><th>band</th><th>score</th><th>metric</th><th>value</th>"
        "<th>applies to</th><th>message</th></tr>",
        *rows,
        "</table><h2>Maps</h2><div class='grid'>",
        *(f"<div class='card'><img src='{p}' alt='map'></div>" for p in figures),
        "</div>",
    ]
    if plots:
        parts += ["<h2>Plots</h2><div class='grid'>"]
        parts += [f"<div class='card'><img src='{p}' alt='plot'></div>" for p in plots]
        parts += ["</div>"]
    if src_rows:
        parts += [
            "<h2>Truth sources</h2><table><tr><th>source</th><th>expected (Jy)</th><th>recovered (Jy)</th>"
            "<th>ratio</th><th>offset (px)</th><th>offset (arcsec)</th><th>method</th></tr>",
            src_rows,
            "</table><div class='sub'>Maps: cyan + true position, green &times; recovered position.</div>",
        ]
    parts += _plan_section(report.plan)
    parts += ["<h2>Metrics</h2><table class='kv'>"]
    parts += [f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in facts]
    parts += ["</table></body></html>"]
    return "\n".join(parts)
