"""Cancelling the Dask work of a run stops its coordinator subprocess (issue 30, item 1).

Dask cannot stop a task that is running; the coordinator task therefore watches whether its work is
still wanted and, once the future is cancelled (an Airflow task marked failed, cleared or killed),
stops the coordinator it started instead of letting it image on for nobody.
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests.casa.continuum_helpers import kwargs_for

pytestmark = pytest.mark.casa


def _coordinators(scheduler_address: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "pclean_provider.engine.coordinator" in cmd and scheduler_address in cmd:
            found.append(proc)
    return found


def test_a_cancelled_run_stops_its_coordinator(two_spw_ms, casa_runtime, tmp_path):
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import ClusterSpec, PcleanConfig
    from pclean_provider.engine.coordinator import coordinator_task

    imagename = str(tmp_path / "cont")
    # Many short major cycles to an unreachable threshold: minutes of work, cancelled early.
    kwargs = {**kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1), "niter": 1000000, "cycleniter": 5,
              "threshold": "1e-9Jy"}
    cfg = PcleanConfig.from_flat(imagename=imagename, parallel=True, **kwargs)
    with open_cluster(ClusterSpec(nworkers=1, local_directory=str(tmp_path / "dask"))) as cluster:
        address = cluster.client.scheduler.address
        future = cluster.client.submit(coordinator_task, cfg.model_dump_json(), address, 1, pure=False)
        deadline = time.monotonic() + 120
        while not (running := _coordinators(address)):
            assert time.monotonic() < deadline and not future.done(), "the coordinator never started"
            time.sleep(0.2)
        # It is imaging: the progress file has its first major cycle.
        while not (os.path.exists(imagename + ".progress.jsonl") and os.path.getsize(imagename + ".progress.jsonl")):
            assert time.monotonic() < deadline and not future.done(), "the coordinator never reached a cycle"
            time.sleep(0.2)
        future.cancel()
        gone, alive = psutil.wait_procs(running, timeout=30)
        assert not alive, "the coordinator of cancelled work is still running"
        # The worker is free again for other work.
        assert cluster.client.submit(lambda: 42, pure=False).result(timeout=60) == 42
    assert not os.path.exists(imagename + ".image"), "a cancelled run publishes nothing"
