"""Images made on SLURM-backed Dask workers: equal to LocalCluster ones, and complete after a worker
is killed in the middle of a sub-cube.

Tolerance: 1e-5 of the peak per product, beams to 1e-6 relative. Both runs use the same engine
with the same number of workers, so the same partition and the same arithmetic; the only allowed
difference is float summation order (measured: 0, bit-identical). A lost or doubled sub-cube or a
wrong channel is > 1e-2.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest

from pclean_provider.compute import open_cluster
from tests.conftest import casa_available, require
from tests.image_compare import beams, max_abs_diff_over_peak, pixels
from tests.slurm.conftest import PARTITION, live_jobs, slurm_spec

pytestmark = [pytest.mark.slurm, pytest.mark.casa]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TOL = 1e-5
CUBE = dict(specmode="cube", nchan=8, imsize=[64, 64], cell="10arcsec", weighting="briggs", robust=0.5,
            deconvolver="hogbom", niter=100, threshold="20mJy")
MFS = dict(specmode="mfs", imsize=[64, 64], cell="10arcsec", weighting="briggs", robust=0.5,
           deconvolver="hogbom", niter=100, threshold="20mJy")
SLURM_KW = dict(cluster_type="slurm", slurm_queue=PARTITION, slurm_job_mem="2GB", slurm_walltime="00:15:00",
                worker_start_timeout=120)


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")


def _assert_same(ours: str, ref: str, suffixes: list[str]) -> None:
    for suffix in suffixes:
        diff = max_abs_diff_over_peak(ours + suffix, ref + suffix)
        assert diff <= TOL, f"{suffix}: max |diff| / peak = {diff:.3g} > {TOL}"
    b1, b2 = beams(ours + ".image"), beams(ref + ".image")
    assert len(b1) == len(b2) and b1
    assert np.allclose(np.array(b1), np.array(b2), rtol=1e-6, atol=1e-9)


# A hang (a worker stuck on a table lock, a job that never starts) must fail this test, not the session.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["cube", "mfs"])
def test_slurm_workers_make_the_same_image_as_a_local_cluster(kind, small_ms, tmp_path):
    from pclean_provider.engine.api import pclean

    imaging = CUBE if kind == "cube" else MFS
    # in_process_below_s=0: a cube this small would otherwise be imaged in this process, no cluster.
    local = pclean(vis=small_ms.ms, imagename=str(tmp_path / "local"), parallel=True, nworkers=2,
                   cluster_type="local", in_process_below_s=0, **imaging)
    slurm = pclean(vis=small_ms.ms, imagename=str(tmp_path / "slurm"), parallel=True, nworkers=2,
                   slurm_log_directory=str(tmp_path / "jobs"), in_process_below_s=0, **SLURM_KW, **imaging)
    assert local.parallel and slurm.parallel and slurm.nworkers == local.nworkers == 2
    assert slurm.iterations == local.iterations > 0
    _assert_same(str(tmp_path / "slurm"), str(tmp_path / "local"), [".image", ".residual", ".psf", ".model"])
    # The workers really were SLURM jobs: their logs are in the spec's log folder.
    assert list((tmp_path / "jobs").glob("pclean-worker-*.out"))


def _job_id():
    return os.environ["SLURM_JOB_ID"]


def _executing(dask_worker):
    return [str(ts.key) for ts in dask_worker.state.executing]


@pytest.mark.timeout(600)
def test_worker_killed_mid_subcube_is_redone_and_the_cube_is_complete(small_ms, tmp_path, job_name):
    import subprocess

    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    # Four sub-cubes on two workers: the killed worker's sub-cube must be redone on the other one.
    imaging = dict(CUBE, niter=0, cube_chunksize=2, parallel=True, cube_engine="independent")
    with open_cluster(slurm_spec(tmp_path, slurm_job_name=job_name)) as cluster:
        client = cluster.client
        reference = run(PcleanConfig.from_flat(vis=small_ms.ms, imagename=str(tmp_path / "ref"), **imaging),
                        client=client)
        assert reference.nsubcubes == 4
        job_of = client.run(_job_id)

        outcome: dict = {}

        def image():
            try:
                outcome["result"] = run(PcleanConfig.from_flat(vis=small_ms.ms, imagename=str(tmp_path / "hit"),
                                                               **imaging), client=client)
            except BaseException as exc:  # surfaced by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=image)
        thread.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            # Executing, not merely assigned: the kill must land in the middle of a sub-cube.
            for worker, keys in client.run(_executing).items():
                if any(k.startswith("pclean-") for k in keys):
                    victim = worker
                    break
            else:
                time.sleep(0.05)
        assert victim is not None, "no sub-cube was seen running on a worker"
        killed_job = job_of[victim]
        subprocess.run(["scancel", killed_job], check=True)
        thread.join(timeout=240)
        assert not thread.is_alive()
        assert "error" not in outcome, f"run failed after the worker was killed: {outcome.get('error')!r}"
        result = outcome["result"]
        assert cluster.worker_count == 1, "the killed worker should be gone"
        assert killed_job not in [j["id"] for j in live_jobs(job_name)]

    assert result.nsubcubes == 4 and len(result.subcubes) == 4
    ref, hit = str(tmp_path / "ref"), str(tmp_path / "hit")
    assert pixels(hit + ".image").shape == pixels(ref + ".image").shape
    _assert_same(hit, ref, [".image", ".residual", ".psf", ".pb"])
    assert live_jobs(job_name) == []
