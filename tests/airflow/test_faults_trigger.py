"""DaskWorkTrigger never waits for ever: a scheduler without workers or a scheduler that is gone ends
the wait with a message saying what happened and how to recover. Real Dask schedulers, no CASA."""

from __future__ import annotations

import asyncio

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("plaintext_dask_allowed")]


def _double(x):
    return {"value": 2 * x}


async def _first_event(trigger, timeout=60):
    async def first():
        async for event in trigger.run():
            return event
    return await asyncio.wait_for(first(), timeout)


def _trigger(address, key, result_file, **kw):
    from pclean_provider.triggers.dask import DaskWorkTrigger

    return DaskWorkTrigger(scheduler_address=address, key=key, result_file=str(result_file), poll_interval=0.2,
                           **kw)


def test_no_workers_for_longer_than_the_grace_fails_the_wait(tmp_path):
    from distributed import Client, LocalCluster

    from pclean_provider.compute.dask_work import run_recorded
    from pclean_provider.compute.lease import LEASE_KEY

    # A scheduler whose workers are all gone (a SLURM walltime kill looks like this to the trigger).
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        key = "pclean-faults-noworkers-1"
        future = client.submit(run_recorded, str(tmp_path / "r.json"), _double, 2, key=key, pure=False)
        client.publish_dataset(future, name=key)
        trigger = _trigger(cluster.scheduler_address, key, tmp_path / "r.json", no_workers_timeout=1.0)
        # It survives the round trip a triggerer restart makes.
        rebuilt = type(trigger)(**trigger.serialize()[1])
        # A guard against waiting for ever, not a measurement: the trigger gives up after 1 s.
        event = asyncio.run(asyncio.wait_for(_first_event(rebuilt), 120)).payload
        assert event["status"] == "error"
        assert "no worker for more than 1 s" in event["message"]
        assert "cluster_up" in event["message"] and "no_workers_timeout" in event["message"]
        # Each poll renewed the cluster host's lease.
        assert client.get_metadata(LEASE_KEY, default=None) is not None


def test_scheduler_gone_fails_the_wait_within_its_timeout(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
    event = asyncio.run(asyncio.wait_for(_first_event(_trigger(address, "pclean-faults-gone-1", tmp_path / "r.json",
                                                               unreachable_timeout=2.0)), 120)).payload
    assert event["status"] == "error"
    assert f"{address} stayed unreachable for 2 s" in event["message"]
    assert "restarts the cluster host" in event["message"] and "clear the cluster_up task" in event["message"]


def test_a_tls_cluster_without_its_certificate_is_refused_before_connecting():
    from pclean_provider.hooks.dask import PcleanDaskHook

    hook = PcleanDaskHook(None, scheduler_address="tls://127.0.0.1:1", cluster_overrides={"tls": True})
    with pytest.raises(ValueError, match=r"uses TLS but no certificate folder is known; pass address_file="):
        hook.get_cluster_spec()
