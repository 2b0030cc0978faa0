"""The cube engines side by side: serial tclean, the exact loop (sub-cube sessions) and the independent
engine (one tclean run per sub-cube), cleaned to a threshold, on two MS shapes, in one run.

    .venv/bin/python -m bench.bench_cube_engines [--shapes a,b] [--cases sessions,...] [--out ...json]

Every case runs in a fresh process (serial tclean too), on a fresh 2-worker LocalCluster; the
bytes each worker process read (/proc/<pid>/io rchar) are recorded per case, so the data read per
session can be compared with the channels it holds. Refuses to start when the 1-minute load
average is above 0.5 (other work would distort the ratios) unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "work" / "bench" / "cube-engines"

# (antennas, channels, hours, integration s, imsize, cell): A is the 48-channel cube, B a
# wider, larger-image cube; both cleaned to a threshold a few sigma above the noise.
SHAPES = {
    "a": dict(antennas=10, nchan=48, hours=3.0, integration_s=20, imsize=256, cell="8arcsec",
              threshold="5mJy", noise_jy=0.05),
    "b": dict(antennas=12, nchan=96, hours=2.0, integration_s=30, imsize=384, cell="6arcsec",
              threshold="5mJy", noise_jy=0.05),
    # The recorded bench's medium cube (bench/sizes.py): only serial tclean and the exact loop.
    "medium": dict(antennas=12, nchan=128, hours=2.0, integration_s=30, imsize=512, cell="4arcsec",
                   threshold="10mJy", noise_jy=0.005, cases=("tclean", "sessions")),
}

_CASE = r"""
import json, os, sys, time, resource
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
spec = json.loads(sys.argv[1]); kw = spec["tclean"]; out = sys.argv[2]
os.makedirs(os.path.dirname(out), exist_ok=True)
os.chdir(os.path.dirname(out))
if spec["engine"] == "tclean":
    from casatasks import tclean
    t = time.perf_counter(); ret = tclean(imagename=out, **kw) or {}
    res = {"seconds": time.perf_counter() - t, "iterations": int(ret.get("iterdone", 0)),
           "stopcode": int(ret.get("stopcode", 0))}
else:
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.engine.api import run
    def rchar(client):
        def one():
            with open(f"/proc/{os.getpid()}/io") as fh:
                return int(next(l for l in fh if l.startswith("rchar")).split()[1])
        return client.run(one)
    t0 = time.perf_counter()
    with open_cluster(ClusterSpec(nworkers=2)) as handle:
        started = time.perf_counter() - t0
        before = rchar(handle.client)
        cfg = PcleanConfig.from_flat(imagename=out, parallel=True, cube_engine=spec["engine"],
                                     cube_chunksize=spec.get("chunksize", -1), **kw)
        t = time.perf_counter(); r = run(cfg, client=handle.client); seconds = time.perf_counter() - t
        after = rchar(handle.client)
    loop = r.cube_loop or {}
    res = {"seconds": seconds, "cluster_start_s": started, "iterations": r.iterations,
           "stopcode": loop.get("stopcode"), "nsubcubes": r.nsubcubes,
           "channels_per_subcube": [s.nchan for s in r.subcubes], "stage_seconds": loop.get("stage_seconds"),
           "concat_s": r.concat.seconds if r.concat else None,
           "read_bytes_per_worker": sorted(after[w] - before.get(w, 0) for w in after)}
print("RESULT " + json.dumps(res))
"""

_DIFF = r"""
import json, sys
import numpy as np
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
import casatools
def px(p):
    ia = casatools.image(); ia.open(p); d = ia.getchunk(); ia.close(); return d
ref = px(sys.argv[2] + ".image"); got = px(sys.argv[1] + ".image")
print("RESULT " + json.dumps({"max_diff_over_peak": float(np.max(np.abs(ref - got)) / np.max(np.abs(ref)))}))
"""


def refuse_if_busy(force: bool) -> float | None:
    """The 1-minute load average, or None (after saying why) when the machine is too busy to measure."""
    load = os.getloadavg()[0]
    if load > 0.5 and not force:
        print(f"load average {load:.2f} > 0.5: the machine is busy; wait, or pass --force", file=sys.stderr)
        return None
    return load


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _ms_for(name: str, shape: dict) -> str:
    ms = WORK / f"shape-{name}.ms"
    if not ms.exists():
        code = ("import sys; from pclean_provider.casa.runtime import ensure_casa_runtime; "
                "ensure_casa_runtime(log_dir=sys.argv[2]); from pclean_provider.casa.simulator import simulate_ms; "
                f"simulate_ms(sys.argv[1], antennas={shape['antennas']}, nchan={shape['nchan']}, "
                f"hours={shape['hours']}, integration_s={shape['integration_s']}, noise_jy={shape['noise_jy']}, "
                "spectral_line=True, seed=14)")
        subprocess.run([sys.executable, "-c", code, str(ms), str(WORK / "logs")], check=True, cwd=REPO,
                       capture_output=True)
    return str(ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="a,b,medium")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cube_engines.json"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--cases", default="", help="comma-separated subset of the cases (tclean always runs: "
                        "every ratio is against it in the same run)")
    args = parser.parse_args(argv)
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    if str(REPO) not in sys.path:  # run as a script (bench/bench_cube_engines.py) rather than with -m
        sys.path.insert(0, str(REPO))
    from bench import parallel_ceiling

    WORK.mkdir(parents=True, exist_ok=True)
    # What the two CPUs give together right now: the ceiling of every 2-worker ratio below.
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "cores": os.cpu_count(), "parallel_ceiling_before": parallel_ceiling.measure(), "shapes": {}}
    print(f"two-process ceiling before: {report['parallel_ceiling_before']['two_process_throughput']}x", flush=True)
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        ms = _ms_for(name, shape)
        tclean_kw = {"vis": ms, "specmode": "cube", "imsize": [shape["imsize"]] * 2, "cell": shape["cell"],
                     "weighting": "briggs", "robust": 0.5, "deconvolver": "hogbom", "niter": 100000,
                     "threshold": shape["threshold"]}
        cases = {"tclean": {"engine": "tclean"}, "sessions": {"engine": "sessions"},
                 "independent": {"engine": "independent"},
                 "sessions_chunksize1": {"engine": "sessions", "chunksize": 1},
                 "independent_chunksize4": {"engine": "independent", "chunksize": 4}}
        cases = {k: v for k, v in cases.items() if k in shape.get("cases", cases)}
        if args.cases:
            wanted = {"tclean", *args.cases.split(",")}
            cases = {k: v for k, v in cases.items() if k in wanted}
        results = {}
        for case, spec in cases.items():
            out = WORK / f"{name}-{case}" / "img"
            subprocess.run(["rm", "-rf", str(out.parent)], check=True)
            results[case] = _run(_CASE, json.dumps({**spec, "tclean": tclean_kw}), str(out), str(WORK / "logs"))
            if case != "tclean":
                results[case].update(_run(_DIFF, str(out), str(WORK / f"{name}-tclean" / "img"), str(WORK / "logs")))
                results[case]["speedup"] = results["tclean"]["seconds"] / results[case]["seconds"]
            print(f"shape {name} {case}: {json.dumps(results[case])}", flush=True)
        report["shapes"][name] = {"shape": shape, "results": results}
    report["parallel_ceiling_after"] = parallel_ceiling.measure()
    print(f"two-process ceiling after: {report['parallel_ceiling_after']['two_process_throughput']}x", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
