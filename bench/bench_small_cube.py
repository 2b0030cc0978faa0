"""The fixed cost of a small parallel cube: serial tclean vs pclean() cold and on a kept (warm) cluster.

    .venv/bin/python bench/bench_small_cube.py [--calls 3] [--out bench/results/small_cube.json]
    .venv/bin/python bench/bench_small_cube.py --whole-process [--repeats 2]
        [--out bench/results/small_cube_whole_process.json]

A 10-channel, 128-px cube (niter=0 and a shallow clean). Serial tclean runs in a fresh process
(CASA imported before the clock starts, as in a session that already uses CASA). pclean() runs in
another fresh process, `parallel=True, nworkers=2, keep_cluster=True, in_process_below_s=0` (the
cluster, however small the cube): its first call starts the cluster (cold), the next calls reuse it
(warm). Every time is the wall time of the call alone.

--whole-process: what a user waits for, launch to exit of a fresh `python -c` process (CASA's import
included), on two shapes (the 10-channel 128-px cube, and 48 channels of 256 px), dirty and cleaned:
serial tclean; `pclean(parallel=True, nworkers=2, in_process_below_s=0)` (the cluster: before the
small-cube rule); `pclean(parallel=True, nworkers=2)` (the default: a cube this small is imaged in
the process). Best of --repeats rounds, the three runs interleaved in each round.
Refuses to start when the 1-minute load average is above 0.5 unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_cube_engines import _run, refuse_if_busy  # noqa: E402
from json_files import write_json  # noqa: E402

WORK = REPO / "work" / "bench" / "small-cube"

PARAMS = {"specmode": "cube", "imsize": [128, 128], "cell": "10arcsec", "weighting": "briggs", "robust": 0.5,
          "deconvolver": "hogbom"}
CASES = {"dirty": {"niter": 0}, "cleaned": {"niter": 200, "threshold": "0.02Jy"}}

_TCLEAN = r"""
import json, os, shutil, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from casatasks import tclean
kw = json.loads(sys.argv[1]); out = sys.argv[2]; times = []
for i in range(int(sys.argv[4])):
    shutil.rmtree(os.path.dirname(out), ignore_errors=True); os.makedirs(os.path.dirname(out))
    t = time.perf_counter(); tclean(imagename=out, **kw); times.append(time.perf_counter() - t)
print("RESULT " + json.dumps({"seconds": times}))
"""

_PCLEAN = r"""
import json, os, shutil, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from pclean_provider.engine.api import pclean
from pclean_provider.engine.kept_cluster import close_kept_clusters
kw = json.loads(sys.argv[1]); out = sys.argv[2]; times = []
for i in range(int(sys.argv[4])):
    shutil.rmtree(os.path.dirname(out), ignore_errors=True); os.makedirs(os.path.dirname(out))
    t = time.perf_counter()
    pclean(imagename=out, parallel=True, nworkers=2, keep_cluster=True, in_process_below_s=0, **kw)
    times.append(time.perf_counter() - t)
close_kept_clusters()
print("RESULT " + json.dumps({"seconds": times}))
"""


# --whole-process: one fresh process per run, timed from launch to exit by this script.
_WHOLE = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
kw = json.loads(sys.argv[1]); out = sys.argv[2]; run = sys.argv[4]
os.chdir(os.path.dirname(out))
if run == "tclean":
    from casatasks import tclean
    t = time.perf_counter(); ret = tclean(imagename=out, **kw) or {}; call = time.perf_counter() - t
    res = {"iterdone": int(ret.get("iterdone", 0))}
else:
    from pclean_provider.engine.api import pclean
    extra = {"in_process_below_s": 0} if run == "cluster" else {}
    t = time.perf_counter(); r = pclean(imagename=out, parallel=True, nworkers=2, **extra, **kw)
    call = time.perf_counter() - t
    res = {"iterdone": r.get("iterdone"), "parallel": r.parallel, "sessions": r.nsubcubes,
           "in_process_reason": r.in_process_reason}
print("RESULT " + json.dumps({"call_s": call, **res}))
"""

# (MS, imaging) of each --whole-process shape: the cold/warm bench's cube, and 48 channels of 256 px
# (bench/sizes.py's 'small' MS with 48 channels).
SMALL_MS = {"nchan": 10, "antennas": 10, "hours": 1.0, "integration_s": 30}
WHOLE_SHAPES = {
    "10 ch, 128 px": (SMALL_MS, PARAMS),
    "48 ch, 256 px": ({"nchan": 48, "antennas": 12, "hours": 1.0, "integration_s": 30},
                      dict(PARAMS, imsize=[256, 256], cell="8arcsec")),
}
WHOLE_RUNS = ("tclean", "cluster", "default")


def _make_ms(ms: Path, shape: dict) -> None:
    if ms.exists():
        return
    code = ("import json, sys; from pclean_provider.casa.runtime import ensure_casa_runtime; "
            "ensure_casa_runtime(log_dir=sys.argv[2]); from pclean_provider.casa.simulator import simulate_ms; "
            "simulate_ms(sys.argv[1], noise_jy=0.01, spectral_line=True, seed=16, **json.loads(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(ms), str(WORK / "logs"), json.dumps(shape)], check=True,
                   cwd=REPO, capture_output=True)


def _whole(kw: dict, out: Path, run: str) -> dict:
    import shutil

    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    t = time.perf_counter()
    res = _run(_WHOLE, json.dumps(kw), str(out), str(WORK / "logs"), run)
    return {"process_s": time.perf_counter() - t, **res}


def whole_process(args, load: float) -> int:
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "cores": os.cpu_count(), "repeats": args.repeats, "shapes": {}}
    for shape_name, (shape, params) in WHOLE_SHAPES.items():
        ms = WORK / ("small.ms" if shape == SMALL_MS else f"whole-{shape['nchan']}ch.ms")
        _make_ms(ms, shape)
        for case, extra in CASES.items():
            kw = {"vis": str(ms), **params, **extra}
            runs: dict[str, list[dict]] = {r: [] for r in WHOLE_RUNS}
            for _ in range(args.repeats):
                for run in WHOLE_RUNS:
                    runs[run].append(_whole(kw, WORK / "whole" / run / "img", run))
            best = {r: min(x["process_s"] for x in runs[r]) for r in WHOLE_RUNS}
            row = {"ms": shape, "params": params, **extra, "runs": runs, "best_process_s": best,
                   "cluster_over_serial": best["cluster"] / best["tclean"],
                   "default_over_serial": best["default"] / best["tclean"],
                   "default_path": "in-process" if runs["default"][0].get("in_process_reason") else "cluster"}
            report["shapes"][f"{shape_name}, {case}"] = row
            print(f"{shape_name}, {case}: serial {best['tclean']:.1f} s, cluster {best['cluster']:.1f} s "
                  f"({row['cluster_over_serial']:.2f}x), default {best['default']:.1f} s "
                  f"({row['default_over_serial']:.2f}x, {row['default_path']})", flush=True)
    report["load_at_end"] = os.getloadavg()[0]
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per process (the first pclean() call is cold)")
    parser.add_argument("--whole-process", action="store_true",
                        help="serial tclean vs pclean() on the cluster vs pclean()'s default, each a fresh process")
    parser.add_argument("--repeats", type=int, default=2, help="--whole-process: rounds (the best one counts)")
    parser.add_argument("--out", default=None, help="JSON to write (default: bench/results/small_cube.json, or "
                        "small_cube_whole_process.json with --whole-process)")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args(argv)
    args.out = args.out or str(REPO / "bench" / "results" / (
        "small_cube_whole_process.json" if args.whole_process else "small_cube.json"))
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    if args.whole_process:
        return whole_process(args, load)
    ms = WORK / "small.ms"
    _make_ms(ms, SMALL_MS)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "cores": os.cpu_count(), "params": PARAMS, "cases": {}}
    for name, extra in CASES.items():
        kw = {"vis": str(ms), **PARAMS, **extra}
        tcl = _run(_TCLEAN, json.dumps(kw), str(WORK / f"{name}-tclean" / "img"), str(WORK / "logs"), str(args.calls))
        par = _run(_PCLEAN, json.dumps(kw), str(WORK / f"{name}-pclean" / "img"), str(WORK / "logs"), str(args.calls))
        serial = min(tcl["seconds"])
        warm = min(par["seconds"][1:]) if len(par["seconds"]) > 1 else None
        row = {"tclean_s": tcl["seconds"], "pclean_s": par["seconds"], "cold_over_serial": par["seconds"][0] / serial,
               "warm_over_serial": warm / serial if warm else None}
        report["cases"][name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
