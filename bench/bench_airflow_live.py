"""The nightly cube DAG under a live `airflow standalone` against pclean() (and serial tclean) in one run.

    .venv/bin/python bench/bench_airflow_live.py [--cases medium,wide] [--force] [--out ...json]

Cases:
- medium: the recorded bench's medium cube (12 antennas, 128 x 1 MHz, 2 h at 30 s, 512 px),
  cleaned to 10 mJy, through the DAG's default exact mode (one `cube` task per MS) on a 2-worker
  local cluster, against `pclean(parallel=True, nworkers=2)` in a fresh process.
- wide: 2,048 channels of a small image (64 px), niter=0, `cube_chunksize=1`, through the DAG's
  default exact mode, against pclean() and serial tclean in fresh processes; the number of mapped
  tasks and the cube's difference from tclean's are recorded.
- wide-fanout: 256 channels of the same shape through the fan-out mode (batches of one-channel
  sub-cubes, each a whole tclean run).

The Airflow side is a real standalone (scheduler, triggerer, dag-processor, api-server;
LocalExecutor) with its own home, started once for all cases; the DAG is triggered over the REST
API and its task instances' start/end times are read back from the API. "Imaging span" is the
DAG's time from the start of `cluster_up` to the end of the task that finishes the cube (cube or
concat): the same work pclean() does, cluster start included on both sides. The overhead is
(imaging span / pclean() wall time) - 1. Refuses to start when the 1-minute load average is above
0.5 unless --force is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_cube_engines import _run, refuse_if_busy  # noqa: E402

from pclean_provider.atomic_files import write_text  # noqa: E402

WORK = REPO / "work" / "bench" / "airflow-live"

def _dirty_case(*, nchan: int, antennas: int, hours: float, imsize: int, mode: str) -> dict:
    """A niter=0 cube of small images, one channel per sub-cube, compared with serial tclean."""
    return {
        "ms": dict(antennas=antennas, nchan=nchan, hours=hours, integration_s=60, noise_jy=0.05, spectral_line=True,
                   chan_width_hz=100e3),  # 2,048 x 100 kHz: within the simulator's 1.4 GHz coverage
        "imaging": {"specmode": "cube", "nchan": nchan, "imsize": [imsize, imsize], "cell": "16arcsec",
                    "weighting": "natural", "gridder": "standard", "deconvolver": "hogbom", "niter": 0},
        "extras": {"cube_chunksize": 1},
        "cube_mode": mode, "tclean": True,
    }


# (MS shape, imaging parameters, DAG mode). The medium cube is bench/sizes.py's "medium".
CASES = {
    "medium": {
        "ms": dict(antennas=12, nchan=128, hours=2.0, integration_s=30, noise_jy=0.005, spectral_line=True),
        "imaging": {"specmode": "cube", "nchan": 128, "imsize": [512, 512], "cell": "4arcsec",
                    "weighting": "briggs", "robust": 0.5, "gridder": "standard", "deconvolver": "hogbom",
                    "niter": 100000, "threshold": "10mJy"},
        "cube_mode": "exact", "tclean": False,
    },
    "wide": _dirty_case(nchan=2048, antennas=6, hours=0.5, imsize=64, mode="exact"),
    # A cube of the same MS shape through the fan-out (one Dask task per channel, batched Airflow
    # tasks): every sub-cube is a whole tclean run (about a second each here), so 256 channels
    # rather than 2,048 keep the run within minutes; it measures the per-sub-cube and per-task costs
    # that bench/scaling_survey.py extrapolates.
    "wide-fanout": _dirty_case(nchan=256, antennas=6, hours=0.5, imsize=64, mode="fanout"),
    # A seconds-scale smoke case that goes through every step of the above (its figures mean nothing).
    "tiny": _dirty_case(nchan=8, antennas=5, hours=0.25, imsize=32, mode="fanout"),
}
# The tasks whose span makes up the imaging (cluster start to the finished cube), in either mode.
END_TASKS = ("cube", "concat")

_SIMULATE = r"""
import json, sys
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from pclean_provider.casa.simulator import simulate_ms
simulate_ms(sys.argv[1], seed=16, **json.loads(sys.argv[2]))
print("RESULT {}")
"""

_ENGINE = r"""
import json, os, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
spec = json.loads(sys.argv[1]); out = sys.argv[2]
os.makedirs(os.path.dirname(out), exist_ok=True)
if __name__ == "__main__":
    if spec["engine"] == "tclean":
        from casatasks import tclean
        t = time.perf_counter(); tclean(vis=spec["vis"], imagename=out, **spec["imaging"])
    else:
        from pclean_provider.engine.api import pclean
        t = time.perf_counter()
        # in_process_below_s=0: on its cluster like the DAG, even the cubes small enough to be imaged here.
        pclean(vis=spec["vis"], imagename=out, parallel=True, nworkers=2, in_process_below_s=0, **spec["imaging"],
               **spec["extras"])
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t}))
"""

_DIFF = r"""
import json, sys
import numpy as np
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
import casatools
def px(p):
    ia = casatools.image(); ia.open(p); d = ia.getchunk(); ia.close(); return d
ref = px(sys.argv[2]); got = px(sys.argv[1])
print("RESULT " + json.dumps({"max_diff_over_peak": float(np.max(np.abs(ref - got)) / np.max(np.abs(ref))),
                              "same_shape": ref.shape == got.shape}))
"""


def _when(text: str | None) -> float | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def dag_timing(task_instances: list[dict]) -> dict:
    """Imaging span, whole-run span, per-task wall time (mapped tasks summed and counted)."""
    starts = [_when(t["start_date"]) for t in task_instances if t.get("start_date")]
    ends = [_when(t["end_date"]) for t in task_instances if t.get("end_date")]
    per_task: dict[str, dict] = defaultdict(lambda: {"count": 0, "seconds": 0.0, "first_start": None, "last_end": None})
    for t in task_instances:
        start, end = _when(t.get("start_date")), _when(t.get("end_date"))
        row = per_task[t["task_id"]]
        row["count"] += 1
        if start and end:
            row["seconds"] += end - start
            row["first_start"] = min(filter(None, (row["first_start"], start)))
            row["last_end"] = max(filter(None, (row["last_end"], end)))
    up = per_task.get("cluster_up", {}).get("first_start")
    done = max((per_task[name]["last_end"] for name in END_TASKS if per_task.get(name, {}).get("last_end")),
               default=None)
    mapped = sum(1 for t in task_instances if t.get("map_index", -1) >= 0)
    return {"imaging_span_s": (done - up) if up and done else None,
            "run_span_s": (max(ends) - min(starts)) if starts and ends else None,
            "mapped_task_instances": mapped,
            "tasks": {name: {"count": row["count"], "seconds": round(row["seconds"], 2),
                             "span_s": round(row["last_end"] - row["first_start"], 2)
                             if row["first_start"] and row["last_end"] else None}
                      for name, row in sorted(per_task.items())}}


def write_templates(directory: Path, cases: list[str]) -> dict[str, str]:
    """One pipeline template per case, from the shipped cube template; returns case -> dag_id."""
    import yaml

    from pclean_provider.data import PIPELINES, packaged_dir

    base = yaml.safe_load((packaged_dir(PIPELINES) / "nightly_cube_imaging.yaml").read_text())
    directory.mkdir(parents=True, exist_ok=True)
    dag_ids = {}
    for name in cases:
        case = CASES[name]
        data = {**base, "dag_id": f"bench_{name}", "cube_mode": case["cube_mode"], "retries": 0,
                "overrides": {**case["imaging"], **case.get("extras", {}), "parallel": True},
                "cluster": {**base.get("cluster", {}), "options": {"nworkers": 2}}}
        (directory / f"bench_{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        dag_ids[name] = data["dag_id"]
    return dag_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="medium,wide")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "airflow_live.json"))
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--run-timeout", type=float, default=3600.0, help="seconds one DAG run may take")
    args = parser.parse_args(argv)
    load = refuse_if_busy(args.force)
    if load is None:
        return 2
    from tests.airflow.standalone import Standalone

    cases = args.cases.split(",")
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-airflow-", dir=WORK))
    data_root = root / "data"
    (data_root / "incoming").mkdir(parents=True)
    (data_root / "landing").mkdir(parents=True)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_at_start": load,
              "cores": os.cpu_count(), "cases": {}}
    for name in cases:
        ms = WORK / f"{name}.ms"
        if not ms.exists():
            print(f"simulating {ms.name}", flush=True)
            _run(_SIMULATE, str(ms), json.dumps(CASES[name]["ms"]), str(logs))
        # A copy, not a link: the DAG only accepts paths that resolve under its data roots.
        shutil.copytree(ms, data_root / "incoming" / ms.name)
    dag_ids = write_templates(root / "pipelines", cases)
    server = Standalone(root / "home", extra_env={
        "PCLEAN_DATA_ROOT": str(data_root), "PCLEAN_PIPELINES_DIR": str(root / "pipelines"),
        "PCLEAN_PIPELINES_UNSCHEDULED": "1",
        # Each case archives at gate 0 (qa_min_score below): the site's lowest gate must allow it.
        "PCLEAN_QA_GATE_MINIMUM": "0"})
    print("starting airflow standalone", flush=True)
    server.start()
    try:
        for name in cases:
            case = CASES[name]
            vis = str(data_root / "incoming" / f"{name}.ms")
            row: dict = {"ms": case["ms"], "imaging": case["imaging"], "extras": case.get("extras", {}),
                         "cube_mode": case["cube_mode"]}
            dag_id = dag_ids[name]
            server.wait_for_dag(dag_id)
            server.unpause(dag_id)
            print(f"{name}: DAG run", flush=True)
            t = time.perf_counter()
            run_id = server.trigger(dag_id, {"vis": vis, "qa_min_score": 0.0})
            row["dag_state"] = server.wait_for_run(dag_id, run_id, timeout=args.run_timeout)
            row["dag_wall_s"] = time.perf_counter() - t
            row["dag"] = dag_timing(server.task_instances(dag_id, run_id))
            cubes = sorted((data_root / "work" / dag_id).glob(f"runs/*/{name}/{name}.cube.image"))
            row["dag_image"] = str(cubes[-1]) if cubes else None
            spec = {"vis": vis, "imaging": case["imaging"], "extras": case.get("extras", {})}
            print(f"{name}: pclean()", flush=True)
            out = WORK / name / "pclean" / "cube"
            row["pclean"] = _run(_ENGINE, json.dumps({**spec, "engine": "pclean"}), str(out), str(logs))
            if row["dag"]["imaging_span_s"]:
                row["overhead"] = row["dag"]["imaging_span_s"] / row["pclean"]["seconds"] - 1.0
            if case["tclean"]:
                print(f"{name}: serial tclean", flush=True)
                ref = WORK / name / "tclean" / "cube"
                row["tclean"] = _run(_ENGINE, json.dumps({**spec, "engine": "tclean"}), str(ref), str(logs))
                row["pclean_vs_tclean"] = _run(_DIFF, f"{out}.image", f"{ref}.image", str(logs))
                if row["dag_image"]:
                    row["dag_vs_tclean"] = _run(_DIFF, row["dag_image"], f"{ref}.image", str(logs))
            report["cases"][name] = row
            print(json.dumps(row, indent=1), flush=True)
    finally:
        server.stop()
    write_text(args.out, json.dumps(report, indent=2))  # temporary name, then rename
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
