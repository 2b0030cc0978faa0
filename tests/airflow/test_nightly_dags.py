"""The nightly DAGs under dag.test(): real CASA, a real local Dask cluster, simulated nights.

Airflow reads AIRFLOW_HOME once, at import, so the provider's ``provider_env`` (imported first)
decides the home for the whole test session; here we add what the project DAGs need (the
heavy-task pool, the DAGs written to the metadata database, a data root for their areas).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

REPO = Path(__file__).resolve().parents[2]
PROJECT_DAGS = REPO / "dags"

# Relative template paths (landing, archive, ...) resolve under this root; set before the DAG file
# is parsed, because the asset URI and the notification folder are fixed at parse time.
if "PCLEAN_DATA_ROOT" not in os.environ:
    os.environ["PCLEAN_DATA_ROOT"] = tempfile.mkdtemp(prefix="pclean-data-")
DATA_ROOT = Path(os.environ["PCLEAN_DATA_ROOT"])
# Test-sized products score in QA's error band, and these runs force them through with qa_min_score 0:
# exactly what the site's lowest QA gate refuses unless an administrator lowers it, as this test site does.
os.environ.setdefault("PCLEAN_QA_GATE_MINIMUM", "0")

# Small and quick, yet two sub-cubes per MS: 64 px, 4 channels split over the 2 local workers.
SMALL_CUBE = {"imsize": 64, "cell": "8arcsec", "niter": 30, "threshold": "0Jy", "nchan": -1}
SMALL_CONTINUUM = {"imsize": 64, "cell": "8arcsec", "niter": 30, "threshold": "0Jy", "nterms": 2,
                   "deconvolver": "mtmfs"}

_ready = False


def project_dags() -> dict:
    """Parse dags/ and write its DAGs to the metadata DB so that dag.test() can run them."""
    global _ready
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.pool import Pool

    if not _ready:
        provider_env.migrate_db()
        from pclean_provider.pipeline.pipeline_template import load_templates

        for t in load_templates():
            Pool.create_or_update_pool(name=t.pool.name, slots=t.pool.slots, include_deferred=True,
                                       description="pclean heavy tasks")
        DagBundlesManager().sync_bundles_to_db()
        _ready = True
    bag = DagBag(str(PROJECT_DAGS))
    assert not bag.import_errors, bag.import_errors
    # dag.test() looks DAGs up through the configured bundle, which in this session is the
    # provider's test folder; writing ours under that bundle name lets it find them.
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.dags


def simulate_into(landing: Path, name: str, *, seed: int, nchan: int = 4, marker: bool = True) -> Path:
    from pclean_provider.casa.simulator import simulate_ms

    landing.mkdir(parents=True, exist_ok=True)
    ms = Path(simulate_ms(landing / name, nchan=nchan, hours=0.25, seed=seed, overwrite=True).ms)
    if marker:
        ms.with_name(ms.name + ".complete").write_text("")
    return ms


def break_ms(good: Path, broken: Path) -> Path:
    """A complete-looking MS whose SPECTRAL_WINDOW subtable never arrived."""
    shutil.copytree(good, broken)
    shutil.rmtree(broken / "SPECTRAL_WINDOW")
    broken.with_name(broken.name + ".complete").write_text("")
    return broken


def break_data(good: Path, broken: Path) -> Path:
    """A complete MS whose metadata ingest reads in full but whose visibilities are cut short: the
    tiled data file of the main table is truncated, so gridding fails (CASA: bucket past the end)."""
    shutil.copytree(good, broken)
    (tiled,) = [p for p in broken.glob("table.f*_TSM1") if p.stat().st_size == max(
        q.stat().st_size for q in broken.glob("table.f*_TSM1"))]
    with tiled.open("r+b") as fh:
        fh.truncate(1000)
    broken.with_name(broken.name + ".complete").write_text("")
    return broken


def map_names(dag_run, task_id: str) -> dict[str, int]:
    """The rendered map names of a mapped task -> map index."""
    return {ti.rendered_map_index: ti.map_index for ti in dag_run.get_task_instances() if ti.task_id == task_id}


def dag_for_run(run, session):
    """The serialized DAG of a finished run, as the API's clear endpoint uses it."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun

    stored = session.query(DagRun).filter_by(dag_id=run.dag_id, run_id=run.run_id).one()
    return DBDagBag().get_dag_for_run(stored, session=session)


def task_states(dag_run) -> dict[tuple[str, int], tuple[str, int]]:
    return {(ti.task_id, ti.map_index): (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


def run_dag(dag, conf: dict, no_retries: tuple[str, ...] = ()):
    """dag.test() without the deadline alert (and without retries for the tasks in no_retries,
    whose failure the test provokes: a retry would only wait out the template's retry delay).

    Airflow 3.3.2's dag.test() builds its run from a re-serialized copy of the DAG whose deadline
    alerts are plain dicts; on success DagRun.update_state looks them up by id and fails. The
    scheduler path (the standalone test) keeps the deadline; test_deadline_alert checks its shape.
    """
    saved = dag.deadline
    saved_retries = {task_id: dag.get_task(task_id).retries for task_id in no_retries}
    dag.deadline = None
    for task_id in no_retries:
        dag.get_task(task_id).retries = 0
    try:
        return dag.test(run_conf=conf)
    finally:
        dag.deadline = saved
        for task_id, retries in saved_retries.items():
            dag.get_task(task_id).retries = retries


def archived_versions(archive_root: Path, product_id: str) -> list[Path]:
    return sorted(p for p in (archive_root / product_id).glob("v*") if p.is_dir())


@pytest.fixture(scope="module")
def dags(casa_runtime):
    return project_dags()


def test_cube_night_with_two_good_ms_and_a_broken_one(dags, tmp_path):
    from airflow.models.asset import AssetEvent
    from airflow.models.taskinstance import find_relevant_relatives
    from airflow.utils.session import create_session

    from pclean_provider.pipeline.notify import read_notifications

    landing = DATA_ROOT / "landing"
    a = simulate_into(landing, "night_a.ms", seed=21)
    simulate_into(landing, "night_b.ms", seed=22)
    break_ms(a, landing / "night_bad.ms")
    # Passes ingest (its metadata are whole), fails in imaging (its visibilities are not).
    break_data(a, landing / "night_cut.ms")
    simulate_into(landing, "still_copying.ms", seed=23, marker=False)

    # A 64-pixel, 30-iteration cube is far from the noise, so QA would rightly send it to review;
    # the gate is opened here to exercise the archive (the continuum test takes the review way).
    dag = dags["nightly_cube_imaging"]
    run = run_dag(dag, {"overrides": SMALL_CUBE, "qa_min_score": 0.0}, no_retries=("cube",))
    states = task_states(run)
    # The MS that failed in imaging fails the run (someone must look), and only its own path.
    assert str(run.state) == "failed", states

    # The broken MS is quarantined with its reason; the one still copying is left alone.
    reason = json.loads((DATA_ROOT / "quarantine" / "night_bad.ms.reason.json").read_text())
    assert "SPECTRAL_WINDOW" in reason["reason"]
    assert (DATA_ROOT / "quarantine" / "night_bad.ms" / "table.dat").exists()
    assert (landing / "still_copying.ms").exists()
    notes = [n for n in read_notifications(DATA_ROOT / "notifications") if n.ms == "night_bad.ms"]
    assert notes and notes[-1].kind == "ms_quarantined" and "SPECTRAL_WINDOW" in notes[-1].reason

    # Three MSs passed ingest, each imaged with the exact loop (the template's default cube_mode):
    # one cube task per MS, named by its MS (its two sub-cube sessions live on the workers).
    cubes = map_names(run, "cube")
    assert sorted(cubes) == ["night_a.ms", "night_b.ms", "night_cut.ms"], cubes
    assert not [k for k in states if k[0] in ("partition", "image_subcube", "concat")]
    cut = cubes["night_cut.ms"]
    assert states[("cube", cut)][0] == "failed"
    for task_id in ("qa", "qa_gate", "archive", "review"):
        assert states[(task_id, cut)][0] == "upstream_failed", (task_id, states[(task_id, cut)])
    failed = [n for n in read_notifications(DATA_ROOT / "notifications")
              if n.run_id == run.run_id and n.kind == "task_failed"]
    assert [(n.task_id, n.ms) for n in failed] == [("cube", "night_cut.ms")], failed
    for name in ("night_a", "night_b"):
        index = cubes[f"{name}.ms"]
        assert all(states[(k, index)][0] == "success" for k in ("cube", "qa", "qa_gate", "archive")), states
        # Passed the gate: no review, and nobody is asked (Airflow skips the decision without running it).
        assert states[("review", index)][0] == "skipped" and states[("review_decision", index)][0] == "skipped"
        (version,) = archived_versions(DATA_ROOT / "archive", f"{name}_cube")
        manifest = (version / "manifest.json").read_text()
        assert f"{name}.ms" in manifest and ".fits" in manifest
        assert (DATA_ROOT / "work" / "nightly_cube_imaging" / "ledger" / f"{name}.ms.json").exists()
    assert not (DATA_ROOT / "archive" / "night_cut_cube").exists()
    assert states[("cluster_down", -1)][0] == "success"

    # Surgical rerun: clearing one MS's cube with downstream (as the UI does, for this run) selects
    # that MS's QA, gate, archive and review and the cluster's teardown; no other MS's task.
    a_index = cubes["night_a.ms"]
    with create_session() as session:
        selected = find_relevant_relatives([], [("cube", a_index)], direction="downstream",
                                           dag=dag_for_run(run, session), run_id=run.run_id, session=session)
    assert set(selected) == {("qa", a_index), ("qa_gate", a_index), ("archive", a_index),
                             ("review", a_index), ("review_decision", a_index), "cluster_down"}, selected

    # One asset event per archived product, carrying which MS and which archive version.
    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if (e.extra or {}).get("run_id") == run.run_id]
        # Each on the asset of the version folder it names (through the DAG's asset alias).
        assert all(e.asset.uri == Path(e.extra["path"]).as_uri() for e in events)
    assert sorted(e.extra["ms"] for e in events) == ["night_a.ms", "night_b.ms"]
    assert all(e.extra["version"] == 1 and e.extra["path"] for e in events)

    # The example consumer DAG (scheduled on those assets) reports the night's products.
    report_run = run_dag(dags["pclean_archive_report"], {})
    assert str(report_run.state) == "success", task_states(report_run)
    report = json.loads(max((DATA_ROOT / "reports").glob("archive-report-*.json"), key=os.path.getmtime).read_text())
    rows = {r["product_id"]: r for r in report["products"]}
    assert {"night_a_cube", "night_b_cube"} <= set(rows)
    assert rows["night_a_cube"]["uri"] == (DATA_ROOT / "archive" / "night_a_cube" / "v0001").resolve().as_uri()

    # The next night's ingest offers only the MS that failed: the ledger says the others were imaged.
    ledger = DATA_ROOT / "work" / "nightly_cube_imaging" / "ledger"
    proc = subprocess.run([sys.executable, "-m", "pclean_provider.cli.main", "ingest", str(landing), "--ledger",
                           str(ledger), "--report", str(tmp_path / "again.json"), "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "again.json").read_text())
    assert [m["name"] for m in again["accepted"]] == ["night_cut.ms"]
    assert sorted(m["name"] for m in again["already_imaged"]) == ["night_a.ms", "night_b.ms"]


def template_dag(directory: Path, dag_id: str, **changes):
    """The shipped cube template with some fields changed, as a DAG of its own written to the metadata DB."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    from pclean_provider.data import PIPELINES, packaged_dir

    data = yaml.safe_load((packaged_dir(PIPELINES) / "nightly_cube_imaging.yaml").read_text())
    data.update(dag_id=dag_id, **changes)
    directory.mkdir(parents=True, exist_ok=True)
    template = directory / f"{dag_id}.yaml"
    template.write_text(yaml.safe_dump(data, sort_keys=False))
    # Airflow's safe-mode discovery parses only files that name both "airflow" and "dag".
    (directory / f"{dag_id}_dag.py").write_text(
        f'"""Airflow DAG of the {dag_id} template."""\n'
        "from pclean_provider.dags import build_dag\n"
        "from pclean_provider.pipeline.pipeline_template import load_template\n"
        f"dag = build_dag(load_template({str(template)!r}))\n")
    bag = DagBag(str(directory))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.dags[dag_id]


def test_a_night_with_nothing_to_image_says_so(dags, tmp_path):
    from pclean_provider.pipeline.notify import read_notifications

    # A landing area of its own, with only an MS still being copied: nothing is complete tonight.
    # The template also adds an Airflow notifier (a recording one here; SMTP or Slack on a site).
    sent = tmp_path / "sent.jsonl"
    notifier = {"notifier": "tests.airflow.recording_notifier.RecordingNotifier",
                "on": ["nothing_arrived", "task_failed", "deadline_missed"], "kwargs": {"path": str(sent)}}
    dag = template_dag(tmp_path / "empty-dags", "nightly_cube_quiet", landing_dir="landing-quiet",
                       notifiers=[notifier])
    # Configured for failures and the deadline too: beside the file notifier, and an alert of its own.
    assert [type(c).__name__ for c in dag.default_args["on_failure_callback"]] == [
        "FileTaskFailureNotifier", "RecordingNotifier"]
    assert len(dag.deadline) == 2 and dag.deadline[1].callback.path.endswith("RecordingNotifier")
    simulate_into(DATA_ROOT / "landing-quiet", "copying.ms", seed=41, marker=False)
    run = run_dag(dag, {"overrides": SMALL_CUBE})
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states[("arrivals", -1)][0] == "success" and states[("nothing_arrived", -1)][0] == "success"
    # The imaging branch is visibly skipped; no cluster was started for nothing.
    for task_id in ("prepare", "cluster_up", "cluster_down"):
        assert states[(task_id, -1)][0] == "skipped", (task_id, states)
    assert not [k for k in states if k[0] in ("cube", "qa", "archive") and states[k][0] != "skipped"]
    (note,) = [n for n in read_notifications(DATA_ROOT / "notifications") if n.run_id == run.run_id]
    assert note.kind == "nothing_arrived" and note.dag_id == "nightly_cube_quiet"
    assert "1 incomplete" in note.reason and "landing-quiet" in note.reason, note.reason
    (message,) = [json.loads(line) for line in sent.read_text().splitlines()]
    assert message == {"subject": "pclean nightly_cube_quiet", "task_id": "nothing_arrived", "run_id": run.run_id}


@contextlib.contextmanager
def answering_reviews(dag_id: str, chosen: list[str], params: dict):
    """Answer every review_decision of `dag_id` that waits, as the REST API's PATCH .../hitlDetails does
    (the response on the HITL detail, then the parked task resumed), from a thread: dag.test() keeps a
    run with a waiting task alive until someone outside answers. Yields the answered map indexes."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    answered: list[int] = []
    resumed: dict = {}
    stop = threading.Event()

    def answer() -> None:
        while not stop.wait(1):
            with create_session() as session:
                for ti in session.scalars(select(TaskInstance).where(
                        TaskInstance.dag_id == dag_id, TaskInstance.task_id == "review_decision",
                        TaskInstance.state == TaskInstanceState.AWAITING_INPUT)):
                    detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
                    if detail is None:
                        continue
                    if detail.responded_at is None:
                        detail.responded_by = {"id": "tester", "name": "tester"}
                        detail.responded_at = timezone.utcnow()
                        detail.chosen_options = chosen
                        detail.params_input = params
                        session.add(detail)
                        answered.append(ti.map_index)
                    elif time.monotonic() - resumed.get(ti.id, 0.0) < 5:
                        continue
                    # Resumed again when a resume has not taken after 5 s: dag.test()'s own session can
                    # write the waiting state back over a resume made beside it (seen once: the run
                    # waited for ever). A task dag.test() picks up in time is never resumed twice.
                    resumed[ti.id] = time.monotonic()
                    handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti,
                                        session=session)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(timeout=10)


def test_continuum_night_below_the_qa_gate_goes_to_review(dags):
    from pclean_provider.pipeline.notify import read_notifications

    ms = simulate_into(DATA_ROOT / "elsewhere", "cont.ms", seed=31, nchan=4, marker=False)
    # The product waits in review_decision; a reviewer rejects it with a note.
    with answering_reviews("nightly_continuum_imaging", ["Reject"], {"note": "too few iterations"}) as answered:
        run = run_dag(dags["nightly_continuum_imaging"],
                      {"vis": str(ms), "overrides": SMALL_CONTINUUM, "qa_min_score": 1.0})
    assert answered == [0]
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states[("continuum", 0)][0] == "success"
    (qa_json,) = (DATA_ROOT / "work" / "nightly_continuum_imaging" / "runs").glob("*/cont/qa/qa.json")
    report = json.loads(qa_json.read_text())
    assert report["kind"] == "mfs" and report["overall_score"] < 1.0
    assert qa_json.with_name("qa.html").stat().st_size > 10_000  # the pictures are in it
    # Below the gate: review ticket, nothing published, the archive branch skipped for this MS.
    assert states[("archive", 0)][0] == "skipped" and states[("review", 0)][0] == "success"
    (ticket,) = (DATA_ROOT / "review" / "nightly_continuum_imaging" / "cont").glob("*.json")
    kept = json.loads(ticket.read_text())
    assert kept["qa_json"] == str(qa_json)
    # Rejected: still in review, the reviewer's note in the ticket, the CLI way to publish still there.
    assert states[("review_decision", 0)][0] == "success", states
    assert kept["status"] == "rejected" and kept["decisions"][-1]["note"] == "too few iterations"
    assert kept["decisions"][-1]["by"] == "tester" and "pclean archive publish" in kept["how_to_publish"]
    waiting = [n for n in read_notifications(DATA_ROOT / "notifications")
               if n.run_id == run.run_id and n.kind == "review_waiting"]
    assert len(waiting) == 1 and waiting[0].ms == "cont.ms" and waiting[0].qa_report, waiting
    assert not (DATA_ROOT / "archive" / "cont_continuum").exists()
    assert ms.exists(), "an MS named with vis is never moved"


def test_bad_vis_fails_at_once_without_retry_and_notifies(dags):
    from pclean_provider.pipeline.notify import read_notifications

    missing = DATA_ROOT / "nowhere" / "lost.ms"
    run = run_dag(dags["nightly_cube_imaging"], {"vis": str(missing), "overrides": SMALL_CUBE})
    states = task_states(run)
    assert str(run.state) == "failed"
    assert states[("ingest", -1)] == ("failed", 1)  # bad input: no retry despite retries=1
    assert states[("cluster_up", -1)][0] == "upstream_failed"  # no cluster was started for it
    note = [n for n in read_notifications(DATA_ROOT / "notifications") if n.run_id == run.run_id][-1]
    assert (note.task_id, note.ms) == ("ingest", "lost.ms")
    assert "does not exist" in note.reason


def test_deadline_alert_and_operations_settings(dags):
    import asyncio

    from airflow.sdk import DeadlineReference

    from pclean_provider.pipeline.notify import notify_deadline_missed, read_notifications

    for dag in (dags["nightly_cube_imaging"], dags["nightly_continuum_imaging"]):
        (alert,) = dag.deadline
        # Not queued-at: clearing a task of a failed run must work (see dags/callbacks.py).
        assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
        assert alert.interval.total_seconds() == 6 * 3600
        assert alert.callback.path == "pclean_provider.pipeline.notify.notify_deadline_missed"
        heavy = {t.task_id for t in dag.tasks if t.pool == "pclean_heavy"}
        assert {"qa", "archive"} <= heavy and ("cube" in heavy or "continuum" in heavy)
        assert dag.default_args["retries"] == 2 and dag.default_args["retry_exponential_backoff"]
        # The `pclean` steps are bounded by Airflow's execution_timeout (template step_timeout_minutes).
        assert {dag.get_task(i).execution_timeout.total_seconds() for i in ("ingest", "qa", "archive")} == {180 * 60}
        params = dag.params.dump()
        assert {"vis", "preset", "overrides", "work_dir", "archive_dir", "cluster"} <= set(params)
        schema = dag.params.get_param("cluster").schema
        assert schema["enum"] == ["connection", "local", "slurm", "address"] and schema["title"]
    asyncio.run(notify_deadline_missed({"dag_run": {"run_id": "r9", "conf": {"vis": "/x/late.ms"}}},
                                       notifications_dir=str(DATA_ROOT / "deadline-notes"),
                                       dag_id="nightly_cube_imaging", deadline_hours=6.0))
    (note,) = read_notifications(DATA_ROOT / "deadline-notes")
    assert (note.kind, note.ms, note.run_id) == ("deadline_missed", "late.ms", "r9")


def test_every_pipeline_watches_its_landing_area_beside_its_cron(dags):
    """Both shipped pipelines share one landing folder; each keeps an active landing asset with its
    own watcher (Airflow activates one asset per URI), scheduled as cron OR that asset."""
    from airflow.models.asset import AssetActive
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pclean_provider.triggers.landing import LandingAreaTrigger

    landing = (DATA_ROOT / "landing").resolve()
    for dag_id, cron in (("nightly_cube_imaging", "0 2 * * *"), ("nightly_continuum_imaging", "30 2 * * *")):
        timetable = dags[dag_id].timetable
        assert timetable.timetable.expression == cron
        asset = timetable.asset_condition
        assert asset.name == f"{dag_id}.landing" and asset.uri.startswith(landing.as_uri())
        (watcher,) = asset.watchers
        assert isinstance(watcher.trigger, LandingAreaTrigger) and watcher.trigger.landing_dir == str(landing)
        assert watcher.trigger.state_dir.endswith(f"/{dag_id}/arrivals")
    with create_session() as session:
        active = set(session.scalars(select(AssetActive.name)))
    assert {"nightly_cube_imaging.landing", "nightly_continuum_imaging.landing"} <= active, active
