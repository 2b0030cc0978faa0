"""A real `airflow standalone`: a night of three MSs, one of them broken, then the clears an operator makes.

Three MSs land (the fan-out cube DAG scans its landing area): two good ones and one whose
metadata are whole (ingest passes it) but whose visibilities are cut short, so it fails in
imaging. The good two are archived in the same run and the failure notification names the bad
one. Clearing one sub-cube batch of a good MS re-runs it and that MS's tail only; the other MS
gains no archive version. Clearing that MS's archive task returns the version it already holds.
The example consumer DAG (dags/pclean_archive_report.py) runs on the archive's asset events and
reports the two archived products.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.airflow import standalone
from tests.airflow.test_nightly_dags import break_data, simulate_into
from tests.airflow.test_standalone_e2e import verify_archive, wait_until_rerun_done
from tests.conftest import require

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.FANOUT_DAG_ID
# The group's tasks of one MS after its sub-cube batches (its tail).
TAIL = ("gather_subcubes", "concat", "qa", "qa_gate", "archive")
REPORT_DAG_ID = "pclean_archive_report"


@pytest.fixture(scope="session")
def airflow_standalone():
    require("airflow", (standalone.VENV_BIN / "airflow").exists(), "run `make setup`")
    return standalone.shared()


def wait_for_reports(server, reports: Path, wanted: set[str], timeout: float = 240) -> set[str]:
    """The products named by the report DAG's asset-triggered runs, once they name `wanted` and
    every such run has ended (each must succeed)."""
    deadline = time.monotonic() + timeout
    named: set[str] = set()
    while time.monotonic() < deadline:
        runs = server.api("GET", f"/dags/{REPORT_DAG_ID}/dagRuns", params={"limit": 50})["dag_runs"]
        runs = [r for r in runs if r["run_type"] == "asset_triggered"]
        if runs and all(r["state"] in standalone.TERMINAL for r in runs):
            assert all(r["state"] == "success" for r in runs), runs
            named = {row["product_id"] for f in reports.glob("archive-report-*.json")
                     for row in json.loads(f.read_text())["products"]}
            if wanted <= named:
                return named
        time.sleep(3)
    raise TimeoutError(f"the report DAG never named {sorted(wanted)} (named {sorted(named)})")


def versions(archive: Path, name: str) -> list[str]:
    return [p.name for p in sorted((archive / f"{name}_cube").glob("v*"))]


def test_a_night_with_a_broken_ms_then_surgical_clears(airflow_standalone, casa_runtime):
    from pclean_provider.pipeline.notify import read_notifications

    server = airflow_standalone
    data: Path = server.data_root
    landing = data / "landing"
    good = simulate_into(landing, "live_a.ms", seed=71)
    simulate_into(landing, "live_b.ms", seed=72)
    break_data(good, landing / "live_cut.ms")

    server.wait_for_dag(DAG_ID)
    server.unpause(DAG_ID)
    # The example consumer DAG, scheduled on the archive's asset events, follows the night.
    server.wait_for_dag(REPORT_DAG_ID)
    server.unpause(REPORT_DAG_ID)
    # No vis: the run takes what its ingest finds complete in the landing area.
    run_id = server.trigger(DAG_ID, {"overrides": standalone.SMALL_DIRTY_CUBE, "qa_min_score": 0.0})
    state = server.wait_for_run(DAG_ID, run_id, timeout=900)
    first = server.task_summary(DAG_ID, run_id)
    # The broken MS fails its own path, so the run fails (someone must look) ...
    assert state == "failed", first
    index = {t["rendered_map_index"].split(" ")[0]: t["map_index"] for t in server.task_instances(DAG_ID, run_id)
             if t["task_id"] == "subcubes_1" and t.get("rendered_map_index")}
    assert sorted(index) == ["live_a.ms", "live_b.ms", "live_cut.ms"], index
    cut, a, b = index["live_cut.ms"], index["live_a.ms"], index["live_b.ms"]
    assert "failed" in {first[("subcubes_1", cut)][0], first[("subcubes_2", cut)][0]}, first
    # Its archive task is upstream_failed, or never expanded when the scheduler saw the failure first.
    assert first.get(("archive", cut), ("not expanded", 0))[0] in ("upstream_failed", "not expanded"), first
    # ... and the other two are archived in the same run.
    archive = data / "archive"
    for name, i in (("live_a", a), ("live_b", b)):
        assert all(first[(task, i)][0] == "success" for task in ("subcubes_1", "subcubes_2", *TAIL)), (name, first)
        assert versions(archive, name) == ["v0001"]
        assert verify_archive(archive / f"{name}_cube" / "v0001").returncode == 0
    assert not (archive / "live_cut_cube").exists()
    failed = [n for n in read_notifications(data / "notifications")
              if n.run_id == run_id and n.kind == "task_failed"]
    assert failed and {n.ms for n in failed} == {"live_cut.ms"}, failed
    manifest_b = (archive / "live_b_cube" / "v0001" / "manifest.json").read_bytes()
    reported = wait_for_reports(server, data / "reports", {"live_a_cube", "live_b_cube"})
    assert {"live_a_cube", "live_b_cube"} <= reported and "live_cut_cube" not in reported, reported

    # Clear one batch of live_a.ms with its downstream, as from the grid.
    server.clear(DAG_ID, run_id, [["subcubes_2", a]], include_downstream=True)
    wait_until_rerun_done(server, run_id, ("subcubes_2", a), first[("subcubes_2", a)][1], timeout=600)
    second = server.task_summary(DAG_ID, run_id)
    rerun = {key for key in second if second[key][1] > first[key][1]}
    assert {("subcubes_2", a), *((task, a) for task in TAIL)} <= rerun, sorted(rerun)
    assert all(second[(task, a)][0] == "success" for task in ("subcubes_2", *TAIL)), second
    # Nothing of the other MSs, nor the sibling batch, nor anything upstream.
    others = {key for key in rerun if key[1] in (b, cut) or key == ("subcubes_1", a)
              or key[0] in ("ingest", "prepare", "partition")}
    assert not others, sorted(others)
    # The re-imaged dirty cube is the same cube: no new version for it, none for the other MS.
    assert versions(archive, "live_a") == ["v0001"] and versions(archive, "live_b") == ["v0001"]
    assert (archive / "live_b_cube" / "v0001" / "manifest.json").read_bytes() == manifest_b

    # Clear live_b.ms's archive alone: it returns the version it published.
    server.clear(DAG_ID, run_id, [["archive", b]], include_downstream=False)
    wait_until_rerun_done(server, run_id, ("archive", b), second[("archive", b)][1], timeout=300)
    third = server.task_summary(DAG_ID, run_id)
    assert third[("archive", b)][0] == "success", third
    assert versions(archive, "live_b") == ["v0001"]
    log = server.task_log(DAG_ID, run_id, "archive", third[("archive", b)][1], map_index=b)
    assert "already holds" in log and "v0001" in log, log[-2000:]
