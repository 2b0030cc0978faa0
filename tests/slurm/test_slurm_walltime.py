"""Work longer than one SLURM walltime: workers retire before it and new jobs replace them; a
cluster whose jobs never start fails its work with SLURM's reasons instead of waiting for ever."""

from __future__ import annotations

import time

import pytest
from distributed import as_completed
from distributed.client import FutureCancelledError

from pclean_provider.compute import open_cluster
from tests.conftest import casa_available, require
from tests.slurm.conftest import live_jobs, slurm_spec

pytestmark = [pytest.mark.slurm, pytest.mark.casa]


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")


def _slow_step():
    # Stands in for one sub-cube's imaging: a fixed duration of work on whichever worker runs it.
    # Made by a factory: Dask pickles a module-level function by reference, and SLURM workers
    # cannot import this test module.
    def step(i: int, seconds: float) -> tuple[int, str]:
        import os
        import time

        time.sleep(seconds)
        return i * i, os.environ["SLURM_JOB_ID"]

    return step


def test_work_longer_than_the_walltime_completes_on_replacement_jobs(tmp_path, job_name):
    # One minute is the shortest walltime SLURM knows; the workers retire after 42 +- 3 s.
    spec = slurm_spec(tmp_path, slurm_job_name=job_name, slurm_walltime="00:01:00", nworkers=2)
    steps, step_s = 24, 5.0  # 60 s of work per worker-pair: more than one walltime with the job starts
    t0 = time.monotonic()
    with open_cluster(spec) as cluster, cluster.client.as_current():
        futures = [cluster.client.submit(_slow_step(), i, step_s, pure=False) for i in range(steps)]
        results = {}
        for future in as_completed(futures):
            square, job = future.result()
            results[square] = job
            # Nothing stays on a worker about to retire: with two workers retiring within seconds of
            # each other, results held there would be lost and recomputed.
            future.release()
        elapsed = time.monotonic() - t0
    assert sorted(results) == [i * i for i in range(steps)]
    assert elapsed > 60  # longer than one walltime: the first jobs could not have done it all
    assert len(set(results.values())) > 2, results  # steps ran on more jobs than the cluster size
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "slurm-logs").glob("*.err"))
    assert "DUE TO TIME LIMIT" not in logs  # every worker left before SLURM killed its job
    assert live_jobs(job_name) == []


def test_work_without_workers_fails_with_slurms_reasons(tmp_path, job_name):
    # Adaptive from zero: the cluster opens at once; the job it submits for the work stays
    # PENDING (BeginTime) an hour.
    spec = slurm_spec(tmp_path, slurm_job_name=job_name, adaptive=True, adaptive_minimum=0, adaptive_maximum=1,
                      slurm_job_extra_directives=["--begin=now+3600"], slurm_no_workers_timeout=5)
    t0 = time.monotonic()
    with open_cluster(spec) as cluster:
        future = cluster.client.submit(_slow_step(), 3, 0.0, pure=False)
        with pytest.raises(FutureCancelledError) as err:
            future.result(timeout=60)
    text = str(err.value)
    assert "slurm_no_workers_timeout" in text and job_name in text and "PENDING (BeginTime)" in text, text
    assert time.monotonic() - t0 < 45
    assert live_jobs(job_name) == []
