"""What one major cycle of a sub-cube session costs against the channels it holds.

    .venv/bin/python bench/bench_session_pass.py [--shape a] [--widths 48,24,12,1] [--out ...json]

Opens ONE cube session (cube_session.CubeSession, as a Dask worker would) over the first `w`
channels of the cube bench's MS for each width, in a fresh process, then times its PSF and two
major cycles (dirty, niter=0) and the bytes the process read meanwhile (/proc/self/io rchar).
A straight-line fit of seconds per major cycle against channels splits the cost into a fixed
per-pass part (reading every row, weighting, frame conversion: paid by every session) and a
per-channel part (gridding, FFT): the fixed part bounds what a channel split can gain on this MS.
Refuses to start when the 1-minute load average is above 0.5 unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_cube_engines import SHAPES, WORK, _ms_for, _run, refuse_if_busy  # noqa: E402

_PASS = r"""
import json, os, sys, time, shutil
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from pclean_provider.casa import cube_session as cs
kw = json.loads(sys.argv[1]); width = int(sys.argv[2]); wd = sys.argv[4]
shutil.rmtree(wd, ignore_errors=True); os.makedirs(wd)
nchan = int(kw.pop("cube_nchan"))
ranges = [(a, min(a + width, nchan)) for a in range(0, nchan, width)]
recs = cs.build_cube_records(dict(kw, imagename=os.path.join(wd, "full")), ranges,
                             [os.path.join(wd, f"p{i}", "img") for i in range(len(ranges))], "bench", wd)
spec = recs.sessions[0]
os.makedirs(os.path.dirname(spec.imagename), exist_ok=True)
def rchar():
    with open(f"/proc/{os.getpid()}/io") as fh:
        return int(next(l for l in fh if l.startswith("rchar")).split()[1])
t = time.perf_counter(); s = cs.CubeSession(spec); opened = time.perf_counter() - t
r0 = rchar(); t = time.perf_counter(); s.run("make_psf"); s.run("make_pb", gridder="standard"); psf = time.perf_counter() - t
majors = []
for _ in range(2):
    r1 = rchar(); t = time.perf_counter(); s.run("major_cycle", lastcycle=True)
    majors.append((time.perf_counter() - t, rchar() - r1))
s.close()
print("RESULT " + json.dumps({"channels": width, "open_s": opened, "psf_s": psf,
      "major_s": min(m[0] for m in majors), "major_read_bytes": majors[0][1]}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="a")
    parser.add_argument("--widths", default="48,24,12,1")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "session_pass.json"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args(argv)
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    shape = SHAPES[args.shape]
    ms = _ms_for(args.shape, shape)
    kw = {"vis": ms, "specmode": "cube", "nchan": -1, "imsize": [shape["imsize"]] * 2, "cell": shape["cell"],
          "weighting": "briggs", "robust": 0.5, "deconvolver": "hogbom", "niter": 0, "gridder": "standard",
          "cube_nchan": shape["nchan"]}
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        rows.append(_run(_PASS, json.dumps(kw), str(width), str(WORK / "logs"), str(WORK / f"pass-{width}")))
        print(json.dumps(rows[-1]), flush=True)
    slope, fixed = np.polyfit([r["channels"] for r in rows], [r["major_s"] for r in rows], 1)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "shape": shape, "rows": rows, "fit": {"fixed_s_per_pass": fixed, "s_per_channel": slope}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"fixed {fixed:.2f} s per major cycle + {slope * 1000:.1f} ms per channel; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
