"""The hook owns the Dask clients of the operators and triggers: a connection from ``connect`` (sync)
or ``async_connect`` (async) does every call on a task's work against a real scheduler, and its
client is gone from the scheduler once the block ends; a scheduler that may not be talked to is
refused before anything connects. No CASA: the work is a small Python function."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)

pytestmark = pytest.mark.airflow


def _double(x):
    return {"value": 2 * x}


def _wait(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.fixture
def plain_cluster(plaintext_dask_allowed):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster


def _clients(scheduler) -> set[str]:
    """The clients connected to ``scheduler``: its pseudo-clients ('fire-and-forget', and the
    'published-<name>' one of each name ever published) stay when every connection is gone."""
    return {name for name in scheduler.clients if name.startswith("Client-")}


def _hook(address):
    from pclean_provider.hooks.dask import PcleanDaskHook

    return PcleanDaskHook(None, scheduler_address=address)


def test_a_sync_connection_does_the_operators_calls_and_closes_its_client(plain_cluster, tmp_path):
    from pclean_provider.compute.dask_work import read_result
    from pclean_provider.compute.lease import LEASE_KEY

    address, scheduler = plain_cluster.scheduler_address, plain_cluster.scheduler
    clients_before = _clients(scheduler)
    key, result_file = "pclean-echo-hook-try2", str(tmp_path / "r.json")
    with _hook(address).connect(address) as dask:
        assert dask.address == address and _clients(scheduler) > clients_before
        assert dask.worker_count() == 1 and dask.cluster_resources()[0] == 1
        dask.renew_lease()
        assert scheduler.get_metadata([LEASE_KEY], default=None) is not None
        assert dask.find_work(key) is None and dask.work_status(key).state == "lost"
        dask.submit_work("pclean-echo-hook-try1", str(tmp_path / "old.json"), _double, (1,))
        future = dask.submit_work(key, result_file, _double, (21,))
        assert dask.find_work(key).key == future.key
        assert dask.cancel_older_tries(key) == ["pclean-echo-hook-try1"]
        assert _wait(lambda: dask.work_status(key).state == "finished")
        assert read_result(result_file) == {"value": 42}
        assert dask.release_work(key) is True and dask.work_status(key).state == "lost"
        assert dask.cancel_work(key, reason="gone already") is False
    assert _wait(lambda: _clients(scheduler) == clients_before), "the hook's client outlived its block"


def test_an_async_connection_does_the_triggers_calls_and_closes_its_client(plaintext_dask_allowed, tmp_path):
    from distributed import LocalCluster

    from pclean_provider.compute.lease import LEASE_KEY

    # No workers: the work stays queued for as long as the trigger's calls look at it.
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address, scheduler = cluster.scheduler_address, cluster.scheduler
        clients_before = _clients(scheduler)
        hook = _hook(address)
        with hook.connect(address) as submitter:
            future = submitter.submit_work("pclean-echo-hook-async-try1", str(tmp_path / "r.json"), _double, (1,))

            async def calls():
                async with hook.async_connect(address) as dask:
                    status = await dask.work_status(future.key)
                    await dask.renew_lease()
                    workers = await dask.worker_count()
                    cancelled = await dask.cancel_work(future.key, reason="the test is done with it")
                    return status.state, workers, cancelled, (await dask.work_status(future.key)).state

            state, workers, cancelled, after = asyncio.run(calls())
            assert state not in ("finished", "error", "cancelled", "lost", "foreign"), state
            assert workers == 0 and cancelled is True and after == "lost"
            assert scheduler.get_metadata([LEASE_KEY], default=None) is not None
            assert _wait(lambda: future.status == "cancelled")
        assert _wait(lambda: _clients(scheduler) == clients_before), "the hook's clients outlived their blocks"


def test_a_scheduler_that_may_not_be_talked_to_is_refused_before_connecting(monkeypatch):
    from distributed import LocalCluster

    from pclean_provider.compute.tls import (
        ALLOW_PLAINTEXT_ENV,
        MissingClusterCertificate,
        PlaintextDaskRefused,
    )
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.hooks.dask import PcleanDaskHook

    monkeypatch.delenv(ALLOW_PLAINTEXT_ENV, raising=False)
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address, clients_before = cluster.scheduler_address, _clients(cluster.scheduler)
        hook = _hook(address)
        with pytest.raises(PlaintextDaskRefused), hook.connect(address):
            pass

        async def connect_async():
            async with hook.async_connect(address):
                pass

        with pytest.raises(PlaintextDaskRefused):
            asyncio.run(connect_async())
        with pytest.raises(PlaintextDaskRefused):
            PcleanDaskHook.check_transport(ClusterSpec(scheduler_address=address))
        assert _clients(cluster.scheduler) == clients_before, "something connected"
    with pytest.raises(MissingClusterCertificate):
        PcleanDaskHook.check_transport(ClusterSpec(scheduler_address="tls://127.0.0.1:1"))
    PcleanDaskHook.check_transport(ClusterSpec(cluster_type="local"))  # nothing to reach yet: no refusal
