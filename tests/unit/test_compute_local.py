"""open_cluster on this machine: LocalCluster workers with the CASA runtime, and the address mode."""

from __future__ import annotations

import socket

import pytest

from pclean_provider.compute import SchedulerUnreachable, WorkerStartTimeout, open_cluster
from pclean_provider.config.cluster import ClusterSpec
from tests.conftest import casa_available, require

pytestmark = pytest.mark.casa


@pytest.fixture(autouse=True)
def _casa():
    # Every worker imports casatools in its set-up plugin.
    require("casatools", casa_available(), "run `make setup`")


def _worker_facts():
    import os
    import sys

    return {"omp": os.environ.get("OMP_NUM_THREADS"), "site": os.environ.get("CASASITECONFIG"),
            "casatools": "casatools" in sys.modules, "cwd_logs": [f for f in os.listdir(".") if f.startswith("casa-")]}


def test_local_cluster_workers_start_with_the_casa_runtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # CASA must not drop casa-*.log here
    spec = ClusterSpec(nworkers=2, local_directory=str(tmp_path / "scratch"))
    with open_cluster(spec) as cluster:
        assert cluster.worker_count == 2
        assert set(cluster.client.nthreads().values()) == {1}
        assert cluster.address.startswith("tcp://")
        assert cluster.dashboard_link and cluster.dashboard_link.startswith("http")
        facts = cluster.client.run(_worker_facts)
        inner = cluster.cluster
    assert len(facts) == 2
    for fact in facts.values():
        assert fact["omp"] == "1" and fact["site"] and fact["site"].endswith(".py")
        assert fact["casatools"], "the set-up plugin did not import casatools before tasks"
        assert fact["cwd_logs"] == []
    assert inner.status.name == "closed"
    assert not list(tmp_path.glob("casa-*.log"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unanswering_scheduler_address_is_named_in_the_error(plaintext_dask_allowed):
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(SchedulerUnreachable) as err:
        with open_cluster(ClusterSpec(scheduler_address=address, worker_start_timeout=3)):
            pass
    assert address in str(err.value) and "scheduler_address" in str(err.value)


def test_address_mode_uses_existing_workers_and_leaves_them_running(plaintext_dask_allowed):
    from distributed import Client, LocalCluster

    # Workers started without our environment: the plugin alone must set CASA up.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as external:
        with open_cluster(ClusterSpec(scheduler_address=external.scheduler_address)) as cluster:
            assert cluster.cluster is None and cluster.worker_count == 1
            (fact,) = cluster.client.run(_worker_facts).values()
            assert fact["casatools"]
        with Client(external.scheduler_address, set_as_default=False) as other:
            assert len(other.nthreads()) == 1  # closing our handle did not stop their cluster


def test_scheduler_without_workers_gives_a_clear_timeout(plaintext_dask_allowed):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        with pytest.raises(WorkerStartTimeout) as err:
            with open_cluster(ClusterSpec(scheduler_address=empty.scheduler_address, worker_start_timeout=2)):
                pass
    text = str(err.value)
    assert "worker_start_timeout=2" in text and empty.scheduler_address in text


def test_local_workers_keep_glibc_malloc_defaults(monkeypatch):
    # Dask's nanny would export MALLOC_TRIM_THRESHOLD_=65536, which costs CASA imaging ~40 %; a plain
    # Dask nanny started earlier in the same process leaves it in os.environ, as set here.
    import os

    require("casatools", casa_available(), "run `make setup`")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with open_cluster(ClusterSpec(nworkers=1, worker_start_timeout=60)) as handle:
        seen = handle.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        # The same cluster: Dask's housekeeping is quiet in the worker, its nanny and the scheduler
        # (worker_setup.QUIET_DASK_CONFIG; measured 11 % of a core idle with Dask's defaults).
        housekeeping = handle.client.run(_housekeeping)
        scheduler = handle.client.run_on_scheduler(_scheduler_housekeeping)
    assert list(seen.values()) == [None]
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == "65536", "the caller's environment is given back"
    assert list(housekeeping.values()) == [{"tick_ms": 500, "profiling": False, "memory_monitor_ms": 500}]
    assert scheduler == {"tick_ms": 500, "system_monitor_ms": 2000}


def _housekeeping(dask_worker) -> dict:
    import dask

    return {"tick_ms": round(dask_worker._tick_interval * 1000),
            "profiling": dask.config.get("distributed.worker.profile.enabled"),
            "memory_monitor_ms": round(dask.utils.parse_timedelta(
                dask.config.get("distributed.worker.memory.monitor-interval")) * 1000)}


def _scheduler_housekeeping(dask_scheduler) -> dict:
    return {"tick_ms": round(dask_scheduler._tick_interval * 1000),
            "system_monitor_ms": round(dask_scheduler.periodic_callbacks["monitor"].callback_time)}
