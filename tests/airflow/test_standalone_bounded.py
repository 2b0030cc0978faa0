"""A real `airflow standalone`: a night whose cube coordinator hangs ends within its bound, gives its
cluster back, and a clear re-images the MS with exactly one writer (issue 30, item 1).

The coordinator of the exact cube is stopped with SIGSTOP as soon as it starts, as a coordinator
blocked on a table lock or a dead mount would be: it neither logs nor ends, and its Dask worker still
answers. The template's imaging bound (tests/airflow/standalone.py: BOUNDED_MINUTES) ends the task's
wait, the work is withdrawn, the stopped coordinator is killed with everything its cluster started,
and the run fails naming the bound. Clearing the cube task (with downstream, as from the grid) starts
a cluster again and images the MS once: one archived version, no staging left beside the products.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.airflow import standalone
from tests.airflow.test_nightly_dags import simulate_into
from tests.airflow.test_standalone_e2e import verify_archive, wait_until_rerun_done

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.BOUNDED_DAG_ID
MS_NAME = "bounded_a.ms"
COORDINATOR = "pclean_provider.engine.coordinator"


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


def test_a_hung_coordinator_ends_within_its_bound_and_a_clear_images_once(airflow_standalone, casa_runtime):
    server = airflow_standalone
    data: Path = server.data_root
    simulate_into(data / standalone.BOUNDED_LANDING, MS_NAME, seed=81)
    server.wait_for_dag(DAG_ID)
    server.unpause(DAG_ID)

    stopper = CoordinatorStopper(MS_NAME)
    stopper.start()
    run_id = server.trigger(DAG_ID, {"qa_min_score": 0.0})
    try:
        state = server.wait_for_run(DAG_ID, run_id, timeout=600)
    finally:
        stopper.done.set()
    first = server.task_summary(DAG_ID, run_id)
    assert stopper.stopped is not None, f"no coordinator of {MS_NAME} was seen: {first}"
    # The split install (standalone.shared): the cluster_up task, in Airflow's environment without CASA,
    # started its cluster host with [pclean] casa_python, so the Dask workers and the coordinator they
    # start run the CASA environment's Python (the one the wrapper execs: this test process's).
    assert stopper.python == sys.executable, stopper.python
    assert state == "failed", first
    assert first[("cube", 0)][0] == "failed", first
    for task_id in ("qa", "qa_gate", "archive"):
        assert first[(task_id, 0)][0] == "upstream_failed", (task_id, first)
    # The task's error names the bound and where to raise it.
    log = server.task_log(DAG_ID, run_id, "cube", first[("cube", 0)][1], map_index=0)
    assert "did not finish within" in log and "imaging_timeout" in log, log[-3000:]

    # The cluster is given back: the teardown ran, and nothing of the cluster host's session is left,
    # the stopped coordinator included (a stopped process still dies of SIGKILL).
    assert first[("cluster_down", -1)][0] == "success", first
    assert not stopper.stopped.is_running() or stopper.stopped.status() == psutil.STATUS_ZOMBIE
    assert stopper.session is not None and not session_members(stopper.session)

    # A clear of the cube (with downstream) starts a cluster again and images the MS once.
    server.clear(DAG_ID, run_id, [["cube", 0]], include_downstream=True)
    state = wait_until_rerun_done(server, run_id, ("cube", 0), first[("cube", 0)][1], timeout=600, dag_id=DAG_ID)
    second = server.task_summary(DAG_ID, run_id)
    assert all(second[(task_id, 0)][0] == "success" for task_id in ("cube", "qa", "qa_gate", "archive")), second
    assert second[("cluster_up", -1)][1] > first[("cluster_up", -1)][1], "the clear started no cluster"
    assert state == "success", second
    versions = sorted((data / "archive" / "bounded_a_cube").glob("v*"))
    assert [v.name for v in versions] == ["v0001"]
    assert verify_archive(versions[0]).returncode == 0
    # One writer: the image set is complete and nothing staged by either try is left beside it.
    products = [p for p in (data / "work").rglob("*.image") if "bounded_a" in p.name]
    assert products, "the re-imaged cube is missing"
    leftovers = [p for product in products for p in product.parent.iterdir() if ".tmp-" in p.name]
    assert not leftovers, leftovers
