"""The operators' submit / adopt / resubmit / fail logic against a real local Dask cluster (no CASA).

A task try's work has one deterministic key: the same try never submits twice (a restarted worker
adopts the running work), a new try cancels the older try's work and submits its own, bad input
fails the task for good (no retries), and finished work is released from the scheduler.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)
from tests.airflow.fake_ti import FakeTI

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("plaintext_dask_allowed")]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                           local_directory=str(tmp_path_factory.mktemp("dask")))
    client = Client(cluster, set_as_default=False)
    yield cluster.scheduler_address, client
    client.close()
    cluster.close()


# The echo task is a mapped one (map index 2), as sub-cube batches are.
MappedTI = partial(FakeTI, map_index=2)


def _echo_operator(address, state_dir, func, args, **kw):
    from pclean_provider.operators.base import PcleanDaskOperator

    class EchoOperator(PcleanDaskOperator):
        work_kind = "echo"

        def execute(self, context):
            return self.run_on_cluster(context, func, lambda dask: args, str(state_dir))

    # Deferrable unless a test says otherwise: most of them show the deferred path.
    kw.setdefault("deferrable", True)
    return EchoOperator(task_id="echo", scheduler_address=address, poll_interval=0.3, **kw)


def _defer(op, ti):
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    return deferred.value


def _wait_work(address, key, result_file):
    from pclean_provider.triggers.dask import DaskWorkTrigger

    async def first():
        async for event in DaskWorkTrigger(address, key, result_file, poll_interval=0.3).run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), 60))


def slow_count(path, seconds):
    import time as _time

    with open(path, "a") as handle:
        handle.write("run\n")
    _time.sleep(seconds)
    return {"runs_file": path}


def test_same_try_adopts_new_try_replaces(dask_cluster, tmp_path):
    address, client = dask_cluster
    counter = tmp_path / "runs.txt"
    op = _echo_operator(address, tmp_path / "state", slow_count, (str(counter), 4.0))

    first = _defer(op, MappedTI(try_number=1))
    key1 = first.trigger.key
    assert key1 == "pclean-echo-d-manual__2026_01_01T00_00_00_00_00+1e8dc70c2b69-echo-m2-try1"
    assert first.method_name == "execute_complete" and first.kwargs == {"scheduler_address": address}
    assert key1 in client.list_datasets()

    again = _defer(op, MappedTI(try_number=1))  # an Airflow worker restarted within the same try
    assert again.trigger.key == key1

    second = _defer(op, MappedTI(try_number=2))  # a retry or a clear
    key2 = second.trigger.key
    assert key2.endswith("-try2")
    assert key1 not in client.list_datasets(), "the older try's work is cancelled"
    payload = _wait_work(address, key2, second.trigger.result_file)
    assert payload["status"] == "success"
    # try 1 was submitted once (adopted on the second call) and try 2 once; try 1 may have started
    # before it was cancelled, so at most two runs, never three.
    assert counter.read_text().count("run") <= 2

    result = op.execute_complete({"ti": MappedTI(try_number=2)}, payload, scheduler_address=address)
    assert result == {"runs_file": str(counter)}
    assert key2 not in client.list_datasets(), "finished work is released"

    # Asking again for a finished try costs nothing: the result file answers without a cluster.
    offline = _echo_operator("tcp://127.0.0.1:1", tmp_path / "state", slow_count, (str(counter), 4.0))
    assert offline.execute({"ti": MappedTI(try_number=2)}) == {"runs_file": str(counter)}


def test_failures_name_the_reason_and_bad_input_is_not_retried(dask_cluster, tmp_path):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    address, _ = dask_cluster
    op = _echo_operator(address, tmp_path, slow_count, ())
    with pytest.raises(AirflowFailException, match="spw 9"):
        op.execute_complete({"ti": MappedTI()}, {"status": "error", "key": "k", "input_error": True,
                                               "message": "PreflightError('spw 9 does not exist')"})
    with pytest.raises(AirflowException, match="worker lost") as transient:
        op.execute_complete({"ti": MappedTI()}, {"status": "error", "key": "k", "input_error": False,
                                               "message": "worker lost"})
    assert not isinstance(transient.value, AirflowFailException), "a lost worker may be retried"


def test_deferrable_needs_a_cluster_that_outlives_the_task(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    op = _echo_operator(None, tmp_path, slow_count, (), pclean_conn_id="pclean_dask_default")
    with pytest.raises(AirflowException, match="deferrable=True needs a Dask cluster that outlives"):
        op.execute({"ti": MappedTI()})


def test_inline_wait_when_not_deferrable(dask_cluster, tmp_path):
    address, client = dask_cluster
    op = _echo_operator(address, tmp_path / "s", slow_count, (str(tmp_path / "n.txt"), 0.1), deferrable=False)
    assert op.execute({"ti": MappedTI(task_id="inline")}) == {"runs_file": str(tmp_path / "n.txt")}
    assert not [k for k in client.list_datasets() if "inline" in str(k)], "released after the inline wait"


def test_partition_validates_before_submitting(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.operators.continuum import ContinuumImagingOperator
    from pclean_provider.operators.cube import CubePartitionOperator

    ms = tmp_path / "x.ms"
    ms.mkdir()
    monkeypatch.chdir(tmp_path)
    # No cluster is reachable at this address: the errors must come before any connection.
    nowhere = "tcp://127.0.0.1:1"
    with pytest.raises(AirflowFailException, match="vis: MeasurementSet 'missing.ms' does not exist"):
        CubePartitionOperator(task_id="p", scheduler_address=nowhere, overrides={
            "vis": "missing.ms", "imagename": str(tmp_path / "c"), "specmode": "cube"}).execute({"ti": MappedTI()})
    with pytest.raises(AirflowFailException, match="specmode='mfs' is not a cube"):
        CubePartitionOperator(task_id="p", scheduler_address=nowhere, overrides={
            "vis": str(ms), "imagename": str(tmp_path / "c"), "specmode": "mfs"}).execute({"ti": MappedTI()})
    with pytest.raises(AirflowFailException, match="niterr"):
        CubePartitionOperator(task_id="p", scheduler_address=nowhere, overrides={
            "vis": str(ms), "imagename": str(tmp_path / "c"), "niterr": 5}).execute({"ti": MappedTI()})
    with pytest.raises(AirflowFailException, match="niter=50: the fan-out .* CubeImagingOperator"):
        CubePartitionOperator(task_id="p", scheduler_address=nowhere, overrides={
            "vis": str(ms), "imagename": str(tmp_path / "c"), "specmode": "cube", "niter": 50}).execute({"ti": MappedTI()})
    with pytest.raises(AirflowFailException, match="is a cube"):
        ContinuumImagingOperator(task_id="c", scheduler_address=nowhere, overrides={
            "vis": str(ms), "imagename": str(tmp_path / "c"), "specmode": "cube"}).execute({"ti": MappedTI()})


def test_continuum_task_returns_what_pclean_returns(tmp_path):
    """The continuum task's XCom is a PcleanResult, as the cube task's and pclean()'s are; an instance
    resumed after deferring (no config kept from execute) builds its config again."""
    from pclean_provider.engine.continuum.models import ContinuumResult
    from pclean_provider.engine.models import PcleanResult
    from pclean_provider.operators.continuum import ContinuumImagingOperator

    ms = tmp_path / "x.ms"
    ms.mkdir()
    imagename = str(tmp_path / "c")
    run = ContinuumResult(run_id="r1", imagename=imagename, nparts=2, iterations=7, major_cycles=2,
                          stop_reason="niter", products=[imagename + ".image"], summary={"iterdone": 7})
    op = ContinuumImagingOperator(task_id="c", scheduler_address="tcp://127.0.0.1:1", overrides={
        "vis": str(ms), "imagename": imagename, "specmode": "mfs", "niter": 7})
    out = PcleanResult.model_validate(op.on_result({}, run.model_dump(mode="json")))
    assert out.products == {".image": imagename + ".image"} and out.iterations == 7 and out.nworkers == 2
    assert out.specmode == "mfs" and out["iterdone"] == 7
    assert ContinuumResult.model_validate(out.continuum) == run


def test_subcube_label_and_concat_checks(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.operators.cube import CubeConcatOperator, SubcubeImagingOperator, subcube_label

    spec = {"index": 1, "chan_start": 4, "chan_stop": 8, "frequencies_hz": [1.404e9, 1.405e9, 1.406e9, 1.407e9],
            "imagename": "/x/cube"}
    assert subcube_label(spec) == "ch 4-7 1.404000-1.407000 GHz"
    op = SubcubeImagingOperator(task_id="s", spec=spec)
    assert op.map_index_template == "{{ task.subcube_label }}"
    assert op.subcube_label == "ch 4-7 1.404000-1.407000 GHz"
    assert "spec" not in op.template_fields

    plan = {"imagename": "/x/cube", "specs": [{"index": 0}, {"index": 1}]}
    concat = CubeConcatOperator(task_id="c", scheduler_address="tcp://127.0.0.1:1", plan=plan,
                                results=[{"index": 0, "chan_start": 0}])
    with pytest.raises(AirflowFailException, match=r"sub-cubes \[1\] are missing"):
        concat.execute({"ti": MappedTI()})


def test_heavy_tasks_take_a_pool_and_priority_like_any_operator():
    from airflow.sdk import DAG

    from pclean_provider.operators.base import HEAVY_POOL
    from pclean_provider.operators.cube import SubcubeImagingOperator

    assert HEAVY_POOL == "pclean_heavy"
    with DAG("pool_check", schedule=None):
        mapped = SubcubeImagingOperator.partial(task_id="s", pool=HEAVY_POOL, pool_slots=1, priority_weight=5,
                                                scheduler_address="tcp://x:1").expand(spec=[{"index": 0}])
    assert mapped.partial_kwargs["pool"] == HEAVY_POOL
    assert mapped.partial_kwargs["priority_weight"] == 5
    assert mapped.partial_kwargs["map_index_template"] == "{{ task.subcube_label }}"


def test_cluster_down_is_idempotent(tmp_path):
    from pclean_provider.operators.cluster import ClusterDownOperator

    down = ClusterDownOperator(task_id="down", address_file=str(tmp_path / "never-started.address"))
    assert down.trigger_rule == "all_done"
    assert down.execute({"ti": MappedTI()}) is False
    assert down.execute({"ti": MappedTI()}) is False
