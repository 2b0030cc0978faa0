"""DaskWorkTrigger against a real local Dask cluster (no CASA: the work is small Python functions).

What must hold: the trigger finds work by its published key, yields the worker's result or its
error message, a trigger rebuilt from its serialized form (a triggerer restart) watches the same
work without running it again, and on_kill (a user's kill or clear) cancels the Dask work.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)

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


def _publish(client, key, result_file, func, *args):
    from pclean_provider.compute.dask_work import run_recorded

    future = client.submit(run_recorded, result_file, func, *args, key=key, pure=False)
    client.publish_dataset(future, name=key)
    return future


async def _first_event(trigger, timeout=60):
    async def first():
        async for event in trigger.run():
            return event
    return await asyncio.wait_for(first(), timeout)


def _trigger(address, key, result_file, **kw):
    from pclean_provider.triggers.dask import DaskWorkTrigger

    return DaskWorkTrigger(scheduler_address=address, key=key, result_file=str(result_file), poll_interval=0.3,
                           **kw)


def test_result_survives_a_triggerer_restart_without_running_twice(dask_cluster, tmp_path):
    address, client = dask_cluster
    counter = tmp_path / "runs.txt"

    def slow_work(path, seconds):
        import time as _time

        with open(path, "a") as handle:
            handle.write("run\n")
        _time.sleep(seconds)
        return {"answer": 42}

    key = "pclean-test-restart-try1"
    result_file = tmp_path / "state" / f"{key}.json"
    first = _trigger(address, key, result_file)  # imports Airflow before the clock starts
    _publish(client, key, str(result_file), slow_work, str(counter), 6.0)

    async def run_then_stop():
        task = asyncio.ensure_future(_first_event(first))
        await asyncio.sleep(1.0)
        # What a triggerer shutdown does: a bare cancel, no on_kill.
        task.cancel()
        try:
            outcome = await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        assert outcome == "cancelled"

    asyncio.run(run_then_stop())
    assert client.get_dataset(key).status in ("pending", "finished"), "a restart must not cancel the work"

    classpath, kwargs = first.serialize()
    assert classpath == "pclean_provider.triggers.dask.DaskWorkTrigger"
    from pclean_provider.triggers.dask import DaskWorkTrigger

    event = asyncio.run(_first_event(DaskWorkTrigger(**kwargs)))
    assert event.payload["status"] == "success"
    assert event.payload["result"] == {"answer": 42}
    assert counter.read_text().count("run") == 1
    assert result_file.exists()


def test_worker_error_reaches_the_event(dask_cluster, tmp_path):
    address, client = dask_cluster

    def failing_work():
        raise ValueError("spw 7 does not exist in the MeasurementSet")

    key = "pclean-test-error-try1"
    _publish(client, key, str(tmp_path / "r.json"), failing_work)
    event = asyncio.run(_first_event(_trigger(address, key, tmp_path / "r.json", label="sub-cube ch 0-3")))
    assert event.payload["status"] == "error"
    assert "ValueError" in event.payload["message"]
    assert "spw 7 does not exist in the MeasurementSet" in event.payload["message"]
    assert "failing_work" in event.payload["message"], "the worker's traceback names where it failed"
    assert "sub-cube ch 0-3" in event.payload["message"]
    assert event.payload["input_error"] is False, "a plain ValueError may be a bug: the task may retry"
    client.unpublish_dataset(key)


def test_input_error_on_the_worker_fails_the_task_without_retry(dask_cluster, tmp_path):
    """The scheduler judges the worker's error class; the triggerer only reads the verdict."""
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.operators.base import PcleanDaskOperator

    address, client = dask_cluster

    def rejecting_work():
        from pclean_provider.casa.ms_selection import SelectionError

        raise SelectionError("spw='9': matches nothing in the MeasurementSet")

    key = "pclean-test-input-error-try1"
    _publish(client, key, str(tmp_path / "r.json"), rejecting_work)
    event = asyncio.run(_first_event(_trigger(address, key, tmp_path / "r.json")))
    assert event.payload["status"] == "error" and event.payload["input_error"] is True
    assert "spw='9': matches nothing" in event.payload["message"]
    client.unpublish_dataset(key)
    op = PcleanDaskOperator(task_id="reject", scheduler_address=address, state_dir=str(tmp_path))
    with pytest.raises(AirflowFailException, match="matches nothing"):
        op.execute_complete({}, event.payload)


def test_unknown_key_without_result_is_reported_lost(dask_cluster, tmp_path):
    address, _ = dask_cluster
    event = asyncio.run(_first_event(_trigger(address, "pclean-never-submitted-try1", tmp_path / "none.json")))
    assert event.payload["status"] == "error"
    assert "does not know" in event.payload["message"]
    assert "retry the task" in event.payload["message"]


def test_result_file_alone_is_enough(dask_cluster, tmp_path):
    """A finished result survives the scheduler forgetting the key (e.g. a scheduler restart)."""
    from pclean_provider.compute.dask_work import write_json_atomic

    address, _ = dask_cluster
    result_file = tmp_path / "done.json"
    write_json_atomic(str(result_file), {"index": 3})
    event = asyncio.run(_first_event(_trigger(address, "pclean-forgotten-try1", result_file)))
    assert event.payload == {"status": "success", "key": "pclean-forgotten-try1", "message": None,
                             "label": "pclean-forgotten-try1", "result": {"index": 3}}


def test_on_kill_cancels_the_dask_work(dask_cluster, tmp_path):
    address, client = dask_cluster

    def blocker(seconds):
        import time as _time

        _time.sleep(seconds)
        return {}

    # The only worker is busy, so the watched work waits in the scheduler's queue.
    busy = client.submit(blocker, 20.0, key="pclean-test-blocker", pure=False)
    key = "pclean-test-kill-try1"
    future = _publish(client, key, str(tmp_path / "k.json"), blocker, 0.1)
    trigger = _trigger(address, key, tmp_path / "k.json")

    async def run_then_kill():
        task = asyncio.ensure_future(_first_event(trigger))
        await asyncio.sleep(1.0)
        task.cancel()
        await trigger.on_kill()

    asyncio.run(run_then_kill())
    deadline = time.monotonic() + 10
    while future.status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.status == "cancelled"
    assert key not in client.list_datasets()
    assert not os.path.exists(tmp_path / "k.json")
    client.cancel([busy], force=True)


def test_progress_lines_are_logged(dask_cluster, tmp_path):
    import logging

    from pclean_provider.compute.dask_work import write_json_atomic
    from pclean_provider.engine.continuum.models import CycleReport
    from pclean_provider.engine.progress import ProgressFile

    address, _ = dask_cluster
    progress = tmp_path / "p.jsonl"
    writer = ProgressFile(str(progress), "r", "continuum")
    for c in range(3):
        report = CycleReport(run_id="r", cycle=c, iterations=10 * c, peak_residual=0.5 / (c + 1),
                             model_flux=0.1 * c, elapsed_s=float(c))
        writer.cycle(report.line(), **report.model_dump(mode="json", exclude={"run_id"}))
    # The last record is still being written (no newline): it must not be logged half.
    with open(progress, "a", encoding="utf-8") as fh:
        fh.write('{"run_id": "r", "cyc')
    result_file = tmp_path / "c.json"
    write_json_atomic(str(result_file), {"ok": True})
    trigger = _trigger(address, "pclean-progress-try1", result_file, progress_file=str(progress),
                       label="continuum")

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("pclean-test-trigger")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    trigger._log = logger
    asyncio.run(_first_event(trigger))
    lines = [m for m in seen if "major cycle" in m]
    assert len(lines) == 3, seen
    assert lines[-1].startswith("continuum: continuum major cycle 2: 20 iterations")


def test_a_result_written_between_polls_wakes_the_trigger_early(tmp_path):
    """The wait between scheduler polls ends when the result file appears, not at the interval's end."""
    from pclean_provider.triggers.dask import DaskWorkTrigger

    result_file = tmp_path / "result.json"
    trigger = DaskWorkTrigger(scheduler_address="tcp://127.0.0.1:1", key="k", result_file=str(result_file),
                              poll_interval=60.0)

    async def write_soon() -> None:
        await asyncio.sleep(0.2)
        result_file.write_text("{}")

    async def both() -> float:
        start = time.monotonic()
        await asyncio.gather(trigger._sleep_until_result(60.0), write_soon())
        return time.monotonic() - start

    assert asyncio.run(both()) < 30.0  # far below the 60 s interval: woken by the file
