"""A batch of sub-cubes (one Airflow task's work) on a real 4-worker Dask cluster.

The batch submits each sub-cube as a Dask task of its own, so the cluster, not an Airflow pool,
decides how many run at once: four workers image four sub-cubes at the same time. The intervals
are the wall clock each worker recorded around its sub-cube.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.casa

NWORKERS = 4


@pytest.fixture(scope="module")
def four_workers(casa_runtime):
    from pclean_provider.compute import open_cluster
    from pclean_provider.config.cluster import ClusterSpec

    with open_cluster(ClusterSpec(nworkers=NWORKERS)) as handle:
        yield handle.client


def test_a_batch_runs_one_subcube_per_worker_at_once(small_ms, four_workers, tmp_path):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.cube.plan import plan_subcubes
    from pclean_provider.engine.cube.subcube_batch import image_subcube_batch

    cfg = PcleanConfig.from_flat(vis=str(small_ms.ms), imagename=str(tmp_path / "cube"), specmode="cube",
                                 nchan=8, imsize=[64, 64], cell="12arcsec", niter=0, cube_chunksize=2,
                                 cube_engine="independent")
    plan = plan_subcubes(cfg, nworkers=NWORKERS)
    specs = [spec.model_dump(mode="json") for spec in plan.specs]
    assert len(specs) == NWORKERS
    # As the operator submits it: one Dask task for the batch, under a work key of try 1.
    out = four_workers.submit(image_subcube_batch, specs, key="pclean-subcubes-test-m0-try1", pure=False).result()

    assert [r["chan_start"] for r in out["results"]] == [0, 2, 4, 6]
    assert all(os.path.isdir(r["product_prefix"] + ".image") for r in out["results"])
    timings = out["timings"]
    assert len({t["worker"] for t in timings}) == NWORKERS, timings
    # Four at once: every sub-cube started before any of them finished.
    latest_start = max(t["started"] for t in timings)
    earliest_end = min(t["finished"] for t in timings)
    assert latest_start < earliest_end, timings

