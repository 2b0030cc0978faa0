"""Calibrate engine/cube/small_cube.py: serial tclean's seconds against a cube's size, on this machine.

    .venv/bin/python bench/small_cube_calibration.py [--force] [--out bench/results/small_cube_calibration.json]

Simulates a few MSs (in work/bench/small-cube-calibration/, kept for later runs) and images each
with serial tclean in a fresh process: CASA imported and the MS's rows read (as the engine's
preflight reads them) before the clock, best of two calls. Dirty cubes on every shape, a shallow
clean on some (the cleaned/dirty ratio). Then fits the estimate's three constants (set-up, per
visibility, per pixel and channel) to the dirty cubes by least squares, and prints measured against
the module's current estimate, with the estimate of bench/sizes.py's cubes (the medium cube must
stay on the cluster) and of the 7-pointing mosaic cube of bench/RESULTS.md (its measured serial time
against the standard-gridder estimate gives the slow-gridder factor).
Refuses to start when the 1-minute load average is above 0.5 unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_cube_engines import _run, refuse_if_busy  # noqa: E402
from json_files import write_json  # noqa: E402

from pclean_provider.engine.cube import small_cube  # noqa: E402

WORK = REPO / "work" / "bench" / "small-cube-calibration"

IMAGING = {"specmode": "cube", "weighting": "briggs", "robust": 0.5, "deconvolver": "hogbom", "gridder": "standard",
           "datacolumn": "data"}
CLEAN = {"niter": 200, "threshold": "0.02Jy"}  # bench_small_cube.py's shallow clean

# name: (MS, image size, cell, also cleaned). Chosen so that rows, channels and pixels vary apart.
SHAPES = {
    "ch10-px128": (dict(antennas=10, nchan=10, hours=1.0, integration_s=30), 128, "10arcsec", True),
    "ch16-px128-rows": (dict(antennas=16, nchan=16, hours=2.0, integration_s=10), 128, "10arcsec", False),
    "ch32-px512": (dict(antennas=10, nchan=32, hours=1.0, integration_s=30), 512, "4arcsec", False),
    "ch48-px256": (dict(antennas=12, nchan=48, hours=1.0, integration_s=30), 256, "8arcsec", True),
    "ch48-px256-rows": (dict(antennas=10, nchan=48, hours=3.0, integration_s=20), 256, "8arcsec", False),
}

# The 7-pointing mosaic cube of bench/RESULTS.md (sessions 15-16): serial tclean dirty 82.8-83.4 s.
MOSAIC = {"nchan": 24, "rows": 144_000, "imsize": 360, "serial_dirty_s": 83.1}

_TCLEAN = r"""
import json, os, shutil, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from casatasks import tclean
from pclean_provider.casa.ms_selection import check_selection
kw = json.loads(sys.argv[1]); out = sys.argv[2]; times = []; cpu = []
visibilities = check_selection(kw["vis"]).visibilities()
for i in range(int(sys.argv[4])):
    shutil.rmtree(os.path.dirname(out), ignore_errors=True); os.makedirs(os.path.dirname(out))
    os.chdir(os.path.dirname(out))
    t, c = time.perf_counter(), time.process_time()
    ret = tclean(imagename=out, **kw) or {}
    times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
print("RESULT " + json.dumps({"seconds": times, "cpu_seconds": cpu, "visibilities": visibilities,
                              "iterdone": int(ret.get("iterdone", 0)), "nmajordone": int(ret.get("nmajordone", 0))}))
"""


def _ms(name: str, shape: dict) -> str:
    ms = WORK / f"{name}.ms"
    if not ms.exists():
        code = ("import json, sys; from pclean_provider.casa.runtime import ensure_casa_runtime; "
                "ensure_casa_runtime(log_dir=sys.argv[2]); from pclean_provider.casa.simulator import simulate_ms; "
                "simulate_ms(sys.argv[1], noise_jy=0.01, spectral_line=True, seed=16, **json.loads(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(ms), str(WORK / "logs"), json.dumps(shape)], check=True,
                       cwd=REPO, capture_output=True)
    return str(ms)


def fit(rows: list[dict]) -> dict[str, float]:
    """Least squares of seconds = set-up + a * visibilities + b * channels * pixels over dirty cubes."""
    import numpy as np

    a = np.array([[1.0, r["visibilities"], r["nchan"] * r["imsize"] ** 2] for r in rows])
    y = np.array([r["dirty_s"] for r in rows])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"SET_UP_S": float(coef[0]), "PER_VISIBILITY_S": float(coef[1]), "PER_PIXEL_CHANNEL_S": float(coef[2])}


def _estimate(nchan: int, imsize: int, visibilities: float, cleaned: bool, gridder: str = "standard") -> float:
    return small_cube.estimate_serial_seconds(small_cube.CubeWork(
        nchan=nchan, nx=imsize, ny=imsize, visibilities=visibilities, cleaned=cleaned, gridder=gridder))


def predictions() -> list[dict]:
    """The current estimate for the bench's cube sizes and the mosaic cube, and what it decides on 2 workers."""
    from sizes import SIZES, cube_params

    out = []
    for name, size in SIZES.items():
        ms = size.cube_ms
        rows = ms.antennas * (ms.antennas - 1) // 2 * int(round(ms.hours * 3600 / ms.integration_s))
        params = cube_params(size)
        for cleaned in (False, True):
            est = _estimate(ms.nchan, size.cube_imsize, rows * ms.nchan, cleaned)
            choice = small_cube.choose(est, 2, 20.0)
            out.append({"case": f"bench size {name}: {ms.nchan} ch, {params['imsize'][0]} px, {rows:,} rows, "
                                f"{'cleaned' if cleaned else 'dirty'}", "estimate_s": est,
                        "in_process": choice.in_process})
    vis = MOSAIC["rows"] * MOSAIC["nchan"]
    standard = _estimate(MOSAIC["nchan"], MOSAIC["imsize"], vis, False)
    mosaic = _estimate(MOSAIC["nchan"], MOSAIC["imsize"], vis, False, gridder="mosaic")
    out.append({"case": f"7-pointing mosaic cube, dirty, measured {MOSAIC['serial_dirty_s']} s",
                "estimate_s": mosaic, "standard_estimate_s": standard,
                "measured_over_standard_gridding": (MOSAIC["serial_dirty_s"] - standard)
                / max(small_cube.PER_VISIBILITY_S * vis, 1e-9) + 1.0,
                "in_process": small_cube.choose(mosaic, 2, 20.0).in_process})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "small_cube_calibration.json"))
    parser.add_argument("--calls", type=int, default=2, help="tclean calls per process (the best one counts)")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--predict-only", action="store_true", help="only print the estimate for the bench sizes")
    args = parser.parse_args(argv)
    if args.predict_only:
        for row in predictions():
            print(json.dumps(row))
        return 0
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (shape, imsize, cell, cleaned) in SHAPES.items():
        ms = _ms(name, shape)
        kw = {"vis": ms, **IMAGING, "imsize": [imsize, imsize], "cell": cell}
        dirty = _run(_TCLEAN, json.dumps({**kw, "niter": 0}), str(WORK / f"{name}-dirty" / "img"),
                     str(WORK / "logs"), str(args.calls))
        row = {"shape": name, **shape, "imsize": imsize, "visibilities": dirty["visibilities"],
               "dirty_s": min(dirty["seconds"]), "dirty_calls_s": dirty["seconds"],
               "dirty_cpu_s": dirty["cpu_seconds"]}
        if cleaned:
            cln = _run(_TCLEAN, json.dumps({**kw, **CLEAN}), str(WORK / f"{name}-cleaned" / "img"),
                       str(WORK / "logs"), str(args.calls))
            row.update(cleaned_s=min(cln["seconds"]), cleaned_calls_s=cln["seconds"], cleaned_cpu_s=cln["cpu_seconds"],
                       iterdone=cln["iterdone"],
                       nmajordone=cln["nmajordone"], cleaned_over_dirty=min(cln["seconds"]) / row["dirty_s"])
        row["estimate_dirty_s"] = _estimate(shape["nchan"], imsize, row["visibilities"], False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "cores": os.cpu_count(), "imaging": IMAGING, "clean": CLEAN, "rows": rows, "fit": fit(rows),
              "module": {k: getattr(small_cube, k) for k in ("SET_UP_S", "PER_VISIBILITY_S", "PER_PIXEL_CHANNEL_S",
                                                            "CLEANED_FACTOR", "SLOW_GRIDDER_FACTOR")},
              "predictions": predictions()}
    print("fit: " + json.dumps(report["fit"]))
    for row in report["predictions"]:
        print(json.dumps(row))
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
