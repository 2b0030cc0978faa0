"""A retry does not reuse a dead scheduler address: it restarts the cluster host the cluster-up task
recorded, or fails at once naming the task to clear. Real cluster host processes (LocalCluster)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta

import psutil
import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)
from tests.conftest import casa_available, require

pytestmark = [pytest.mark.airflow, pytest.mark.casa]


@pytest.fixture(autouse=True)
def _casa():
    require("casatools", casa_available(), "run `make setup`")


@dataclass
class FakeTI:
    """What the operators use of a task instance; XComs shared by every task of the 'run'."""

    xcoms: dict
    try_number: int = 1
    dag_id: str = "faults"
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    task_id: str = "echo"
    map_index: int = -1
    pushed: dict = field(default_factory=dict)

    def xcom_push(self, key, value):
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids, key="return_value"):
        return self.xcoms.get((task_ids, key))


def _dag_with_cluster(address_file, state_dir, address, overrides=None, **echo_kwargs):
    from airflow.sdk import DAG

    from pclean_provider.operators.base import PcleanDaskOperator
    from pclean_provider.operators.cluster import ClusterUpOperator

    def triple(x):
        return {"value": 3 * x}

    class EchoOperator(PcleanDaskOperator):
        work_kind = "echo"

        def execute(self, context):
            return self.run_on_cluster(context, triple, lambda dask: (7,), str(state_dir))

    with DAG("faults", schedule=None) as dag:
        up = ClusterUpOperator(task_id="cluster_up", address_file=str(address_file), cluster_overrides=overrides)
        echo = EchoOperator(task_id="echo", scheduler_address=address, poll_interval=0.3,
                            resume_grace_seconds=0, **{"deferrable": True, **echo_kwargs})
        up >> echo
    return dag, up, echo


def _defer(op, ti):
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    return deferred.value


def _event(trigger):
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(first(), 120))


def test_retry_after_the_host_was_killed_restarts_it_and_completes(tmp_path):
    from pclean_provider.compute.host import stop_host

    afile = tmp_path / "cluster.json"
    xcoms: dict = {}
    _, up, _ = _dag_with_cluster(afile, tmp_path / "state", None)
    try:
        first = up.execute({"ti": FakeTI(xcoms, task_id="cluster_up")})
        # The cluster host dies mid-run (kill -9): its address in the XCom is dead now.
        pid = json.loads(afile.read_text())["host_pid"]
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=30)

        _, _, echo = _dag_with_cluster(afile, tmp_path / "state", first)
        deferred = _defer(echo, FakeTI(xcoms, try_number=2))
        address = deferred.trigger.scheduler_address
        assert address != first and json.loads(afile.read_text())["scheduler_address"] == address
        event = _event(deferred.trigger)
        assert event["status"] == "success" and event["result"] == {"value": 21}
        assert deferred.kwargs["scheduler_address"] == address
    finally:
        stop_host(afile)


def test_retry_after_the_cluster_was_stopped_names_the_task_to_clear(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.compute.host import stop_host

    afile = tmp_path / "cluster.json"
    xcoms: dict = {}
    _, up, _ = _dag_with_cluster(afile, tmp_path / "state", None)
    first = up.execute({"ti": FakeTI(xcoms, task_id="cluster_up")})
    stop_host(afile)  # cluster_down ran (or a person stopped it): no silent restart

    _, _, echo = _dag_with_cluster(afile, tmp_path / "state", first)
    with pytest.raises(AirflowFailException, match=r"stopped on purpose.*clear the cluster_up task"):
        echo.execute({"ti": FakeTI(xcoms, try_number=2)})

    # Outside a DAG and without an address file there is nothing to restart from.
    from pclean_provider.operators.base import PcleanDaskOperator

    lone = PcleanDaskOperator(task_id="lone", scheduler_address=first)
    with pytest.raises(AirflowFailException, match=r"does not answer and no cluster host address file"):
        lone._live_scheduler_address({"ti": FakeTI(xcoms)})


def test_tls_cluster_runs_a_task_through_operator_and_trigger(tmp_path):
    from pclean_provider.compute.host import stop_host

    afile = tmp_path / "cluster.json"
    xcoms: dict = {}
    _, up, _ = _dag_with_cluster(afile, tmp_path / "state", None, {"tls": True, "nworkers": 1})
    try:
        address = up.execute({"ti": FakeTI(xcoms, task_id="cluster_up")})
        assert address.startswith("tls://127.0.0.1:")
        # The imaging task gets only the address (the XCom); the certificate comes with cluster_up's
        # address file, and the trigger carries the folder, never the key itself.
        _, _, echo = _dag_with_cluster(afile, tmp_path / "state", address,
                                       execution_timeout=timedelta(minutes=7), no_workers_timeout=60)
        deferred = _defer(echo, FakeTI(xcoms))
        # The deferral is bounded by the task's execution_timeout, the wait for workers by its own knob.
        assert deferred.timeout == timedelta(minutes=7)
        assert deferred.trigger.serialize()[1]["no_workers_timeout"] == 60
        tls_dir = str(afile.with_name(afile.name + ".tls"))
        assert deferred.trigger.serialize()[1]["tls_directory"] == tls_dir
        event = _event(deferred.trigger)
        assert event["status"] == "success" and event["result"] == {"value": 21}
        assert echo.execute_complete({"ti": FakeTI(xcoms)}, event, **deferred.kwargs) == {"value": 21}
    finally:
        stop_host(afile)
