"""Bytes read by a cleaned cube: serial tclean against the exact loop on 2, 4 and 8 workers.

    .venv/bin/python bench/bench_reads.py [--shape a] [--workers 2,4,8] [--out bench/results/reads.json]

On one machine the page cache serves the MS after the first pass, so wall time hides what a shared
file system would serve; the bytes a process asks for do not depend on the cache, or on the load:
more workers than cores (8 on 2) count the same bytes, only slower, so this runs on a busy machine.

Each case runs in a fresh process. Serial tclean: that process's /proc/self/io around the call.
The exact loop: every worker's /proc/self/io (read on the worker before and after the run, so
CASA's import in the workers is not counted) plus the coordinator's (the calling process), summed.
`rchar` counts every byte read() returned (what an NFS client would fetch without a cache);
`read_bytes` what reached the block device (here near 0: the page cache holds the MS). Per major
cycle: the call's bytes over its passes over the data (the PSF pass plus the major cycles).
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

from bench_cube_engines import _DIFF, SHAPES, WORK, _ms_for, _run  # noqa: E402
from json_files import write_json  # noqa: E402

_CASE = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
spec = json.loads(sys.argv[1]); kw = spec["tclean"]; out = sys.argv[2]
os.makedirs(os.path.dirname(out), exist_ok=True)
os.chdir(os.path.dirname(out))

def io():
    with open(f"/proc/{os.getpid()}/io") as fh:
        rows = dict(line.split(": ") for line in fh.read().splitlines())
    return {"rchar": int(rows["rchar"]), "read_bytes": int(rows["read_bytes"])}

def delta(after, before):
    return {k: after[k] - before[k] for k in after}

if spec["workers"] == 0:
    from casatasks import tclean
    t0 = time.perf_counter(); before = io(); ret = tclean(imagename=out, **kw) or {}; total = delta(io(), before)
    seconds = time.perf_counter() - t0
    res = {"iterations": int(ret.get("iterdone", 0)), "stopcode": int(ret.get("stopcode", 0)),
           "major_cycles": int(ret.get("nmajordone", 0)), "by_process": {"tclean": total}}
else:
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.engine.api import run
    with open_cluster(ClusterSpec(nworkers=spec["workers"])) as handle:
        client = handle.client
        client.run(ensure_casa_runtime)  # the workers' CASA import is not the run's reading
        workers_before = client.run(io); before = io(); t0 = time.perf_counter()
        r = run(PcleanConfig.from_flat(imagename=out, parallel=True, relayout_ms=spec["relayout"], **kw),
                client=client)
        seconds = time.perf_counter() - t0; coordinator = delta(io(), before); workers_after = client.run(io)
    loop = r.cube_loop or {}
    by_process = {w: delta(workers_after[w], workers_before[w]) for w in workers_after}
    by_process["coordinator"] = coordinator
    res = {"iterations": r.iterations, "stopcode": loop.get("stopcode"), "major_cycles": loop.get("major_cycles"),
           "sessions": r.nsubcubes, "by_process": by_process}
res["seconds"] = seconds
res["total"] = {k: sum(p[k] for p in res["by_process"].values()) for k in ("rchar", "read_bytes")}
print("RESULT " + json.dumps(res))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="a", choices=sorted(SHAPES))
    parser.add_argument("--workers", default="2,4,8")
    parser.add_argument("--vis", default="", help="this MS instead of the shape's own (e.g. a copy with other tiles)")
    parser.add_argument("--tag", default="", help="a name for this MS in the work folders")
    parser.add_argument("--relayout", action="store_true",
                        help="the exact loop with relayout_ms=True (its copy's reads are the coordinator's)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "reads.json"))
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    WORK.mkdir(parents=True, exist_ok=True)
    ms = args.vis or _ms_for(args.shape, shape)
    kw = {"vis": ms, "specmode": "cube", "imsize": [shape["imsize"]] * 2, "cell": shape["cell"],
          "weighting": "briggs", "robust": 0.5, "deconvolver": "hogbom", "niter": 100000,
          "threshold": shape["threshold"]}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": os.getloadavg()[0],
              "relayout_ms": args.relayout,
              "shape": {"name": args.shape, **shape}, "tclean": kw, "cases": {}}
    stem = f"reads-{args.shape}{'-' + args.tag if args.tag else ''}"
    ref = WORK / f"{stem}-tclean" / "img"
    for workers in [0, *(int(n) for n in args.workers.split(","))]:
        name = "tclean" if workers == 0 else f"workers{workers}"
        out = WORK / f"{stem}-{name}" / "img"
        subprocess.run(["rm", "-rf", str(out.parent)], check=True)
        res = _run(_CASE, json.dumps({"workers": workers, "tclean": kw, "relayout": args.relayout}), str(out), str(WORK / "logs"))
        if workers:
            res.update(_run(_DIFF, str(out), str(ref), str(WORK / "logs")))
        serial = report["cases"].get("tclean", res)["total"]["rchar"]
        res["rchar_over_serial"] = res["total"]["rchar"] / serial
        # tclean's nmajordone counts the PSF pass's residual too; the loop reports the same count.
        passes = max(1, int(res.get("major_cycles") or 0))
        res["rchar_per_major_cycle"] = res["total"]["rchar"] / passes
        report["cases"][name] = res
        print(f"{name}: {res['total']['rchar'] / 1e9:.2f} GB read ({res['rchar_over_serial']:.2f}x serial), "
              f"{res['total']['read_bytes'] / 1e9:.3f} GB from disk, {res['iterations']} iterations, "
              f"{res.get('major_cycles')} major cycles, {res['seconds']:.1f} s, image diff {res.get('max_diff_over_peak', 0):.1e}", flush=True)
    report["load_at_end"] = os.getloadavg()[0]
    print(f"written {write_json(args.out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
