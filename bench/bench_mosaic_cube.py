"""A 7-pointing mosaic cube: serial tclean against pclean() on 2 workers, timed and compared exactly.

    .venv/bin/python bench/bench_mosaic_cube.py [--cases dirty,cleaned] [--mpicasa] [--force]
                                                [--out bench/results/mosaic_cube.json]
    .venv/bin/python bench/bench_mosaic_cube.py --tiny --force   # a smoke test of the harness (~1 min)

The MS (simulated once under work/bench/mosaic-cube/, reused while its parameters are unchanged) has
7 pointings on the simulator's hexagon (`simulator.mosaic_offsets`, a third of the primary beam
apart) and one spectral window of 24 channels: the engine splits a mosaic cube into sessions
exactly only with interpolation='nearest' and spectral windows of fewer than 30 channels
(`casa.cube_session.mosaic_split_blocker`), so both hold here and pclean() must run 2 sessions.
The image covers every pointing out past its half-power radius.

Each case (dirty: niter=0; cleaned: a few hundred iterations to a threshold) runs serial tclean in a
fresh process (CASA imported before the clock starts, as in a session that already uses CASA), then
pclean() in another fresh process with `parallel=True, nworkers=2`: the 2-worker cluster is started
(and timed, `cluster_start_s`) before the call's clock, and the call reuses it (`keep_cluster`), so
the call time is the imaging alone; the whole-process times (launch to exit, measured by this
script) include CASA's import, the cluster's start and stop. Exactness: every product (.image,
.residual, .psf, .pb, .model, .sumwt) as max |pclean - tclean| / max |tclean| of that product
(pixels read with tests/image_compare.py; NaN in the same pixels of both is equal), the restoring
beams, and tclean's iterdone and stopcode.
With --mpicasa each case also runs CASA's own MPI parallel tclean (casampi under mpirun, 2 servers
beside the client rank, the bench's own peer venv: bench/mpicasa_env.py, bench/mpicasa_case.py) in a
fresh process, timed the same way (the tclean call, and the whole mpirun from launch to exit) and
compared with serial tclean like pclean().
Refuses to start when the 1-minute load average is above 0.5 unless --force is given.
Prints Markdown tables for bench/RESULTS.md and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file (bench/bench_mosaic_cube.py) rather than with -m
    sys.path.insert(0, str(REPO))

from bench.bench_cube_engines import _run, refuse_if_busy  # noqa: E402
from bench.json_files import write_json  # noqa: E402
from bench.report import exactness, ratio, sec  # noqa: E402

WORK = REPO / "work" / "bench" / "mosaic-cube"
PRODUCTS = (".image", ".residual", ".psf", ".pb", ".model", ".sumwt")
# The tolerances tests/casa/test_cube_sessions.py holds pclean to (the split is expected bit-identical).
TOLERANCE = {"dirty": 1e-5, "cleaned": 1e-4}
NWORKERS = 2

# The simulator's dish (25 m) at 1.4 GHz has a 33' primary beam, so the pointings are 11.1' apart
# and the outer six sit 11.1' from the centre; their half-power radius reaches 27.7' from it.
# What sets the size: every imager CASA builds for a mosaic cube computes the gridder's
# convolution function afresh, on a grid of ~10,000 pixels whatever the image (the comment above
# "mosaic-nearest" in tests/casa/test_cube_sessions.py): ~10 s each, and a fixed cost that does not
# shrink with the channels. Serial tclean pays it for the PSF, the PB and every major cycle; each
# session pays it as often (measured on the tiny shape: 3 each for niter=0), both sessions at once.
# Only gridding and the image planes split between the workers, so the data must make gridding
# outweigh those fixed ~30 s for a 2-worker call to be faster at all.
# "full": 16 antennas, 4 h at 12 s: 144,000 rows x 24 channels (3.5 M visibilities per pass), an
# estimated 15-20 s per gridding pass, serial tclean ~60-120 s dirty; the longest baselines (~1.6 km)
# give a ~28" beam. 360 px of 10" (60' across, ~2.8 px per beam) holds every pointing out past its
# half-power radius; the convolution functions' cost barely depends on it. 24 channels: the most
# under CASA's 30-channel narrowing limit that split evenly into 2 sessions of 12.
# "tiny": only for checking the harness end to end: 4 channels, a 32 px image of 1' pixels covering
# all 7 pointing centres (padded below 50 px, its convolution-function grid is ~200 x the padded size,
# about a third of the cost); 18 antennas so that the inner baselines (< 370 m, what a 1' cell keeps
# on the grid) carry data (with 2' pixels and 16 px none did: "weights all zero", a blank cube).
SHAPES = {
    "full": {"sim": dict(nchan=24, fields=7, antennas=16, hours=4.0, integration_s=12.0, noise_jy=0.01,
                         spectral_line=True, seed=23),
             "imaging": dict(imsize=[360, 360], cell="10arcsec"),
             "cleaned": dict(niter=300, threshold="10mJy")},
    "tiny": {"sim": dict(nchan=4, fields=7, antennas=18, hours=0.25, integration_s=120.0, noise_jy=0.01,
                         spectral_line=True, seed=23),
             "imaging": dict(imsize=[32, 32], cell="60arcsec"),
             "cleaned": dict(niter=30, threshold="50mJy")},
}
COMMON = {"specmode": "cube", "gridder": "mosaic", "interpolation": "nearest", "weighting": "briggs",
          "robust": 0.5, "deconvolver": "hogbom"}

_SIMULATE = r"""
import json, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from pclean_provider.casa.simulator import simulate_ms
t = time.perf_counter()
r = simulate_ms(sys.argv[1], **json.loads(sys.argv[2]))
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "nrows": r.nrows, "nfields": r.nfields,
                              "phasecenter": r.phasecenter}))
"""

# tclean's scratch files go to the working directory: each run works in its own image folder.
_TCLEAN = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from casatasks import tclean
kw = json.loads(sys.argv[1]); out = sys.argv[2]
os.chdir(os.path.dirname(out))
t = time.perf_counter(); ret = tclean(imagename=out, **kw) or {}; seconds = time.perf_counter() - t
val = lambda v: v.item() if hasattr(v, "item") else v
print("RESULT " + json.dumps({"seconds": seconds, **{k: val(ret.get(k)) for k in ("iterdone", "stopcode", "nmajordone")}}))
"""

# casatools is imported before the clock, as tclean's process imports casatasks: both calls start
# in a process that already uses CASA. The cluster is the one pclean() keeps for these settings
# (engine/kept_cluster.py), started here so that its start is timed apart from the call.
_PCLEAN = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
import casatools
from pclean_provider.config import PcleanConfig
from pclean_provider.engine.api import pclean
from pclean_provider.engine.kept_cluster import close_kept_clusters, kept_client, kept_clusters
# in_process_below_s=0: the cluster whatever the estimate (this bench measures the parallel cube).
kw = dict(json.loads(sys.argv[1]), parallel=True, nworkers=int(sys.argv[4]), keep_cluster=True, in_process_below_s=0)
out = sys.argv[2]
os.chdir(os.path.dirname(out))
t = time.perf_counter(); kept_client(PcleanConfig.from_flat(imagename=out, **kw).cluster)
cluster_start = time.perf_counter() - t
t = time.perf_counter(); r = pclean(imagename=out, **kw); seconds = time.perf_counter() - t
clusters = len(kept_clusters())  # 1: the call reused the cluster started above
t = time.perf_counter(); close_kept_clusters(); cluster_stop = time.perf_counter() - t
loop = r.cube_loop or {}
print("RESULT " + json.dumps({
    "seconds": seconds, "cluster_start_s": cluster_start, "cluster_stop_s": cluster_stop, "clusters": clusters,
    "iterdone": r.get("iterdone"), "stopcode": r.get("stopcode"), "nmajordone": r.get("nmajordone"),
    "nsubcubes": r.nsubcubes, "channels_per_subcube": [s.nchan for s in r.subcubes],
    "stage_seconds": loop.get("stage_seconds")}))
"""

# NaN-aware: a blank channel (no data, or beyond pblimit) holds NaN in the same pixels of both cubes,
# which is equality, not a difference; NaN in only one of them is reported as a mismatch.
_COMPARE = r"""
import json, os, sys
import numpy as np
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from tests.image_compare import beams, frequencies, pixels
got, ref = sys.argv[1], sys.argv[2]
diff, missing, nan_mismatch = {}, {}, []
for suffix in json.loads(sys.argv[4]):
    there = (os.path.isdir(got + suffix), os.path.isdir(ref + suffix))
    if not all(there):
        if any(there):
            missing[suffix] = "pclean" if there[1] else "tclean"
        continue
    a, b = pixels(got + suffix), pixels(ref + suffix)
    if a.shape != b.shape:
        missing[suffix] = f"shapes differ: {a.shape} vs {b.shape}"
        continue
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        nan_mismatch.append(suffix)
    d, ok = np.abs(a - b), ~np.isnan(b)
    worst = float(np.nanmax(d[ok & ~np.isnan(a)])) if (ok & ~np.isnan(a)).any() else 0.0
    peak = float(np.max(np.abs(b[ok]))) if ok.any() else 0.0
    diff[suffix] = worst / peak if peak > 0 else worst
bg, br = np.array(beams(got + ".image")), np.array(beams(ref + ".image"))
beam = float(np.max(np.abs(bg[:, 0] - br[:, 0]) / br[:, 0])) if bg.shape == br.shape and bg.size else None
print("RESULT " + json.dumps({
    "max_diff_over_peak": diff, "missing": missing, "nan_mismatch": nan_mismatch, "beam_major_rel_max": beam,
    "freq_max_abs_diff_hz": float(np.max(np.abs(frequencies(got + ".image") - frequencies(ref + ".image"))))}))
"""


def _timed(code: str, *args: str) -> dict:
    """A case in a fresh process: its RESULT, plus the whole process as seen from here (launch to exit)."""
    t = time.perf_counter()
    result = _run(code, *args)
    result["process_s"] = time.perf_counter() - t
    return result


def _ms_for(shape: str) -> tuple[str, dict]:
    """The shape's MS, simulated once; a marker written afterwards records its parameters, so a
    changed shape (or a simulation that died half-way) makes it again rather than reusing it."""
    sim = SHAPES[shape]["sim"]
    key = hashlib.sha256(json.dumps(sim, sort_keys=True).encode()).hexdigest()[:8]
    ms = WORK / f"mosaic-{shape}-{key}.ms"
    marker = WORK / f"mosaic-{shape}-{key}.sim.json"
    if ms.is_dir() and marker.is_file():
        return str(ms), {**json.loads(marker.read_text()), "reused": True}
    for stale in (ms, ms.with_suffix(".cl")):
        shutil.rmtree(stale, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    done = _run(_SIMULATE, str(ms), json.dumps({**sim, "overwrite": True}), str(WORK / "logs"))
    done["params"] = sim
    write_json(marker, done)
    return str(ms), {**done, "reused": False}


def run_case(name: str, ms: str, kw: dict, folder: Path, peer: dict | None = None) -> dict:
    """Serial tclean, then pclean() on 2 workers (and mpicasa with 2 servers when `peer`, the peer's
    venv, is given), then the comparison of their products with tclean's."""
    logs = str(WORK / "logs")
    images = {}
    for impl in ("tclean", "pclean", *(("mpicasa",) if peer else ())):
        images[impl] = folder / f"{name}-{impl}" / "img"
        shutil.rmtree(images[impl].parent, ignore_errors=True)
        images[impl].parent.mkdir(parents=True)
    tcl = _timed(_TCLEAN, json.dumps({"vis": ms, **kw}), str(images["tclean"]), logs)
    par = _timed(_PCLEAN, json.dumps({"vis": ms, **kw}), str(images["pclean"]), logs, str(NWORKERS))
    cmp = _run(_COMPARE, str(images["pclean"]), str(images["tclean"]), logs, json.dumps(PRODUCTS))
    row = summarize(name, tcl, par, cmp)
    if peer:
        mpi = run_mpicasa(peer, ms, kw, images["mpicasa"])
        mpi_cmp = (_run(_COMPARE, str(images["mpicasa"]), str(images["tclean"]), logs, json.dumps(PRODUCTS))
                   if mpi.get("ok") else None)
        row["mpicasa"] = summarize_peer(name, tcl, par, mpi, mpi_cmp)
    return row


def run_mpicasa(peer: dict, ms: str, kw: dict, image: Path) -> dict:
    """tclean under mpirun with NWORKERS servers, in the peer's venv: rank 0's figures (its call's
    seconds as `seconds`) and the whole mpirun from launch to exit (`process_s`)."""
    import subprocess

    from bench.mpicasa_env import mpirun_command, peer_environment

    case = {"vis": ms, "imagename": str(image), "params": kw, "case_dir": str(image.parent)}
    case_file, result_file = image.parent / "case.json", image.parent / "result.json"
    write_json(case_file, case)
    env, casa_names = peer_environment(peer["mpirun"], dict(os.environ))
    command = [*mpirun_command(peer["mpirun"], peer["python"], REPO / "bench" / "mpicasa_case.py", NWORKERS,
                               casa_names), str(case_file), str(result_file)]
    t = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=image.parent)
    process_s = time.perf_counter() - t
    (image.parent / "mpirun.log").write_text(proc.stdout + proc.stderr)
    data = json.loads(result_file.read_text()) if result_file.is_file() else {
        "ok": False, "error": f"mpirun exited {proc.returncode} without a result; see {image.parent / 'mpirun.log'}"}
    return {**data, "seconds": data.get("engine_s"), "process_s": process_s, "command": " ".join(command[:-2])}


def verdict(name: str, cmp: dict, same_iterations: bool) -> tuple[float, float | None, str]:
    """A run's products against serial tclean's: the case's tolerance, the worst product's difference
    over its peak, and the verdict (exact, within tolerance, NOT EXACT)."""
    tol = TOLERANCE.get(name, TOLERANCE["cleaned"])
    diffs = cmp["max_diff_over_peak"]
    worst = max(diffs.values()) if diffs else None
    within = (worst is not None and worst <= tol and not cmp["missing"] and not cmp.get("nan_mismatch")
              and same_iterations and (cmp.get("beam_major_rel_max") or 0.0) <= 1e-6)
    word = ("exact" if within and worst == 0.0 and not cmp.get("beam_major_rel_max")
            else "within tolerance" if within else "NOT EXACT")
    return tol, worst, word


def summarize_peer(name: str, tcl: dict, par: dict, mpi: dict, cmp: dict | None) -> dict:
    """mpicasa's row: its times against serial tclean and pclean's against it, and its exactness
    against serial tclean (tclean's iterdone only: mpicasa's rank 0 reports no stop code)."""
    if not mpi.get("ok") or cmp is None:
        return {"run": mpi, "verdict": f"FAILED: {mpi.get('error', '')[:300]}"}
    same_iter = mpi.get("iterations") == tcl.get("iterdone")
    tol, worst, word = verdict(name, cmp, same_iter)
    return {
        "run": mpi, "compare": cmp, "tolerance": tol, "worst_diff": worst, "same_iterations": same_iter,
        "serial_over_mpicasa_call": tcl["seconds"] / mpi["seconds"],
        "serial_over_mpicasa_process": tcl["process_s"] / mpi["process_s"],
        "mpicasa_over_pclean_call": mpi["seconds"] / par["seconds"],
        "mpicasa_over_pclean_process": mpi["process_s"] / par["process_s"],
        "verdict": word,
    }


def summarize(name: str, tcl: dict, par: dict, cmp: dict) -> dict:
    """One case's row: times, ratios, sessions and the exactness verdict."""
    same_iter = (tcl.get("iterdone"), tcl.get("stopcode")) == (par.get("iterdone"), par.get("stopcode"))
    tol, worst, word = verdict(name, cmp, same_iter)
    return {
        "tclean": tcl, "pclean": par, "compare": cmp, "tolerance": tol,
        "ratio_call": tcl["seconds"] / par["seconds"], "ratio_process": tcl["process_s"] / par["process_s"],
        "sessions_ok": par.get("nsubcubes") == NWORKERS, "same_iterations": same_iter, "worst_diff": worst,
        "verdict": word,
    }


def markdown(report: dict) -> str:
    """The cases as two Markdown tables (time, exactness) with the run's context, for bench/RESULTS.md."""
    sim = report["ms"]
    p = sim.get("params", {})
    lines = [
        f"Command: `{report['command']}` (raw: {report['out']}; 1-minute load average {report['load_at_start']:.2f} "
        f"at start; {report['cores']} cores). MS: {p.get('fields')} pointings, {p.get('antennas')} antennas, "
        f"{p.get('nchan')} channels, {p.get('hours')} h at {p.get('integration_s'):g} s ({sim.get('nrows', 0):,} rows); "
        f"image {report['imaging']['imsize'][0]} px of {report['imaging']['cell']}, gridder mosaic, "
        f"interpolation nearest, briggs 0.5, hogbom. pclean(): `parallel=True, nworkers={NWORKERS}`, its cluster "
        "started before the call's clock (column *cluster start*); whole process = launch to exit.",
    ]
    ceiling = report.get("parallel_ceiling_before")
    if ceiling:
        lines[0] += (f" Two processes at once gave {ceiling['two_process_throughput']:.2f}x one alone before the "
                     "cases (bench/parallel_ceiling.py).")
    lines += ["", "| case | tclean call s | tclean process s | pclean call s | pclean process s | cluster start s "
              "| serial / pclean (call) | serial / pclean (process) | sessions | iterdone tclean / pclean "
              "| stopcode tclean / pclean |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in report["cases"].items():
        t, q = c["tclean"], c["pclean"]
        sessions = f"{q.get('nsubcubes')}" + ("" if c["sessions_ok"] else f" (expected {NWORKERS})")
        lines.append(
            f"| {_case_label(name, report)} | {sec(t['seconds'])} | {sec(t['process_s'])} | {sec(q['seconds'])} | "
            f"{sec(q['process_s'])} | {sec(q.get('cluster_start_s'))} | **{ratio(c['ratio_call'])}** | "
            f"{ratio(c['ratio_process'])} | {sessions} | {t.get('iterdone')} / {q.get('iterdone')} | "
            f"{t.get('stopcode')} / {q.get('stopcode')} |")
    lines += ["", "| case | " + " | ".join(PRODUCTS) + " | beam major | verdict (tolerance) |",
              "|---|" + "---|" * (len(PRODUCTS) + 2)]
    for name, c in report["cases"].items():
        cmp = c["compare"]
        cells = [_product_cell(cmp, s) for s in PRODUCTS]
        lines.append(f"| {_case_label(name, report)} | " + " | ".join(cells) +
                     f" | {exactness(cmp.get('beam_major_rel_max'))} | {c['verdict']} ({c['tolerance']:.0e}) |")
    lines += ["", "Figures: max |pclean - tclean| / max |tclean| of each product over all channels "
              "(*exact*: bit-identical); beam major: largest relative difference over channels."]
    peers = {name: c["mpicasa"] for name, c in report["cases"].items() if "mpicasa" in c}
    if peers:
        lines += ["", f"CASA's MPI tclean (mpicasa, {NWORKERS} servers beside the client rank, the bench's peer "
                  "venv); its products compared with serial tclean's as above:", "",
                  "| case | mpicasa call s | mpicasa process s | serial / mpicasa (call) | serial / mpicasa (process) "
                  "| pclean faster than mpicasa (call) | pclean faster (process) | worst product vs serial "
                  "| iterations | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in peers.items():
            run = m["run"]
            if "compare" not in m:
                lines.append(f"| {_case_label(name, report)} | - | - | - | - | - | - | - | - | {m['verdict']} |")
                continue
            lines.append(
                f"| {_case_label(name, report)} | {sec(run['seconds'])} | {sec(run['process_s'])} | "
                f"{ratio(m['serial_over_mpicasa_call'])} | {ratio(m['serial_over_mpicasa_process'])} | "
                f"**{ratio(m['mpicasa_over_pclean_call'])}** | {ratio(m['mpicasa_over_pclean_process'])} | "
                f"{exactness(m['worst_diff'])} | {run.get('iterations')} | {m['verdict']} ({m['tolerance']:.0e}) |")
    return "\n".join(lines)


def _product_cell(cmp: dict, suffix: str) -> str:
    missing = cmp["missing"].get(suffix)
    if missing in ("pclean", "tclean"):
        return f"only in {'tclean' if missing == 'pclean' else 'pclean'}"
    if missing:
        return missing
    if suffix not in cmp["max_diff_over_peak"]:
        return "-"
    figure = exactness(cmp["max_diff_over_peak"][suffix])
    return figure + (" (NaN elsewhere)" if suffix in cmp.get("nan_mismatch", []) else "")


def _case_label(name: str, report: dict) -> str:
    extra = report.get("case_params", {}).get(name, {})
    if not extra.get("niter"):
        return "dirty (niter=0)"
    return f"{name} (niter {extra['niter']}" + (f", threshold {extra['threshold']})" if extra.get("threshold") else ")")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="dirty,cleaned", help="comma-separated subset of dirty,cleaned")
    parser.add_argument("--out", default=None, help="JSON results (default bench/results/mosaic_cube.json; "
                        "with --tiny work/bench/mosaic-cube/mosaic_cube_tiny.json, never the recorded results)")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--tiny", action="store_true", help="a tiny MS and image: checks the harness, times nothing")
    parser.add_argument("--mpicasa", action="store_true",
                        help="also run CASA's MPI tclean (2 servers) on each case, from the peer's venv")
    args = parser.parse_args(argv)
    shape = "tiny" if args.tiny else "full"
    cases = {"dirty": {"niter": 0}, "cleaned": SHAPES[shape]["cleaned"]}
    wanted = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(wanted) - set(cases))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}: use dirty, cleaned")
    out = Path(args.out) if args.out else (WORK / "mosaic_cube_tiny.json" if args.tiny
                                           else REPO / "bench" / "results" / "mosaic_cube.json")
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    from bench import parallel_ceiling

    peer = None
    if args.mpicasa:
        from bench.mpicasa_env import ensure_mpicasa_venv

        peer = ensure_mpicasa_venv()
    t0 = time.perf_counter()
    ms, sim = _ms_for(shape)
    made = "reused" if sim["reused"] else f"simulated in {sim['seconds']:.1f} s"
    print(f"MS {ms} ({made}): {sim['nrows']:,} rows", flush=True)
    imaging = SHAPES[shape]["imaging"]
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "out": str(out), "shape": shape,
              "load_at_start": load, "cores": os.cpu_count(), "ms": {"path": ms, **sim}, "imaging": imaging,
              "common": COMMON, "case_params": {n: cases[n] for n in wanted}, "nworkers": NWORKERS, "cases": {}}
    if not args.tiny:
        # What two CPUs give together right now: the ceiling of every 2-worker ratio below.
        report["parallel_ceiling_before"] = parallel_ceiling.measure()
    for name in wanted:
        kw = {**COMMON, **imaging, **cases[name]}
        row = run_case(name, ms, kw, WORK / shape, peer)
        report["cases"][name] = row
        print(f"{name}: tclean {row['tclean']['seconds']:.1f} s (process {row['tclean']['process_s']:.1f}), "
              f"pclean {row['pclean']['seconds']:.1f} s (process {row['pclean']['process_s']:.1f}, cluster start "
              f"{row['pclean']['cluster_start_s']:.1f}), serial/pclean {row['ratio_call']:.2f}x, "
              f"sessions {row['pclean']['nsubcubes']}, {row['verdict']} (worst {row['worst_diff']})", flush=True)
        if "mpicasa" in row:
            m = row["mpicasa"]
            print(f"{name}: mpicasa {m['run'].get('seconds')} s (process {m['run'].get('process_s', 0):.1f}), "
                  f"{m['verdict']}", flush=True)
    report["load_at_end"] = os.getloadavg()[0]
    report["elapsed_s"] = time.perf_counter() - t0
    write_json(out, report)
    print()
    print(markdown(report))
    print(f"\nwritten {out} ({report['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
