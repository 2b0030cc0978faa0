"""What savemodel costs a cube: serial tclean and pclean on 2 workers, each without and with it.

    .venv/bin/python bench/bench_savemodel.py [--repeats 3] [--out bench/results/savemodel_cube.json]

A cleaned 48-channel, 256-px cube (bench_small_cube's MS of 7,920 rows). tclean saves the model in
its last major cycle; pclean's split sessions never write the MS, and the published cube's model is
predicted once after the loop (engine/cube/run.py:_save_model). Each run is a fresh process on its
own copy of the MS, timed for the imaging call alone (CASA imported first); pclean runs on a
2-worker local cluster opened in that process before the clock starts (`in_process_below_s=0`, so
the cube is split however small). The four runs are interleaved in each round; the best counts.
MODEL_DATA of each pclean run is compared with serial tclean's of the same round.
Refuses to start when the 1-minute load average is above 0.5 unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_cube_engines import _run, refuse_if_busy  # noqa: E402
from bench_small_cube import WHOLE_SHAPES, WORK, _make_ms  # noqa: E402
from json_files import write_json  # noqa: E402

SHAPE, PARAMS = WHOLE_SHAPES["48 ch, 256 px"]
CLEAN = {"niter": 1000, "threshold": "0.01Jy", "cycleniter": 200}
RUNS = ("tclean-none", "tclean-modelcolumn", "pclean-none", "pclean-modelcolumn")

_CASE = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
kw = json.loads(sys.argv[1]); out = sys.argv[2]; run = sys.argv[4]
os.chdir(os.path.dirname(out))
if run.startswith("tclean"):
    from casatasks import tclean
    t = time.perf_counter(); ret = tclean(imagename=out, **kw) or {}; call = time.perf_counter() - t
    res = {"iterdone": int(ret.get("iterdone", 0))}
else:
    import casatasks  # noqa: F401  (as the tclean run has it before its clock)
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.engine.api import run as run_config
    with open_cluster(ClusterSpec(nworkers=2)) as handle:
        cfg = PcleanConfig.from_flat(imagename=out, parallel=True, in_process_below_s=0, **kw)
        t = time.perf_counter(); r = run_config(cfg, client=handle.client); call = time.perf_counter() - t
    res = {"iterdone": r.iterations, "sessions": r.nsubcubes}
print("RESULT " + json.dumps({"call_s": call, **res}))
"""

_MODEL_DIFF = r"""
import json, sys
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
import casatools, numpy as np
def col(ms):
    tb = casatools.table(); tb.open(ms)
    try:
        return np.asarray(tb.getcol("MODEL_DATA")) if "MODEL_DATA" in tb.colnames() else None
    finally:
        tb.close()
a, b = col(sys.argv[1]), col(sys.argv[2])
diff = None if a is None or b is None else float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
print("RESULT " + json.dumps({"model_data_diff": diff}))
"""


def _one(ms: str, run: str, round_no: int) -> dict:
    folder = WORK / "savemodel" / f"{run}-{round_no}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copy = folder / "data.ms"
    shutil.copytree(ms, copy)
    kw = {"vis": str(copy), **PARAMS, **CLEAN, "savemodel": run.split("-", 1)[1]}
    res = _run(_CASE, json.dumps(kw), str(folder / "img"), str(WORK / "logs"), run)
    return {**res, "ms": str(copy)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (the best of each run counts)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "savemodel_cube.json"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = parser.parse_args(argv)
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    ms = WORK / "whole-48ch.ms"
    WORK.mkdir(parents=True, exist_ok=True)
    _make_ms(ms, SHAPE)
    runs: dict[str, list[dict]] = {r: [] for r in RUNS}
    t0 = time.perf_counter()
    for round_no in range(args.repeats):
        for run in RUNS:
            runs[run].append(_one(str(ms), run, round_no))
        diff = _run(_MODEL_DIFF, runs["pclean-modelcolumn"][-1]["ms"], runs["tclean-modelcolumn"][-1]["ms"],
                    str(WORK / "logs"))
        runs["pclean-modelcolumn"][-1].update(diff)
        print(f"round {round_no + 1}: " + ", ".join(f"{r} {runs[r][-1]['call_s']:.1f} s" for r in RUNS)
              + f"; MODEL_DATA vs tclean {diff['model_data_diff']}", flush=True)
    best = {r: min(x["call_s"] for x in runs[r]) for r in RUNS}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "load_at_end": os.getloadavg()[0], "cores": os.cpu_count(), "ms": SHAPE, "params": {**PARAMS, **CLEAN},
              "runs": runs, "best_call_s": best,
              "savemodel_cost_tclean_s": best["tclean-modelcolumn"] - best["tclean-none"],
              "savemodel_cost_pclean_s": best["pclean-modelcolumn"] - best["pclean-none"],
              "seconds": time.perf_counter() - t0}
    print(json.dumps({k: report[k] for k in ("best_call_s", "savemodel_cost_tclean_s", "savemodel_cost_pclean_s")}))
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
