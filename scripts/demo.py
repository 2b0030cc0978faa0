"""`make demo`: one simulated night through the nightly cube pipeline, on this machine.

1. simulates a small MeasurementSet (two point sources and a Gaussian, 8 channels) into a demo
   landing area, with the completion marker a real transfer would write last;
2. runs the `nightly_cube_imaging` DAG end to end with Airflow's `dag.test()` (no scheduler or
   web server needed): ingest -> local Dask cluster up -> cube (the exact loop: two sub-cube
   sessions on two workers, one iteration controller) -> QA -> archive (or review) -> cluster down;
3. prints where the cube, the QA report and the archived product are;
4. images the same MS with serial `casatasks.tclean` (a fresh process, the DAG's parameters) and
   prints how far the DAG's cube is from it, product by product, and both iteration counts.

Everything lands under work/demo/ (Airflow home, landing area, products, archive), so a second
`make demo` starts from the same place; its images unchanged, the archive returns the version
already published instead of adding one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "work" / "demo"
DAG_ID = "nightly_cube_imaging"
MS_NAME = "demo_night.ms"
# The cell and the image size come from the imaging plan (the template's `cell: auto`, `imsize:
# auto`): a fifth of the beam, out to where the primary beam falls to 0.2. The demo pins only the
# clean depth: 8 channels imaged as two sub-cubes on two local Dask workers, cleaned down to about
# 3 sigma so that the product is noise-limited and passes the nightly QA gate on its merits.
OVERRIDES = {"nchan": -1, "niter": 3000, "threshold": "3mJy", "weighting": "briggs", "robust": 0.5}

# Airflow reads its home and DAG folder once, at import: set them before anything imports it.
os.environ.update({
    "AIRFLOW_HOME": str(DEMO / "airflow-home"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(DEMO / "airflow-home" / "logs"),
    "PCLEAN_DATA_ROOT": str(DEMO / "data"),
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
})
sys.path.insert(0, str(REPO))


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_with_progress(dag, conf: dict, log_path: Path):
    """dag.test() with Airflow's chatter sent to a file and one line per finished task shown here."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    screen = os.fdopen(os.dup(saved_out), "w", buffering=1)
    stop = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        shown: dict[tuple[str, int], str] = {}
        while True:
            last = stop.wait(2)  # one more look after the run ended, for the teardown's line
            try:
                with create_session() as session:
                    latest = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).order_by(DagRun.id.desc()).first()
                    rows = [] if latest is None else session.query(
                        TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state,
                        TaskInstance.rendered_map_index).filter(
                        TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == latest.run_id).all()
            except Exception:  # noqa: BLE001 - the progress display must never break the run
                rows = []
            for task_id, map_index, state, label in rows:
                state = str(state) if state else ""
                key = (task_id, map_index)
                if state in ("success", "failed", "skipped", "upstream_failed", "deferred") and shown.get(key) != state:
                    shown[key] = state
                    name = f"{task_id}[{label or map_index}]" if map_index >= 0 else task_id
                    screen.write(f"  {time.monotonic() - t0:5.0f} s  {name:<45} {state}\n")
            if last:
                return

    watcher = threading.Thread(target=watch, daemon=True)
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        watcher.start()
        try:
            return dag.test(run_conf=conf)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            stop.set()
            watcher.join(timeout=5)
            screen.close()


def main() -> int:
    t0 = time.monotonic()
    step("preparing the Airflow home (database, pools)")
    subprocess.run(["bash", str(REPO / "scripts" / "airflow-init.sh")], check=True)

    step("simulating tonight's MeasurementSet into the landing area")
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime(log_dir=DEMO / "logs")
    from pclean_provider.casa.simulator import simulate_ms

    landing = DEMO / "data" / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    # 0.1 Jy per visibility gives about 0.8 mJy/beam per channel: a noise level one minute of
    # cleaning reaches. LSRK channels: the output grid matches the data, so no edge channel is
    # left half-covered (and blank) by the frame conversion.
    sim = simulate_ms(landing / MS_NAME, nchan=8, hours=1.0, seed=2026, noise_jy=0.1, freq_frame="LSRK",
                      overwrite=True)
    Path(sim.ms + ".complete").write_text("")  # the transfer's "I am done" marker
    print(f"{sim.ms}: {sim.nrows} rows, {sim.nchan} channels (truth: {sim.truth})")

    step(f"running {DAG_ID} with dag.test() on a local Dask cluster")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    if bag.import_errors:
        print(f"the DAG folder has import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    dag = bag.dags[DAG_ID]
    # Airflow 3.3.2's dag.test() cannot finish a successful run of a DAG with a deadline alert (it
    # looks the alert up by its serialized dict); the scheduler can, so only this in-process run
    # goes without it.
    dag.deadline = None
    # redo: the demo images the same MS every time; the ledger would otherwise skip it.
    log_path = DEMO / "dag-test.log"
    print(f"(Airflow's own log: {log_path})")
    run = run_with_progress(dag, {"overrides": OVERRIDES, "redo": True}, log_path)
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    if str(run.state) != "success":
        failed = sorted(f"{t}[{m}]" if m >= 0 else t for (t, m), s in states.items() if s == "failed")
        print(f"\nthe run failed (tasks: {', '.join(failed) or 'none failed?'}); notifications in "
              f"{DEMO / 'data' / 'notifications'}", file=sys.stderr)
        return 1

    from pclean_provider.pipeline.pipeline_template import load_templates
    from pclean_provider.pipeline.run_settings import settings_for_run

    template = next(t for t in load_templates() if t.dag_id == DAG_ID)
    s = settings_for_run(template, {}, run.run_id)
    product = Path(s.run_dir) / Path(MS_NAME).stem
    stem = Path(MS_NAME).stem
    cube = task_result(run, "cube")
    step(f"done in {time.monotonic() - t0:.0f} s: the cube imaged as {cube.get('nsubcubes')} sub-cube sessions on "
         f"{cube.get('nworkers')} workers, {cube.get('iterations')} iterations, run {run.run_id}")
    print(f"cube:           {product / f'{stem}.cube.image'}")
    qa = json.loads((product / "qa" / "qa.json").read_text())
    print(f"QA report:      {product / 'qa' / 'qa.html'}  (open it in a browser; qa.json beside it)")
    print(f"QA score:       {qa['overall_score']:.2f} ({qa['overall_band']}; the nightly gate is "
          f"{template.qa.gate_min_score})")
    if states.get(("archive", 0)) == "success":
        versions = sorted((Path(s.archive_dir) / f"{stem}_cube").glob("v*"))
        print(f"archive:        {versions[-1]}  (FITS with checksums + manifest.json; "
              f"check with `pclean archive verify {versions[-1]}`)")
    else:
        tickets = sorted((Path(s.review_dir) / DAG_ID / stem).glob("*.json"))
        print(f"QA gate:        below {s.qa_min_score}, so the product went to review instead of the archive:")
        print(f"review ticket:  {tickets[-1] if tickets else s.review_dir}")
    print(f"ingest record:  {Path(s.metadata_dir) / (MS_NAME + '.metadata.json')}")
    plan = json.loads((product / "plan.json").read_text())
    print(f"imaging plan:   {product / 'plan.json'}  (cell {plan['parameters']['cell']}, imsize "
          f"{plan['parameters']['imsize']}, from the data; `pclean plan {s.landing_dir}/{MS_NAME}` prints why)")
    print(f"Airflow home:   {DEMO / 'airflow-home'} (browse it: scripts/airflow-standalone.sh)")

    step("the same MS with serial casatasks.tclean, for comparison")
    (item,) = [i for i in task_result(run, "prepare") if i["name"] == MS_NAME]
    equal = compare_with_tclean(template, item, cube)
    return 0 if equal else 1


def task_result(run, task_id: str):
    """What a task of the finished run returned (its XCom); the first map index of a mapped task."""
    tis = sorted((ti for ti in run.get_task_instances() if ti.task_id == task_id), key=lambda ti: ti.map_index)
    return tis[0].xcom_pull(task_ids=task_id, map_indexes=tis[0].map_index if tis[0].map_index >= 0 else None)


# Serial tclean in a process of its own, as the Dask workers are: CASA's frame conversion of a
# partly covered edge channel depends on what a process did with casatools before (this one
# simulated the MS).
_SERIAL_TCLEAN = """
import json, os, sys
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=os.getcwd())
from casatasks import tclean
ret = tclean(**json.loads(sys.argv[1])) or {}
print(json.dumps({k: (ret[k].item() if hasattr(ret.get(k), "item") else ret.get(k))
                  for k in ("iterdone", "stopcode", "nmajordone")}))
"""
COMPARED = (".image", ".residual", ".model", ".psf", ".pb")
TOLERANCE = 1e-4  # of the peak: what the issue asks of a cleaned cube against serial tclean


def tclean_parameters(template, item: dict, imagename: str) -> dict:
    """tclean's keyword arguments as the DAG builds them: template overrides < the run's overrides <
    what the plan decided for this target (which keeps every value the run pinned)."""
    from pclean_provider.config import PcleanConfig

    planned = json.loads(Path(item["plan_path"]).read_text())["parameters"]
    flat = {**template.overrides, **OVERRIDES, **planned, "vis": item["vis"], "imagename": imagename}
    return PcleanConfig.from_flat(flat).tclean_kwargs()


def compare_with_tclean(template, item: dict, cube: dict) -> bool:
    import shutil

    import numpy as np

    from pclean_provider.casa.image_io import ImageReader
    from pclean_provider.config import PcleanConfig

    scratch = DEMO / "tclean-reference"
    shutil.rmtree(scratch, ignore_errors=True)  # tclean would go on cleaning an earlier model
    scratch.mkdir(parents=True)
    kwargs = tclean_parameters(template, item, str(scratch / Path(item["imagename"]).name))
    ours = tclean_parameters(template, item, item["imagename"])
    # What prepare validated for the DAG's cube task must be what is rebuilt here.
    dag_kwargs = PcleanConfig.model_validate_json(item["config_json"]).tclean_kwargs()
    if json.dumps(dag_kwargs, sort_keys=True, default=str) != json.dumps(ours, sort_keys=True, default=str):
        print("the parameters rebuilt here differ from the DAG's; the comparison would not be fair", file=sys.stderr)
        return False
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _SERIAL_TCLEAN, json.dumps(kwargs)], cwd=scratch,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        print(f"serial tclean failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return False
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"serial tclean:  {kwargs['imagename']}.* in {time.monotonic() - started:.0f} s")

    def cube_of(path: str) -> np.ndarray:
        with ImageReader(path, with_beams=False) as img:
            return np.stack([img.plane(c)[0] for c in range(img.nchan)])

    got_base, ref_base = item["imagename"], kwargs["imagename"]
    image_peak = float(np.nanmax(np.abs(cube_of(ref_base + ".image"))))
    worst_all = 0.0
    print(f"{'product':<10} {'max |DAG - tclean| / peak':>26}  (peak: the image's; psf and pb: their own)")
    for suffix in COMPARED:
        a, b = cube_of(got_base + suffix), cube_of(ref_base + suffix)
        if a.shape != b.shape:
            print(f"{suffix:<10} shapes differ: {a.shape} vs {b.shape}")
            worst_all = float("inf")
            continue
        diff = np.abs(a - b)
        diff[np.isnan(a) & np.isnan(b)] = 0.0
        peak = image_peak if suffix in (".image", ".residual", ".model") else float(np.nanmax(np.abs(b)))
        worst = float(np.max(diff)) / max(peak, 1e-30)
        worst_all = max(worst_all, worst if np.isfinite(worst) else float("inf"))
        print(f"{suffix:<10} {worst:>26.2e}")
    print(f"iterdone:       DAG {cube.get('iterations')}, tclean {ref['iterdone']} "
          f"(tclean's stopcode {ref['stopcode']}, {ref['nmajordone']} major cycles)")
    equal = worst_all <= TOLERANCE and cube.get("iterations") == ref["iterdone"]
    if equal:
        print(f"verdict:        EQUAL: every product within {TOLERANCE:g} of its peak, same iterdone")
    else:
        print(f"verdict:        NOT EQUAL: worst {worst_all:.2e} of the peak (tolerance {TOLERANCE:g}), iterdone "
              f"{cube.get('iterations')} vs {ref['iterdone']}")
    return equal


if __name__ == "__main__":
    sys.exit(main())
