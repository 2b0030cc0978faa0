"""Survey-scale model: a cube of up to 7,680 channels on up to 1,000 workers, from measured costs.

    .venv/bin/python bench/scaling_survey.py [--measure] [--force] [--out bench/results/scaling_survey.json]

Inputs, all measured on this machine on the cube bench's shape a MS (10 antennas, 3 h at 20 s:
24,300 rows; 256 px):
- one data pass of a sub-cube session (bench/results/session_pass.json): a fixed part F per pass
  (every row read, weighted, frame-converted, whatever channels the session holds) and a part c per
  channel (gridding, FFT);
- one whole tclean run of k channels in a warm process (the fan-out's sub-cube; `--measure` runs
  it for k = 1 and 4 and fits t0 + k * c_run), stored in the output and reused without --measure;
- Airflow's cost per mapped task instance and the cluster start, from the live DAG bench
  (bench/results/airflow_live.json) when present, else the stated defaults.

Model for a dirty cube (niter=0: a PSF pass and a residual pass, P = 2) of C channels, W workers:
- serial tclean:  open + P * (F + C * c)
- exact mode:     start + open + P * (F + ceil(C / S) * c), S = min(W, C / 2) sessions, one per worker
- fan-out:        start + ceil(N / W) * (t0 + k * c_run) + B * a / L, N = C / k sub-cubes, B batches
                  (at most max_map_length), L Airflow task slots running at once
Same rows in every case (the shape a MS's row count; the per-pass fixed part grows with rows); no
file-system contention, no queue wait: upper bounds on speedup, stated as such. CASA Memo 13's
published figures (209 GB, 7,680 channels, job array of per-channel tclean runs) are printed beside
them for scale; their reference is 8-way MPI tclean, not serial.

Reads against CPUs (bench/scaling_reads.py): bytes per pass fitted from the measured reads benches
(shape a, 2/4/8 workers, with and without `relayout_ms`), over a stated aggregate file-system
bandwidth (--bandwidth, GB/s), against the CPU time per pass above; which of the two sets the pace at
each worker count, and the worker count where reads overtake. Same rows and image size as shape a.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_cube_engines import SHAPES, WORK, _ms_for, _run, refuse_if_busy  # noqa: E402
from scaling import MEMO13_ARRAY, MEMO13_BASELINE  # noqa: E402
from scaling_reads import fit_reads, pace_rows, timed_check  # noqa: E402
from scaling_reads import markdown as reads_markdown  # noqa: E402

from pclean_provider.atomic_files import write_text  # noqa: E402

RESULTS = REPO / "bench" / "results"
CHANNELS = (2048, 7680)
WORKERS = (2, 10, 100, 1000)
PASSES_DIRTY = 2
# Used only when no live DAG bench result exists: about a second of scheduling per mapped task
# instance (issue 16's figure), Airflow's default max_map_length, and 32 task slots at once.
DEFAULT_TASK_S = 1.0
MAX_MAP_LENGTH = 1024
TASK_SLOTS = 32

_RUNS = r"""
import json, os, shutil, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[3])
from casatasks import tclean
kw = json.loads(sys.argv[1]); wd = sys.argv[2]
def one(k, start, tag):
    out = os.path.join(wd, tag)
    shutil.rmtree(out, ignore_errors=True); os.makedirs(out)
    t = time.perf_counter(); tclean(imagename=os.path.join(out, "img"), nchan=k, start=start, **kw)
    return time.perf_counter() - t
one(1, 0, "warm")  # CASA's first run in a process loads tables and caches: not a sub-cube's cost
rows = []
for k in (1, 4):
    best = min(one(k, 8 + 4 * r, f"k{k}-{r}") for r in range(2))
    rows.append({"channels": k, "seconds": best})
print("RESULT " + json.dumps({"runs": rows}))
"""


def measure_runs() -> dict:
    shape = SHAPES["a"]
    ms = _ms_for("a", shape)
    kw = {"vis": ms, "specmode": "cube", "imsize": [shape["imsize"]] * 2, "cell": shape["cell"],
          "weighting": "briggs", "robust": 0.5, "deconvolver": "hogbom", "niter": 0, "gridder": "standard"}
    rows = _run(_RUNS, json.dumps(kw), str(WORK / "subcube-runs"), str(WORK / "logs"))["runs"]
    (k1, s1), (k4, s4) = [(r["channels"], r["seconds"]) for r in rows]
    c_run = max((s4 - s1) / (k4 - k1), 0.0)
    return {"runs": rows, "t0_s": s1 - k1 * c_run, "c_run_s": c_run}


# Tasks of the live DAG that do almost nothing but be scheduled, started and finished: their
# duration is Airflow's own cost of one task instance (a fan-out batch's extra time over its
# sub-cubes' is the same cost; the sub-cubes' own time is modelled apart).
LIGHT_TASKS = ("ensure_pool", "arrivals", "prepare", "qa_gate", "gather_subcubes")


def airflow_costs(path: Path) -> dict:
    """Per mapped task instance and cluster start from the live bench, where it was run."""
    if not path.exists():
        return {"task_s": DEFAULT_TASK_S, "start_s": 2.0, "source": "defaults (no live DAG bench result)"}
    report = json.loads(path.read_text())
    case = report.get("cases", {}).get("wide-fanout") or report.get("cases", {}).get("wide") or {}
    tasks = (case.get("dag") or {}).get("tasks") or {}
    start = (tasks.get("cluster_up") or {}).get("seconds") or 2.0
    light = sorted(tasks[name]["seconds"] / max(tasks[name]["count"], 1) for name in LIGHT_TASKS
                   if (tasks.get(name) or {}).get("seconds"))
    if light:
        median = light[len(light) // 2]
        return {"task_s": median, "start_s": start,
                "source": f"{path.name}: median duration of its light tasks {', '.join(LIGHT_TASKS)}"}
    return {"task_s": DEFAULT_TASK_S, "start_s": start, "source": f"{path.name} (no light task timed; default)"}


def serial(nchan: int, fixed: float, per_chan: float, opened: float, passes: int = PASSES_DIRTY) -> float:
    return opened + passes * (fixed + nchan * per_chan)


def exact_mode(nchan: int, workers: int, fixed: float, per_chan: float, opened: float, start: float,
               passes: int = PASSES_DIRTY) -> float:
    sessions = max(1, min(workers, nchan // 2))
    return start + opened + passes * (fixed + math.ceil(nchan / sessions) * per_chan)


def fanout(nchan: int, workers: int, t0: float, c_run: float, task_s: float, start: float, chunk: int = 1,
           target_task_s: float = 300.0) -> tuple[float, int]:
    """Wall time and the number of batches (mapped Airflow tasks) of the fan-out."""
    nsub = math.ceil(nchan / chunk)
    per_sub = t0 + chunk * c_run
    per_batch = max(1, workers * max(1, math.floor(target_task_s / per_sub)))
    batches = min(MAX_MAP_LENGTH, math.ceil(nsub / per_batch))
    return start + math.ceil(nsub / workers) * per_sub + batches * task_s / TASK_SLOTS, batches


def cpu_pass(nchan: int, workers: int, fixed: float, per_chan: float) -> float:
    """CPU seconds of one pass over the data, sessions in parallel (workers=1: serial tclean's pass)."""
    if workers <= 1:
        return fixed + nchan * per_chan
    sessions = max(1, min(workers, nchan // 2))
    return fixed + math.ceil(nchan / sessions) * per_chan


def table(pass_fit: dict, runs: dict, air: dict) -> list[dict]:
    fixed, per_chan, opened = pass_fit["fixed_s_per_pass"], pass_fit["s_per_channel"], pass_fit["open_s"]
    rows = []
    for nchan in CHANNELS:
        ref = serial(nchan, fixed, per_chan, opened)
        for w in WORKERS:
            ex = exact_mode(nchan, w, fixed, per_chan, opened, air["start_s"])
            fo, batches = fanout(nchan, w, runs["t0_s"], runs["c_run_s"], air["task_s"], air["start_s"])
            rows.append({"channels": nchan, "workers": w, "serial_s": ref, "exact_s": ex, "exact_speedup": ref / ex,
                         "fanout_s": fo, "fanout_speedup": ref / fo, "fanout_batches": batches})
    return rows


def markdown(rows: list[dict], pass_fit: dict, runs: dict, air: dict) -> str:
    out = [f"Inputs: F = {pass_fit['fixed_s_per_pass']:.2f} s per pass, c = {pass_fit['s_per_channel'] * 1e3:.0f} ms "
           f"per channel, {pass_fit['open_s']:.2f} s to open (session pass); a whole tclean run of k channels {runs['t0_s']:.2f} s + "
           f"{runs['c_run_s'] * 1e3:.0f} ms x k; Airflow {air['task_s']:.2f} s per mapped task, cluster start "
           f"{air['start_s']:.1f} s ({air['source']}).", "",
           "| channels | workers | serial tclean s | exact mode s (speedup) | fan-out, 1 channel per sub-cube s "
           "(speedup) | mapped tasks |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['channels']:,} | {r['workers']:,} | {r['serial_s']:,.0f} | {r['exact_s']:,.1f} "
                   f"({r['exact_speedup']:.1f}x) | {r['fanout_s']:,.1f} ({r['fanout_speedup']:.1f}x) | "
                   f"{r['fanout_batches']} |")
    out += ["", f"CASA Memo 13, against {MEMO13_BASELINE['label']} at {MEMO13_BASELINE['hours']} h:", "",
            "| array breadth | hours | speedup vs 8-way MPI |", "|---|---|---|"]
    out += [f"| {m['breadth']:,} | {m['hours']} | {m['speedup_vs_mpi8']:g}x |" for m in MEMO13_ARRAY]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="measure the whole-tclean-run cost (else reuse --out's)")
    parser.add_argument("--force", action="store_true", help="measure even when the machine is busy")
    parser.add_argument("--out", default=str(RESULTS / "scaling_survey.json"))
    parser.add_argument("--bandwidth", default="1,10",
                        help="aggregate file-system bandwidth(s) in GB/s, comma-separated (a shared NFS/Lustre server)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.measure or "runs" not in previous:
        load = refuse_if_busy(args.force)
        if load is None:
            return 2
        runs = {**measure_runs(), "load_at_start": load}
    else:
        runs = previous["runs"]
    passes = json.loads((RESULTS / "session_pass.json").read_text())
    # Opening a session (imager, coordinates, selection) is paid once per session, and by tclean once.
    opened = sum(r["open_s"] for r in passes["rows"]) / len(passes["rows"])
    pass_fit = {**passes["fit"], "open_s": opened}
    air = airflow_costs(RESULTS / "airflow_live.json")
    rows = table(pass_fit, runs, air)
    reads = fit_reads(RESULTS)
    bandwidths = tuple(float(b) for b in args.bandwidth.split(","))
    def cpu(nchan: int, workers: int) -> float:
        return cpu_pass(nchan, workers, pass_fit["fixed_s_per_pass"], pass_fit["s_per_channel"])

    pace, crossings = pace_rows(reads, cpu, CHANNELS, WORKERS, bandwidths)
    timed = timed_check(RESULTS, cpu)
    report = {**previous, "command": " ".join([Path(sys.executable).name, *sys.argv]), "runs": runs,
              "session_pass": pass_fit, "airflow": air, "rows": rows,
              "reads": {**reads, "bandwidths_gbs": list(bandwidths), "pace": pace, "crossover": crossings,
                        "cpu_check": timed}}
    write_text(out, json.dumps(report, indent=2))  # temporary name, then rename
    print(markdown(rows, pass_fit, runs, air))
    print()
    print(reads_markdown(reads, pace, crossings, timed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
