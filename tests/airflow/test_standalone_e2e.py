"""A real `airflow standalone`: an MS that lands is imaged without anyone triggering a run, and the
night's coordinator hangs; the run ends within its bound and a clear images the MS once.

The landing watcher (LandingAreaTrigger in the triggerer) turns a complete MS into an asset event,
and the DAG scheduled on its cron or that asset runs once. Its exact cube's coordinator is stopped
with SIGSTOP as soon as it starts, as a coordinator blocked on a table lock or a dead mount would be:
it neither logs nor ends, and its Dask worker still answers. The template's imaging bound
(tests/airflow/standalone.py: BOUNDED_MINUTES) ends the task's wait, the work is withdrawn, the
stopped coordinator is killed with everything its cluster started, and the run fails naming the
bound (issue 30, item 1). Clearing the cube task (with downstream, as from the grid) starts a
cluster again and images the MS once: one archived version, no staging left beside the products,
and OpenLineage events that name the MS and the products. The helpers here (archive verification,
waiting for a cleared task's re-run) serve the night test (test_standalone_night.py) too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.airflow import standalone

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.FANOUT_DAG_ID
COORDINATOR = "pclean_provider.engine.coordinator"


def verify_archive(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pclean_provider.cli.main", "archive", "verify", str(path)],
                          capture_output=True, text=True, timeout=300)


def wait_until_rerun_done(server, run_id: str, key: tuple[str, int], old_try: int, timeout: float = 480,
                          dag_id: str = DAG_ID) -> str:
    """After a clear the run goes back to queued/running; wait for the cleared try, then the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = server.task_summary(dag_id, run_id)
        if summary.get(key, ("", 0))[1] > old_try and server.run_state(dag_id, run_id) in standalone.TERMINAL:
            return server.run_state(dag_id, run_id)
        time.sleep(3)
    raise TimeoutError(f"re-run did not finish: {server.task_summary(dag_id, run_id)}")


def wait_for_first_run(server, dag_id: str, timeout: float = 240) -> dict:
    """The DAG's first run, however it was started; polled, since nobody here starts it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = server.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 10})["dag_runs"]
        if runs:
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"no run of {dag_id} started within {timeout} s:\n{server.tail()}")


class CoordinatorStopper(threading.Thread):
    """Stops (SIGSTOP) the first coordinator process whose config images `ms_name`, and remembers it."""

    def __init__(self, ms_name: str):
        super().__init__(daemon=True)
        self.ms_name = ms_name
        self.stopped: psutil.Process | None = None
        self.session: int | None = None
        self.python: str | None = None  # the interpreter the coordinator runs
        self.done = threading.Event()

    def _images_our_ms(self, proc: psutil.Process) -> bool:
        cmdline = proc.cmdline()
        if COORDINATOR not in cmdline or "--config" not in cmdline:
            return False
        config = Path(cmdline[cmdline.index("--config") + 1])
        return f"/{self.ms_name}" in config.read_text()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in psutil.process_iter():
                try:
                    if self._images_our_ms(proc):
                        # The cluster host's session: everything its cluster started lives in it.
                        self.session = os.getsid(proc.pid)
                        self.python = proc.cmdline()[0]
                        proc.send_signal(signal.SIGSTOP)
                        self.stopped = proc
                        self.done.set()
                        return
                except (psutil.Error, OSError, ValueError):
                    continue  # gone, not ours, or its config not written yet
            time.sleep(0.2)


def session_members(sid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return members


def test_an_ms_landing_after_unpause_is_imaged_without_a_trigger_within_the_bound_of_a_hung_coordinator(
        airflow_standalone, casa_runtime):
    """The watcher (LandingAreaTrigger in the triggerer) turns a complete MS in the landing area into
    an asset event; the DAG, scheduled on cron OR that asset, runs by itself. Its hung coordinator
    ends the run within the bound; a clear images the MS once."""
    import shutil

    from pclean_provider.casa.simulator import simulate_ms

    server = airflow_standalone
    data: Path = server.data_root
    dag_id = standalone.ARRIVALS_DAG_ID
    landing = data / standalone.ARRIVALS_LANDING
    server.wait_for_dag(dag_id)
    server.unpause(dag_id)

    stopper = CoordinatorStopper("arrive.ms")
    stopper.start()
    # A transfer: the MS's files first, the completion marker last.
    made = Path(simulate_ms(data / "incoming" / "arrive.ms", nchan=4, hours=0.25, seed=61).ms)
    landing.mkdir(parents=True, exist_ok=True)
    shutil.copytree(made, landing / "arrive.ms")
    (landing / "arrive.ms.complete").write_text("")

    run = wait_for_first_run(server, dag_id)
    run_id = run["dag_run_id"]
    assert run["run_type"] == "asset_triggered", run
    try:
        state = server.wait_for_run(dag_id, run_id, timeout=600)
    finally:
        stopper.done.set()
    first = server.task_summary(dag_id, run_id)
    assert stopper.stopped is not None, f"no coordinator of arrive.ms was seen: {first}"
    # The split install (standalone.shared): the cluster_up task, in Airflow's environment without CASA,
    # started its cluster host with [pclean] casa_python, so the Dask workers and the coordinator they
    # start run the CASA environment's Python (the one the wrapper execs: this test process's).
    assert stopper.python == sys.executable, stopper.python
    assert state == "failed", first
    assert first[("cube", 0)][0] == "failed", first
    for task_id in ("qa", "qa_gate", "archive"):
        assert first[(task_id, 0)][0] == "upstream_failed", (task_id, first)
    # The task's error names the bound and where to raise it.
    log = server.task_log(dag_id, run_id, "cube", first[("cube", 0)][1], map_index=0)
    assert "did not finish within" in log and "imaging_timeout" in log, log[-3000:]
    # The cluster is given back: the teardown ran, and nothing of the cluster host's session is left,
    # the stopped coordinator included (a stopped process still dies of SIGKILL).
    assert first[("cluster_down", -1)][0] == "success", first
    assert not stopper.stopped.is_running() or stopper.stopped.status() == psutil.STATUS_ZOMBIE
    assert stopper.session is not None and not session_members(stopper.session)

    # A clear of the cube (with downstream) starts a cluster again and images the MS once.
    server.clear(dag_id, run_id, [["cube", 0]], include_downstream=True)
    state = wait_until_rerun_done(server, run_id, ("cube", 0), first[("cube", 0)][1], timeout=600, dag_id=dag_id)
    summary = server.task_summary(dag_id, run_id)
    assert state == "success", (summary, server.tail())
    assert all(summary[(task_id, 0)][0] == "success" for task_id in ("cube", "qa", "qa_gate", "archive")), summary
    assert summary[("cluster_up", -1)][1] > first[("cluster_up", -1)][1], "the clear started no cluster"
    assert summary[("nothing_arrived", -1)][0] == "skipped", summary
    # The split install (standalone.shared): the task runners have no CASA; their `pclean` steps ran in
    # the CASA environment that [pclean] casa_python names.
    for task_id, map_index in (("ingest", -1), ("qa", 0), ("archive", 0)):
        log = server.task_log(dag_id, run_id, task_id, summary[(task_id, map_index)][1], map_index)
        assert f"running: pclean {task_id}" in log and f"(python: {server.casa_python})" in log, (task_id, log)
    product = data / "archive" / "arrive_cube"
    assert [p.name for p in sorted(product.glob("v*"))] == ["v0001"]
    assert verify_archive(product / "v0001").returncode == 0
    # One writer: the image set is complete and nothing staged by either try is left beside it.
    products = [p for p in (data / "work").rglob("*.image") if "arrive" in p.name]
    assert products, "the re-imaged cube is missing"
    leftovers = [p for image in products for p in image.parent.iterdir() if ".tmp-" in p.name]
    assert not leftovers, leftovers

    # Fired once: the watcher polled every 2 s through the whole run and its clear, yet one event, one run.
    landing_events = [e for e in server.api("GET", "/assets/events", params={"limit": 100})["asset_events"]
                      if e.get("name") == f"{dag_id}.landing"]
    assert len(landing_events) == 1, landing_events
    assert [a["ms"] for a in landing_events[0]["extra"]["payload"]["arrived"]] == ["arrive.ms"]
    runs = server.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 10})["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id], runs

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
    """Inputs and outputs of the COMPLETE OpenLineage event of `job` in this DAG run (a failed try
    sends FAIL, not COMPLETE)."""
    import json

    events = [json.loads(line) for line in server.openlineage_events.read_text().splitlines() if line.strip()]
    done = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == job
            and run["dag_run_id"] in json.dumps(e["run"].get("facets", {}))]
    assert len(done) == 1, (job, [(e.get("eventType"), e["job"]["name"]) for e in events])
    return {side: [(d["namespace"], d["name"]) for d in done[0].get(side, [])] for side in ("inputs", "outputs")}


def test_airflow_runs_without_casa(airflow_standalone):
    """Issue 31's split install: the standalone's Airflow (scheduler, DAG processor, API server,
    triggerer and the task runners they start) comes from an environment with the provider but no
    CASA and no checkout on its path; [pclean] casa_python names the CASA environment."""
    server = airflow_standalone
    python = server.bin_dir / "python"
    env = {k: v for k, v in server.env.items() if k != "PYTHONPATH"}
    assert "PYTHONPATH" not in server.env
    probe = subprocess.run([str(python), "-c", "import casatools"], env=env, cwd=server.home,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'casatools'" in probe.stderr, probe
    where = subprocess.run([str(python), "-c", "import pclean_provider; print(pclean_provider.__file__)"],
                           env=env, cwd=server.home, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(server.bin_dir.parent), where
    assert server.env["AIRFLOW__PCLEAN__CASA_PYTHON"] == str(server.casa_python)
    # The CASA environment it names has casatools (found, not imported) and runs the checkout under test.
    casa = subprocess.run([str(server.casa_python), "-c", "import importlib.util, pclean_provider; "
                           "print(importlib.util.find_spec('casatools') is not None, pclean_provider.__file__)"],
                          capture_output=True, text=True, timeout=60)
    found, package = casa.stdout.split()
    assert found == "True" and Path(package).is_relative_to(standalone.REPO), casa
