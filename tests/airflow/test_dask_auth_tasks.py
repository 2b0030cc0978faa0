"""What reaches a task from a Dask port: the operators and the trigger against real schedulers.

- a plaintext scheduler is refused by the operator (the task fails for good, naming the setting)
  and by the trigger, before any connection, unless the administrator allows it;
- a scheduler given by a connection's host and port is reached over mutual TLS with the
  connection's certificate folder;
- on a cluster shared with another holder of its certificate, a payload that other client published
  under the task's predictable key is never unpickled: the task submits its own work and gets its
  own result; a task the other client ran under the key fails the wait, saying so.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)
from tests.airflow.fake_ti import FakeTI

pytestmark = pytest.mark.airflow


def _operator(state_dir, **kw):
    from pclean_provider.operators.base import PcleanDaskOperator

    def _double(x):  # pickled by value: a cluster host's scheduler cannot import this test module
        return {"value": 2 * x}

    class EchoOperator(PcleanDaskOperator):
        work_kind = "echo"

        def execute(self, context):
            return self.run_on_cluster(context, _double, lambda dask: (21,), str(state_dir))

    kw.setdefault("deferrable", True)
    return EchoOperator(task_id="echo", poll_interval=0.3, resume_grace_seconds=0, **kw)


def _first_event(trigger, timeout=60):
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), timeout))


@pytest.fixture
def plain_cluster(monkeypatch):
    from distributed import LocalCluster

    from pclean_provider.compute.tls import ALLOW_PLAINTEXT_ENV

    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


def test_a_plaintext_scheduler_fails_the_task_for_good_before_connecting(plain_cluster, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.triggers.dask import DaskWorkTrigger

    address = plain_cluster.scheduler_address
    clients_before = set(plain_cluster.scheduler.clients)
    for deferrable in (True, False):
        op = _operator(tmp_path / "state", scheduler_address=address, deferrable=deferrable)
        with pytest.raises(AirflowFailException, match="allow_plaintext_dask") as refused:
            op.execute({"ti": FakeTI(dag_id="auth")})
        assert "tls://" in str(refused.value)
    # A trigger given the address (an old deferral, a hand-made one) refuses too, as bad input.
    event = _first_event(DaskWorkTrigger(address, "pclean-echo-x-try1", str(tmp_path / "r.json"),
                                         poll_interval=0.2))
    assert event["status"] == "error" and event["input_error"] is True
    assert "allow_plaintext_dask" in event["message"]
    assert set(plain_cluster.scheduler.clients) == clients_before, "something connected"


def test_a_connections_host_is_reached_over_mutual_tls_with_its_certificate_folder(monkeypatch, tmp_path):
    from distributed import LocalCluster

    from pclean_provider.compute import tls
    from pclean_provider.hooks.dask import PcleanDaskHook

    folder = tls.create_certificates(tmp_path / "cluster.tls")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      dashboard_address=None, security=tls.security(folder)) as cluster:
        port = int(cluster.scheduler_address.rsplit(":", 1)[1])
        monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_TLS", json.dumps(
            {"conn_type": "pclean_dask", "host": "127.0.0.1", "port": port, "extra": {"tls_directory": str(folder)}}))
        hook = PcleanDaskHook("pclean_tls")
        spec = hook.get_cluster_spec()
        assert spec.scheduler_address == f"tls://127.0.0.1:{port}" and spec.tls_directory == str(folder)
        ok, message = hook.test_connection()
        assert ok, message
        # The same host without the folder: plaintext, refused, saying how to fix it.
        monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_PLAIN", json.dumps(
            {"conn_type": "pclean_dask", "host": "127.0.0.1", "port": port}))
        ok, message = PcleanDaskHook("pclean_plain").test_connection()
        assert not ok and "allow_plaintext_dask" in message and "tls_directory" in message


# -- forged publications on a cluster shared with another holder of its certificate ------------------------


class Payload:
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self):
        code = f"import os; open(os.path.join({self.folder!r}, 'unpickled-%d' % os.getpid()), 'w').close()"
        return (exec, (code,))


def _forged_result(folder):
    return Payload(folder)


@pytest.fixture
def shared_tls_cluster(monkeypatch, tmp_path):
    """A TLS cluster whose certificate the task's connection names, and a second client holding it."""
    from distributed import Client, LocalCluster

    from pclean_provider.compute import tls

    folder = tls.create_certificates(tmp_path / "cluster.tls")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, protocol="tls://", host="127.0.0.1",
                      dashboard_address=None, security=tls.security(folder),
                      local_directory=str(tmp_path / "dask")) as cluster:
        monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_DASK_DEFAULT", json.dumps(
            {"conn_type": "pclean_dask", "extra": {"tls_directory": str(folder)}}))
        with Client(cluster.scheduler_address, set_as_default=False, security=tls.security(folder)) as other:
            yield cluster.scheduler_address, other


def _key_of(op, ti):
    from pclean_provider.compute.dask_keys import work_key

    return work_key(op.work_kind, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)


def test_a_payload_published_under_the_tasks_key_is_not_unpickled(shared_tls_cluster, tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    address, other = shared_tls_cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    op = _operator(tmp_path / "state", scheduler_address=address)
    ti = FakeTI(dag_id="auth")
    key = _key_of(op, ti)
    other.publish_dataset(Payload(str(marks)), name=key)  # waiting for the task under its predictable name

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert trigger.key == key and trigger.tls_directory
    event = _first_event(trigger)
    assert event["status"] == "success" and event["result"] == {"value": 42}, event
    assert op.execute_complete({"ti": ti}, event, **deferred.value.kwargs) == {"value": 42}
    assert list(marks.iterdir()) == [], "the published payload was unpickled"


def test_a_task_someone_else_ran_under_the_key_fails_the_wait(shared_tls_cluster, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowException, TaskDeferred

    from pclean_provider.triggers import dask as dask_triggers

    # How long a finished task's result file may take to show; a second is plenty on a local disk.
    monkeypatch.setattr(dask_triggers, "RESULT_FILE_GRACE_S", 1.0)

    address, other = shared_tls_cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    op = _operator(tmp_path / "state", scheduler_address=address)
    ti = FakeTI(dag_id="auth", task_id="forged")
    key = _key_of(op, ti)
    forged = other.submit(_forged_result, str(marks), key=key, pure=False)
    other.publish_dataset(forged, name=key)
    import time

    deadline = time.monotonic() + 30  # finished before the task looks (waited for, never fetched)
    while forged.status != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert forged.status == "finished"

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})  # adopts what is under its key (a restarted worker must)
    event = _first_event(deferred.value.trigger)
    assert event["status"] == "error" and "finished without writing" in event["message"], event
    assert "its result was not read" in event["message"]
    with pytest.raises(AirflowException, match="finished without writing"):
        op.execute_complete({"ti": ti}, event, **deferred.value.kwargs)
    # Waiting in the worker instead of the triggerer: the same.
    inline = _operator(tmp_path / "state", scheduler_address=address, deferrable=False)
    with pytest.raises(AirflowException, match="finished without writing"):
        inline.execute({"ti": ti})
    del forged
    assert list(marks.iterdir()) == [], "the forged result was unpickled"


def test_the_compose_connection_reaches_its_dask_host_over_tls(monkeypatch, tmp_path):
    """docker/compose.yaml's wiring, natively: a cluster host started as the dask-host service starts
    it (TLS by default) writes its address file; Airflow's preset connection names only that file.
    The nightly DAG's cluster-up task and an imaging task on its address both get there over TLS."""
    import yaml
    from airflow.sdk.exceptions import TaskDeferred

    from pclean_provider.compute.host import start_host, stop_host
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.operators.cluster import ClusterUpOperator
    from pclean_provider.triggers.dask import DaskWorkTrigger
    from tests.conftest import REPO

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    preset = json.loads(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_PCLEAN_DASK_DEFAULT"])
    command = compose["services"]["dask-host"]["command"]
    assert preset["extra"]["address_file"] == command[command.index("--address-file") + 1]

    afile = tmp_path / "cluster" / "address.json"  # the dask-cluster volume, here
    preset["extra"]["address_file"] = str(afile)
    monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_DASK_DEFAULT", json.dumps(preset))
    address = start_host(ClusterSpec(nworkers=1, host_idle_timeout=0, local_directory=str(tmp_path / "dask")),
                         afile)
    try:
        assert address.startswith("tls://")
        up = ClusterUpOperator(task_id="cluster_up", address_file=str(tmp_path / "run" / "cluster.json"))
        assert up.execute({"ti": FakeTI(dag_id="auth", task_id="cluster_up")}) == address  # the connection's cluster
        op = _operator(tmp_path / "state", scheduler_address=address)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute({"ti": FakeTI(dag_id="auth")})
        trigger = deferred.value.trigger
        assert isinstance(trigger, DaskWorkTrigger) and trigger.tls_directory == str(afile) + ".tls"
        event = _first_event(trigger)
        assert event["status"] == "success" and event["result"] == {"value": 42}, event["message"]
    finally:
        stop_host(afile)
