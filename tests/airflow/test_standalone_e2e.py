"""A real `airflow standalone`: trigger the fan-out cube pipeline over REST, then re-run one sub-cube batch.

Checks the things operations staff rely on: on an Airflow whose heavy-task pool was deleted, the
run's start makes it again (the provider's scheduler plugin); the run succeeds and archives a verified product;
clearing one sub-cube batch task re-runs only it and what follows (plus the cluster set-up/teardown
that bracket it), and the archive returns the version it holds instead of a duplicate. Sub-cubes are
mapped tasks only in the template's `cube_mode: fanout` (a dirty cube here, niter=0); the default
exact mode has one `cube` task per MS (the browser test triggers that DAG).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.airflow import standalone
from tests.conftest import require

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.FANOUT_DAG_ID


@pytest.fixture(scope="session")
def airflow_standalone():
    require("airflow", (standalone.VENV_BIN / "airflow").exists(), "run `make setup`")
    return standalone.shared()


def verify_archive(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pclean_provider.cli.main", "archive", "verify", str(path)],
                          capture_output=True, text=True, timeout=300)


def wait_until_rerun_done(server, run_id: str, key: tuple[str, int], old_try: int, timeout: float = 480) -> str:
    """After a clear the run goes back to queued/running; wait for the cleared try, then the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = server.task_summary(DAG_ID, run_id)
        if summary.get(key, ("", 0))[1] > old_try and server.run_state(DAG_ID, run_id) in standalone.TERMINAL:
            return server.run_state(DAG_ID, run_id)
        time.sleep(3)
    raise TimeoutError(f"re-run did not finish: {server.task_summary(DAG_ID, run_id)}")


def test_trigger_archive_then_clear_one_subcube(airflow_standalone, casa_runtime):
    from pclean_provider.casa.simulator import simulate_ms

    server = airflow_standalone
    data: Path = server.data_root
    ms = simulate_ms(data / "incoming" / "e2e.ms", nchan=4, hours=0.25, seed=41).ms

    server.wait_for_dag(DAG_ID)
    # An Airflow nobody prepared: no heavy pool. Its concat/QA/archive would wait for ever; the
    # scheduler plugin creates the pool as the run starts, with the template's slots.
    if any(p["name"] == "pclean_heavy" for p in server.api("GET", "/pools")["pools"]):
        server.api("DELETE", "/pools/pclean_heavy")
    server.unpause(DAG_ID)
    # qa_min_score 0: a test-sized cube is far from the noise and would go to review (see test_nightly_dags).
    run_id = server.trigger(DAG_ID, {"vis": ms, "overrides": standalone.SMALL_DIRTY_CUBE, "qa_min_score": 0.0})
    state = server.wait_for_run(DAG_ID, run_id)
    first = server.task_summary(DAG_ID, run_id)
    assert state == "success", (first, server.tail())
    pool = server.api("GET", "/pools/pclean_heavy")
    assert (pool["slots"], pool["include_deferred"]) == (2, True), pool
    assert "made by the scheduler plugin when this run started" in server.task_log(DAG_ID, run_id, "ensure_pool", 1)

    # One MS, two sub-cubes, one per batch task (the fan-out template's cube settings in standalone.py).
    assert first[("subcubes_1", 0)][0] == "success" and first[("subcubes_2", 0)][0] == "success", first
    product = data / "archive" / "e2e_cube"
    assert [p.name for p in sorted(product.glob("v*"))] == ["v0001"], list(product.parent.iterdir())
    assert verify_archive(product / "v0001").returncode == 0
    manifest_v1 = (product / "v0001" / "manifest.json").read_bytes()
    events = [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
              if e.get("source_run_id") == run_id]
    assert [(e["source_task_id"], e["extra"]["ms"], e["extra"]["version"]) for e in events] == [
        ("archive", "e2e.ms", 1)]
    labels = sorted(t.get("rendered_map_index") for t in server.task_instances(DAG_ID, run_id)
                    if t["task_id"] in ("subcubes_1", "subcubes_2"))
    assert labels == ["e2e.ms ch 0-1 (1 sub-cube)", "e2e.ms ch 2-3 (1 sub-cube)"], labels

    server.clear(DAG_ID, run_id, [["subcubes_2", 0]], include_downstream=True)
    state = wait_until_rerun_done(server, run_id, ("subcubes_2", 0), first[("subcubes_2", 0)][1])
    second = server.task_summary(DAG_ID, run_id)
    assert state == "success", second

    rerun = {k for k in second if second[k][1] > first[k][1]}
    # Upstream of the cleared batch, and its sibling batch, keep their first try.
    for key in [("ingest", -1), ("prepare", -1), ("partition", 0), ("subcubes_1", 0)]:
        assert key not in rerun, (key, first[key], second[key])
    # It and everything after it ran again; the cluster came back up for it and went down after.
    for key in [("subcubes_2", 0), ("gather_subcubes", 0), ("concat", 0), ("qa", 0), ("qa_gate", 0),
                ("archive", 0), ("cluster_up", -1), ("cluster_down", -1)]:
        assert key in rerun and second[key][0] == "success", (key, first.get(key), second.get(key))

    # A dirty sub-cube re-imaged is the same cube: its input fingerprints equal version 1's, so the
    # re-run archive returns version 1 and publishes nothing new.
    assert [p.name for p in sorted(product.glob("v*"))] == ["v0001"]
    assert (product / "v0001" / "manifest.json").read_bytes() == manifest_v1  # first version untouched
    assert verify_archive(product).returncode == 0
    assert run_id in manifest_v1.decode()
    versions = sorted(e["extra"]["version"] for e in server.api("GET", "/assets/events", params={"limit": 100})
                      ["asset_events"] if e.get("source_run_id") == run_id)
    assert set(versions) == {1}  # the re-run names the version it found, never a new one


def wait_for_first_run(server, dag_id: str, timeout: float = 240) -> dict:
    """The DAG's first run, however it was started; polled, since nobody here starts it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = server.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 10})["dag_runs"]
        if runs:
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"no run of {dag_id} started within {timeout} s:\n{server.tail()}")


def test_an_ms_landing_after_unpause_is_imaged_without_a_trigger(airflow_standalone, casa_runtime):
    """The watcher (LandingAreaTrigger in the triggerer) turns a complete MS in the landing area into
    an asset event; the DAG, scheduled on cron OR that asset, runs by itself, images the MS once."""
    import shutil

    from pclean_provider.casa.simulator import simulate_ms

    server = airflow_standalone
    data: Path = server.data_root
    dag_id = standalone.ARRIVALS_DAG_ID
    landing = data / standalone.ARRIVALS_LANDING
    server.wait_for_dag(dag_id)
    server.unpause(dag_id)

    # A transfer: the MS's files first, the completion marker last.
    made = Path(simulate_ms(data / "incoming" / "arrive.ms", nchan=4, hours=0.25, seed=61).ms)
    landing.mkdir(parents=True, exist_ok=True)
    shutil.copytree(made, landing / "arrive.ms")
    (landing / "arrive.ms.complete").write_text("")

    run = wait_for_first_run(server, dag_id)
    assert run["run_type"] == "asset_triggered", run
    state = server.wait_for_run(dag_id, run["dag_run_id"])
    summary = server.task_summary(dag_id, run["dag_run_id"])
    assert state == "success", (summary, server.tail())
    assert summary[("cube", 0)][0] == "success" and summary[("archive", 0)][0] == "success", summary
    assert summary[("nothing_arrived", -1)][0] == "skipped", summary
    product = data / "archive" / "arrive_cube"
    assert [p.name for p in sorted(product.glob("v*"))] == ["v0001"]
    assert verify_archive(product / "v0001").returncode == 0

    # Fired once: the watcher polled every 2 s through the whole run, yet one event, one run.
    landing_events = [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
                      if e.get("name") == f"{dag_id}.landing"]
    assert len(landing_events) == 1, landing_events
    assert [a["ms"] for a in landing_events[0]["extra"]["payload"]["arrived"]] == ["arrive.ms"]
    runs = server.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 10})["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run["dag_run_id"]], runs

    # OpenLineage (the provider's file transport, set in standalone.shared): the run's imaging and
    # archive events name the MS as input; imaging's outputs are the cube's images, archive's the
    # version folder it published.
    ms_path = str((landing / "arrive.ms").resolve())
    version = str((product / "v0001").resolve())
    cube = lineage_of(server, f"{dag_id}.cube", run)
    assert ("file", ms_path) in cube["inputs"], cube
    assert any(name.endswith("arrive.cube.image") for _, name in cube["outputs"]), cube
    archive = lineage_of(server, f"{dag_id}.archive", run)
    assert ("file", ms_path) in archive["inputs"] and ("file", version) in archive["outputs"], archive


def lineage_of(server, job: str, run: dict) -> dict[str, list[tuple[str, str]]]:
    """Inputs and outputs of the COMPLETE OpenLineage event of `job` in this DAG run."""
    import json

    events = [json.loads(line) for line in server.openlineage_events.read_text().splitlines() if line.strip()]
    done = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == job
            and run["dag_run_id"] in json.dumps(e["run"].get("facets", {}))]
    assert len(done) == 1, (job, [(e.get("eventType"), e["job"]["name"]) for e in events])
    return {side: [(d["namespace"], d["name"]) for d in done[0].get(side, [])] for side in ("inputs", "outputs")}
