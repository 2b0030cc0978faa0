"""Bytes read per pass over the data, fitted from the measured reads benches, against the CPU time per pass.

Used by bench/scaling_survey.py. Pure Python on the stored JSONs in bench/results/ (no CASA, seconds).

Measured inputs (shape a: 10 antennas, 48 channels, 24,300 rows, 256 px, cleaned to 5 mJy; `rchar` of
every process, so the MS and CASA's own image traffic in the session folders alike):
- reads-relayout.json: the exact loop with `relayout_ms=True` on 2, 4 and 8 workers (after the IERS fix);
- reads-timed-plain.json: the exact loop on the MS as simulated, 2 workers (after the IERS fix);
- reads.json: the same on 8 workers, and in its note 2 and 4 workers' totals, all before the IERS fix;
- reads-copy-before-iers-fix.json: the loop on a copy laid out as `relayout_ms` lays it, 2, 4, 8
  workers, before the IERS fix. Against reads-relayout.json (same layout, same worker counts, after
  the fix) it gives what the IERS re-reads cost at each worker count, which is subtracted from the
  plain layout's before-the-fix figures (checked at 2 workers, where both exist).

Model, per pass (bytes of a run over its passes: tclean's 23, the loop's 22):
- loop with W sessions: K + sum over sessions of (A + B * n_s), n_s = the session's own channels plus
  its margin channels (one each side with a neighbour for linear interpolation), K the coordinator's;
- serial tclean: A + B_serial * C, with the same per-row part A as the loop's sessions on that layout
  (every reader reads every row's columns once per pass) and the rest of its measured bytes per channel.
A and B are a least-squares line through the per-session points (one per worker process).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

LOOP_PASSES = 22  # the loop's passes in these runs (PSF + major cycles), as its JSONs record
# Totals in reads.json's note (the run before the margin-planes fix; per-process figures not kept).
PLAIN_BEFORE_FIX_TOTAL_GB = {2: 27.20, 4: 48.74}
# The shape a MS on disk (`du -sb`), 48 channels: what `relayout_ms` reads once and writes once.
MS_BYTES_SHAPE_A = 21_465_314
SHAPE_A_CHANNELS = 48
# The MS's DATA column per pass, all 48 channels (strace attribution, RESULTS.md session 13): the
# part of B that is the MS's own spectral data; the rest of B is image traffic in the session folders.
DATA_BYTES_PER_PASS_SHAPE_A = 19e6


def session_channels(nchan: int, sessions: int, margin: int = 1) -> list[int]:
    """Channels each session grids: its near-equal share plus `margin` per side that has a neighbour."""
    sessions = max(1, min(sessions, nchan))
    base, extra = divmod(nchan, sessions)
    own = [base + (1 if k < extra else 0) for k in range(sessions)]
    if sessions == 1:
        return own
    return [n + margin * ((k > 0) + (k < sessions - 1)) for k, n in enumerate(own)]


def fit_line(points: list[tuple[float, float]]) -> dict:
    """Least-squares y = a + b x (numpy's, as bench_session_pass fits); each point's residual relative to its y."""
    xs = np.array([x for x, _ in points], dtype=float)
    ys = np.array([y for _, y in points], dtype=float)
    if len(set(xs.tolist())) < 2:
        raise ValueError("need points at two or more distinct x")
    b, a = (float(v) for v in np.polyfit(xs, ys, 1))
    return {"a": a, "b": b, "residuals": [(a + b * x - y) / y for x, y in points]}


def loop_bytes(fit: dict, nchan: int, workers: int, margin: int = 1) -> float:
    """Bytes one pass of the exact loop reads, all sessions and the coordinator (sessions capped as the
    survey model caps them: at least two channels each)."""
    sessions = max(1, min(workers, nchan // 2))
    # The sum over session_channels in closed form: every inner boundary adds a margin to both sides.
    gridded = nchan + 2 * margin * (sessions - 1)
    return fit["coordinator"] + sessions * fit["a"] + fit["b"] * gridded


def serial_bytes(fit: dict, nchan: int) -> float:
    return fit["a"] + fit["serial_b"] * nchan


def crossover(read_s: Callable[[int], float], cpu_s: Callable[[int], float], wmax: int) -> int | None:
    """Smallest worker count at which a pass's reads take at least its CPU time (None up to wmax).

    Reads grow with the workers (every session reads the per-row part) while the CPU time per session
    falls, so the first such count is where reads start to set the pace.
    """
    for w in range(1, wmax + 1):
        if read_s(w) >= cpu_s(w):
            return w
    return None


def _workers(case: dict) -> list[int]:
    """Per-worker rchar, smallest first (the two edge sessions, one margin side each, read least)."""
    return sorted(v["rchar"] for name, v in case["by_process"].items() if name != "coordinator")


def _load(results: Path, name: str) -> dict:
    return json.loads((results / name).read_text())["cases"]


def fit_reads(results: Path, margin: int = 1) -> dict:
    """Both layouts' per-pass fits, the IERS correction and the residuals at each measured worker count."""
    relayout = _load(results, "reads-relayout.json")
    before_fix_copy = _load(results, "reads-copy-before-iers-fix.json")
    plain8 = _load(results, "reads.json")["workers8"]
    plain2 = _load(results, "reads-timed-plain.json")["workers2"]
    nchan = SHAPE_A_CHANNELS

    # What the IERS re-reads cost, per worker process: the same layout before and after the fix.
    iers = {w: [b - a for b, a in zip(_workers(before_fix_copy[f"workers{w}"]), _workers(relayout[f"workers{w}"]),
                                      strict=True)] for w in (2, 4, 8)}

    def points(per_worker: dict[int, list[float]]) -> list[tuple[float, float]]:
        return [(n, y / LOOP_PASSES) for w, ys in per_worker.items()
                for n, y in zip(sorted(session_channels(nchan, w, margin)), ys, strict=True)]

    rl_pts = points({w: _workers(relayout[f"workers{w}"]) for w in (2, 4, 8)})
    plain_pts = points({2: _workers(plain2), 8: [y - c for y, c in zip(_workers(plain8), iers[8], strict=True)]})
    fits = {}
    for layout, pts, coords in (("relayout", rl_pts, [relayout[f"workers{w}"] for w in (2, 4, 8)]),
                                ("plain", plain_pts, [plain2, plain8])):
        line = fit_line(pts)
        fits[layout] = {"a": line["a"], "b": line["b"], "max_abs_session_residual": max(map(abs, line["residuals"])),
                        "coordinator": sum(c["by_process"]["coordinator"]["rchar"] for c in coords)
                        / len(coords) / LOOP_PASSES, "session_points": len(pts)}
    serial = relayout["tclean"]
    serial_pass = serial["total"]["rchar"] / serial["major_cycles"]
    fits["plain"]["serial_pass_bytes"] = serial_pass
    fits["plain"]["serial_b"] = (serial_pass - fits["plain"]["a"]) / nchan

    # Totals at each measured worker count against the fit (per pass).
    plain_totals = {2: plain2["total"]["rchar"],
                    4: PLAIN_BEFORE_FIX_TOTAL_GB[4] * 1e9 - sum(iers[4]),
                    8: plain8["total"]["rchar"] - sum(iers[8])}
    checks = []
    for layout, totals in (("relayout", {w: relayout[f"workers{w}"]["total"]["rchar"] for w in (2, 4, 8)}),
                           ("plain", plain_totals)):
        for w, total in totals.items():
            measured = total / LOOP_PASSES
            model = loop_bytes(fits[layout], nchan, w, margin)
            checks.append({"layout": layout, "workers": w, "measured_bytes_per_pass": measured,
                           "model_bytes_per_pass": model, "residual": model / measured - 1,
                           "source": "after the IERS fix" if layout == "relayout" or w == 2
                           else "before the IERS fix, less the IERS re-reads measured at that worker count"})
    two_before = PLAIN_BEFORE_FIX_TOTAL_GB[2] * 1e9 - sum(iers[2])
    return {"margin": margin, "passes_per_loop_run": LOOP_PASSES, "fits": fits, "checks": checks,
            "iers_bytes_per_session_pass": {w: sum(v) / len(v) / LOOP_PASSES for w, v in iers.items()},
            "iers_correction_check_2_workers": {"corrected_before_fix": two_before,
                                                "measured_after_fix": plain2["total"]["rchar"]}}


def timed_check(results: Path, cpu_pass_s: Callable[[int, int], float]) -> list[dict]:
    """The CPU-per-pass model times the passes against the timed reads benches (idle machine, one run each).

    The timed runs include minor cycles and, with `relayout_ms`, the copy: a check of scale, not a fit.
    """
    out = []
    for name in ("reads-timed-plain.json", "reads-timed-relayout.json"):
        path = results / name
        if not path.exists():
            continue
        cases = json.loads(path.read_text())["cases"]
        for key, case in cases.items():
            if "seconds" not in case:
                continue
            workers = case.get("sessions", 1)
            per_session = SHAPE_A_CHANNELS if workers == 1 else max(session_channels(SHAPE_A_CHANNELS, workers, 0))
            model = case["major_cycles"] * cpu_pass_s(per_session, 1)
            out.append({"file": name, "case": key, "measured_s": case["seconds"], "model_s": model})
    return out


def ms_bytes(nchan: int) -> float:
    """The MS at the survey's channels, same rows as shape a: its size scales with the channels."""
    return MS_BYTES_SHAPE_A * nchan / SHAPE_A_CHANNELS


def pace_rows(reads: dict, cpu_pass_s: Callable[[int, int], float], channels: tuple[int, ...],
              workers: tuple[int, ...], bandwidths_gbs: tuple[float, ...]) -> tuple[list[dict], list[dict]]:
    """Per (bandwidth, channels, workers): CPU and read seconds of one pass, and which sets the pace;
    and per (bandwidth, channels): the crossover worker count of each case.

    `cpu_pass_s(nchan, workers)` is the survey model's CPU time of one pass (workers=1: serial tclean).
    Cases: the loop on the MS as it arrives ("plain"), with `relayout_ms` ("relayout": its copy is one
    read and one write of the MS, paid once per run, shown apart), and the same with the session
    folders' image traffic kept off the server ("relayout, MS only": A plus the DATA column's bytes per
    channel; a what-if, not measured as such).
    """
    plain, relayout = reads["fits"]["plain"], reads["fits"]["relayout"]
    margin = reads["margin"]
    ms_only = {**relayout, "b": DATA_BYTES_PER_PASS_SHAPE_A / SHAPE_A_CHANNELS}
    cases = {"plain": plain, "relayout": relayout, "relayout_ms_only": ms_only}
    rows, crossings = [], []
    for gbs in bandwidths_gbs:
        bw = gbs * 1e9
        for nchan in channels:
            serial_cpu = cpu_pass_s(nchan, 1)
            serial_read = serial_bytes(plain, nchan) / bw
            for w in workers:
                cpu = cpu_pass_s(nchan, w)
                row = {"bandwidth_gbs": gbs, "channels": nchan, "workers": w, "cpu_s": cpu,
                       "serial_cpu_s": serial_cpu, "serial_read_s": serial_read,
                       "serial_pace": "reads" if serial_read > serial_cpu else "cpu",
                       "relayout_copy_s": 2 * ms_bytes(nchan) / bw}
                for name, fit in cases.items():
                    read = loop_bytes(fit, nchan, w, margin) / bw
                    row[f"{name}_read_s"] = read
                    row[f"{name}_pace"] = "reads" if read > cpu else "cpu"
                rows.append(row)
            cross = {"bandwidth_gbs": gbs, "channels": nchan, "serial_pace": rows[-1]["serial_pace"]}
            for name, fit in cases.items():
                cross[name] = crossover(lambda w, f=fit, c=nchan, b=bw: loop_bytes(f, c, w, margin) / b,
                                        lambda w, c=nchan: cpu_pass_s(c, w), nchan // 2)
            crossings.append(cross)
    return rows, crossings


def markdown(reads: dict, rows: list[dict], crossings: list[dict], timed: list[dict] = ()) -> str:
    plain, rl = reads["fits"]["plain"], reads["fits"]["relayout"]
    mb = 1e6
    out = ["Fit, bytes per pass (a session: A + B x its channels incl. margin; the coordinator K):",
           f"- MS as simulated: A = {plain['a'] / mb:.0f} MB, B = {plain['b'] / mb:.2f} MB per channel, K = "
           f"{plain['coordinator'] / mb:.1f} MB ({plain['session_points']} session points, worst "
           f"{plain['max_abs_session_residual']:.1%}); serial tclean {plain['serial_pass_bytes'] / mb:.0f} MB per "
           f"pass = A + {plain['serial_b'] / mb:.2f} MB per channel.",
           f"- `relayout_ms=True`: A = {rl['a'] / mb:.1f} MB, B = {rl['b'] / mb:.2f} MB per channel, K = "
           f"{rl['coordinator'] / mb:.1f} MB ({rl['session_points']} session points, worst "
           f"{rl['max_abs_session_residual']:.1%}).", "",
           "| layout | workers | measured MB per pass | model MB per pass | residual |", "|---|---|---|---|---|"]
    out += [f"| {c['layout']} | {c['workers']} | {c['measured_bytes_per_pass'] / mb:,.0f} | "
            f"{c['model_bytes_per_pass'] / mb:,.0f} | {c['residual']:+.1%} |" for c in reads["checks"]]
    iers = reads["iers_correction_check_2_workers"]
    out += ["", f"IERS correction, checked at 2 workers on the MS as simulated: {iers['corrected_before_fix'] / 1e9:.2f} "
            f"GB (before the fix, less the re-reads) against {iers['measured_after_fix'] / 1e9:.2f} GB measured after it."]
    if timed:
        out += ["CPU per pass x passes against the timed cleans (whose time includes minor cycles and the copy): "
                + "; ".join(f"{t['file']} {t['case']}: {t['model_s']:.1f} s model, {t['measured_s']:.1f} s measured"
                            for t in timed) + "."]
    out += ["", "| GB/s | channels | workers | CPU s per pass | serial tclean: CPU s / read s | loop, MS as simulated: "
            "read s | loop, relayout_ms: read s (+ copy once) | relayout_ms, MS bytes only: read s |",
            "|---|---|---|---|---|---|---|---|"]

    def cell(r: dict, name: str) -> str:
        s = f"{r[f'{name}_read_s']:,.1f}"
        return f"**{s} reads**" if r[f"{name}_pace"] == "reads" else s

    for r in rows:
        serial = f"{r['serial_cpu_s']:,.0f} / {r['serial_read_s']:,.1f}"
        out.append(f"| {r['bandwidth_gbs']:g} | {r['channels']:,} | {r['workers']:,} | {r['cpu_s']:,.1f} | {serial} | "
                   f"{cell(r, 'plain')} | {cell(r, 'relayout')} (+{r['relayout_copy_s']:,.1f}) | "
                   f"{cell(r, 'relayout_ms_only')} |")

    def show(w: int | None) -> str:
        return "none up to C/2 sessions" if w is None else f"{w:,}"

    out += ["", "| GB/s | channels | serial tclean | crossover W, MS as simulated | crossover W, relayout_ms "
            "| crossover W, relayout_ms, MS bytes only |", "|---|---|---|---|---|---|"]
    out += [f"| {c['bandwidth_gbs']:g} | {c['channels']:,} | {c['serial_pace']} sets the pace | {show(c['plain'])} | "
            f"{show(c['relayout'])} | {show(c['relayout_ms_only'])} |" for c in crossings]
    return "\n".join(out)
