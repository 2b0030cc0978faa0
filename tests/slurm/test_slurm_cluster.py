"""Dask workers as real SLURM jobs: the environment they get, and the ways they fail to start."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cloudpickle
import pytest

from pclean_provider.compute import ClusterError, SlurmError, WorkerStartTimeout, open_cluster
from tests.conftest import casa_available, require
from tests.slurm.conftest import live_jobs, slurm_spec

pytestmark = [pytest.mark.slurm, pytest.mark.casa]

# SLURM workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")  # every worker imports it at start


def _job_facts():
    import os
    import sys

    return {"job": os.environ.get("SLURM_JOB_NAME"), "job_id": os.environ.get("SLURM_JOB_ID"),
            "omp": os.environ.get("OMP_NUM_THREADS"), "casatools": "casatools" in sys.modules}


def test_workers_are_named_slurm_jobs_with_the_casa_runtime(tmp_path, job_name):
    spec = slurm_spec(tmp_path, slurm_job_name=job_name)
    with open_cluster(spec) as cluster:
        assert cluster.worker_count == 2
        assert cluster.job_name == job_name
        facts = list(cluster.client.run(_job_facts).values())
        jobs = live_jobs(job_name)
        assert [j["state"] for j in jobs] == ["RUNNING", "RUNNING"]
        assert sorted(f["job_id"] for f in facts) == sorted(j["id"] for j in jobs)
        assert cluster.client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
        # The unauthenticated dashboard listens on loopback only, not on the network.
        port = cluster.client.scheduler_info()["services"]["dashboard"]
        outward = cluster.client.scheduler.address.split("://")[1].rsplit(":", 1)[0]
        assert _listens("127.0.0.1", port)
        assert outward != "127.0.0.1" and not _listens(outward, port), (outward, port)
    for fact in facts:
        assert fact["job"] == job_name and fact["omp"] == "1" and fact["casatools"]
    # Each worker's CASA log lands next to the job logs, not in a working directory.
    assert len(list((tmp_path / "slurm-logs" / "casa").glob("*/casa-*.log"))) == 2
    assert live_jobs(job_name) == []


def _listens(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


def test_default_job_name_is_per_cluster(tmp_path):
    with open_cluster(slurm_spec(tmp_path, nworkers=1)) as cluster:
        assert cluster.job_name == f"pclean-worker-{cluster.cluster_id}"
        assert len(live_jobs(cluster.job_name)) == 1
        name = cluster.job_name
    assert live_jobs(name) == []


def test_bad_partition_is_refused_before_any_job(tmp_path, job_name):
    with pytest.raises(SlurmError) as err:
        with open_cluster(slurm_spec(tmp_path, slurm_queue="no-such-queue", slurm_job_name=job_name)):
            pass
    assert "slurm_queue='no-such-queue'" in str(err.value) and "debug" in str(err.value)
    assert live_jobs(job_name) == []


def test_request_no_node_can_meet_is_refused_in_slurms_words(tmp_path, job_name):
    with pytest.raises(SlurmError) as err:
        with open_cluster(slurm_spec(tmp_path, slurm_job_mem="100000GB", slurm_job_name=job_name)):
            pass
    assert "Requested node configuration is not available" in str(err.value)
    assert "slurm_job_mem" in str(err.value)
    assert live_jobs(job_name) == []


def test_jobs_that_stay_pending_time_out_and_are_cancelled(tmp_path, job_name):
    # --begin an hour from now: accepted by SLURM, but the jobs stay PENDING (BeginTime).
    spec = slurm_spec(tmp_path, slurm_job_name=job_name, worker_start_timeout=6,
                      slurm_job_extra_directives=["--begin=now+3600"])
    t0 = time.monotonic()
    with pytest.raises(WorkerStartTimeout) as err:
        with open_cluster(spec):
            pass
    elapsed = time.monotonic() - t0
    text = str(err.value)
    assert "worker_start_timeout=6" in text and job_name in text and "PENDING (BeginTime)" in text
    assert elapsed >= 6  # it waited out its worker_start_timeout (how long beyond is the bench's business)
    assert live_jobs(job_name) == []


def test_worker_jobs_that_die_at_once_are_reported_with_their_log(tmp_path, job_name):
    spec = slurm_spec(tmp_path, slurm_job_name=job_name, slurm_python="/nonexistent/bin/python",
                      worker_start_timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as err:
        with open_cluster(spec):
            pass
    assert "ended before any Dask worker joined" in str(err.value)
    assert "/nonexistent/bin/python" in str(err.value)  # the tail of the job's error log
    assert time.monotonic() - t0 < 45  # well before worker_start_timeout
    assert live_jobs(job_name) == []


def test_adaptive_cluster_grows_from_zero_jobs(tmp_path, job_name):
    spec = slurm_spec(tmp_path, slurm_job_name=job_name, adaptive=True, adaptive_minimum=0, adaptive_maximum=1)
    with open_cluster(spec) as cluster:
        assert cluster.worker_count == 0 and live_jobs(job_name) == []
        fut = cluster.client.submit(lambda: os.environ.get("SLURM_JOB_NAME"), pure=False)
        assert fut.result(timeout=90) == job_name
        assert cluster.worker_count == 1
    assert live_jobs(job_name) == []


def test_squeue_sees_no_job_named_after_a_finished_cluster(tmp_path, job_name):
    with open_cluster(slurm_spec(tmp_path, nworkers=1, slurm_job_name=job_name)):
        pass
    out = subprocess.run(["squeue", "-h", "--name", job_name, "-t", "PD,R,CG"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == ""
