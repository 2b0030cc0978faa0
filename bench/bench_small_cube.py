"""The fixed cost of a small parallel cube: serial tclean vs pclean() cold and on a kept (warm) cluster.

    .venv/bin/python bench/bench_small_cube.py [--calls 3] [--out bench/results/small_cube.json]

A 10-channel, 128-px cube (niter=0 and a shallow clean). Serial tclean runs in a fresh process
(CASA imported before the clock starts, as in a session that already uses CASA). pclean() runs in
another fresh process, `parallel=True, nworkers=2, keep_cluster=True`: its first call starts the
cluster (cold), the next calls reuse it (warm). Every time is the wall time of the call alone.
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

from bench_cube_engines import _run, refuse_if_busy  # noqa: E402

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
    pclean(imagename=out, parallel=True, nworkers=2, keep_cluster=True, **kw)
    times.append(time.perf_counter() - t)
close_kept_clusters()
print("RESULT " + json.dumps({"seconds": times}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per process (the first pclean() call is cold)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "small_cube.json"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args(argv)
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    ms = WORK / "small.ms"
    if not ms.exists():
        code = ("import sys; from pclean_provider.casa.runtime import ensure_casa_runtime; "
                "ensure_casa_runtime(log_dir=sys.argv[2]); from pclean_provider.casa.simulator import simulate_ms; "
                "simulate_ms(sys.argv[1], nchan=10, antennas=10, hours=1.0, integration_s=30, noise_jy=0.01, "
                "spectral_line=True, seed=16)")
        subprocess.run([sys.executable, "-c", code, str(ms), str(WORK / "logs")], check=True, cwd=REPO,
                       capture_output=True)
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
