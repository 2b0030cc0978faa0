"""A real `airflow standalone`: a night of three MSs, one of them broken, then the clears an operator makes.

Three MSs land (the fan-out cube DAG scans its landing area): two good ones and one whose
metadata are whole (ingest passes it) but whose visibilities are cut short, so it fails in
imaging. The Airflow has no heavy-task pool: the provider's scheduler plugin makes it as the run
starts. The good two are archived in the same run (one asset event each) and the failure
notifications name the bad one. Clearing one sub-cube batch of a good MS re-runs it, that MS's tail
and the cluster set-up/teardown pair only; the re-imaged dirty cube is the same, so the archive
returns the version it holds. Clearing the other MS's archive task returns its version too. The
example consumer DAG (dags/pclean_archive_report.py) runs on the archive's asset events and reports
the two archived products.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.airflow import standalone
from tests.airflow.test_nightly_dags import break_data, simulate_into
from tests.airflow.test_standalone_e2e import verify_archive, wait_until_rerun_done

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.FANOUT_DAG_ID
# The group's tasks of one MS after its sub-cube batches (its tail).
TAIL = ("gather_subcubes", "concat", "qa", "qa_gate", "archive")
REPORT_DAG_ID = "pclean_archive_report"


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
    # An Airflow nobody prepared: no heavy pool. Its concat/QA/archive would wait for ever; the
    # scheduler plugin creates the pool as the run starts, with the template's slots.
    if any(p["name"] == "pclean_heavy" for p in server.api("GET", "/pools")["pools"]):
        server.api("DELETE", "/pools/pclean_heavy")
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
    pool = server.api("GET", "/pools/pclean_heavy")
    assert (pool["slots"], pool["include_deferred"]) == (2, True), pool
    assert "made by the scheduler plugin when this run started" in server.task_log(DAG_ID, run_id, "ensure_pool", 1)

    # Each MS's 4 channels in two sub-cubes, one per batch task, each task named by MS and channels.
    batches = {t["rendered_map_index"]: t["map_index"] for t in server.task_instances(DAG_ID, run_id)
               if t["task_id"] in ("subcubes_1", "subcubes_2")}
    assert sorted(batches) == [f"{ms} ch {chans} (1 sub-cube)" for ms in ("live_a.ms", "live_b.ms", "live_cut.ms")
                               for chans in ("0-1", "2-3")], batches
    index = {label.split(" ")[0]: i for label, i in batches.items()}
    cut, a, b = index["live_cut.ms"], index["live_a.ms"], index["live_b.ms"]
    assert "failed" in {first[("subcubes_1", cut)][0], first[("subcubes_2", cut)][0]}, first
    # Its gather fails naming the failed batches; its archive task is upstream_failed, or never
    # expanded when the scheduler saw the failure first.
    assert first[("gather_subcubes", cut)][0] == "failed", first
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
    assert "gather_subcubes" in {n.task_id for n in failed}, failed
    # One asset event per archived product, naming its MS and archive version.
    events = [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
              if e.get("source_run_id") == run_id]
    assert sorted((e["source_task_id"], e["extra"]["ms"], e["extra"]["version"]) for e in events) == [
        ("archive", "live_a.ms", 1), ("archive", "live_b.ms", 1)], events
    manifest_a = (archive / "live_a_cube" / "v0001" / "manifest.json").read_bytes()
    manifest_b = (archive / "live_b_cube" / "v0001" / "manifest.json").read_bytes()
    reported = wait_for_reports(server, data / "reports", {"live_a_cube", "live_b_cube"})
    assert {"live_a_cube", "live_b_cube"} <= reported and "live_cut_cube" not in reported, reported

    # The batch tasks kept their Dask dashboard's address, but the run's cluster is down: the link
    # is not offered (tests/unit/test_dask_dashboard_link.py shows it while a cluster lives).
    links = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/subcubes_2/links",
                       params={"map_index": a})["extra_links"]
    assert "Dask dashboard" in links and links["Dask dashboard"] is None, links
    # The sub-cubes stay for a later clear; the sibling batch's must come through it untouched.
    (kept,) = [d for s in (data / "work").rglob("*.subcubes") if "live_a" in str(s) for d in s.iterdir()
               if d.name.startswith("chan00000")]
    kept_inode = kept.stat().st_ino

    # Clear one batch of live_a.ms with its downstream, as from the grid.
    server.clear(DAG_ID, run_id, [["subcubes_2", a]], include_downstream=True)
    wait_until_rerun_done(server, run_id, ("subcubes_2", a), first[("subcubes_2", a)][1], timeout=600)
    second = server.task_summary(DAG_ID, run_id)
    rerun = {key for key in second if second[key][1] > first[key][1]}
    assert {("subcubes_2", a), *((task, a) for task in TAIL)} <= rerun, sorted(rerun)
    assert all(second[(task, a)][0] == "success" for task in ("subcubes_2", *TAIL)), second
    # The cleared batch needs a cluster: Airflow cleared the set-up/teardown pair around it.
    for key in (("cluster_up", -1), ("cluster_down", -1)):
        assert key in rerun and second[key][0] == "success", (key, first.get(key), second.get(key))
    # Nothing of the other MSs, nor the sibling batch, nor anything upstream.
    others = {key for key in rerun if key[1] in (b, cut) or key == ("subcubes_1", a)
              or key[0] in ("ingest", "prepare", "partition")}
    assert not others, sorted(others)
    assert kept.stat().st_ino == kept_inode, "the sibling batch's sub-cube was written again"
    # The re-imaged dirty cube is the same cube: no new version for it, none for the other MS.
    assert versions(archive, "live_a") == ["v0001"] and versions(archive, "live_b") == ["v0001"]
    assert (archive / "live_a_cube" / "v0001" / "manifest.json").read_bytes() == manifest_a
    assert (archive / "live_b_cube" / "v0001" / "manifest.json").read_bytes() == manifest_b
    assert verify_archive(archive / "live_a_cube").returncode == 0
    # The re-run archive names the version it found, never a new one.
    rerun_versions = {(e["extra"]["ms"], e["extra"]["version"]) for e in server.api(
        "GET", "/assets/events", params={"limit": 100})["asset_events"] if e.get("source_run_id") == run_id}
    assert rerun_versions == {("live_a.ms", 1), ("live_b.ms", 1)}, rerun_versions

    # Clear live_b.ms's archive alone: it returns the version it published.
    server.clear(DAG_ID, run_id, [["archive", b]], include_downstream=False)
    wait_until_rerun_done(server, run_id, ("archive", b), second[("archive", b)][1], timeout=300)
    third = server.task_summary(DAG_ID, run_id)
    assert third[("archive", b)][0] == "success", third
    assert versions(archive, "live_b") == ["v0001"]
    log = server.task_log(DAG_ID, run_id, "archive", third[("archive", b)][1], map_index=b)
    assert "already holds" in log and "v0001" in log, log[-2000:]
