"""The session-edge cases on four workers: sessions of different sizes (4/3/3/3, 3/3/2/2 channels),
so three session boundaries instead of one, each vs serial casatasks.tclean.

The cases are those that once failed at a session's edge on two workers (test_cube_edges.py,
test_cube_sessions.py): `specmode='cubedata'` with a channel start, an spw selection with a gap and
more channels than were selected, two spws of different channel widths, a cleaned cubedata cube
(tclean's iterdone and stop code). Tolerances as in test_cube_sessions.py.

Last, on the same four workers (after the parity cases, whose references are those of fresh
processes): a batch of sub-cubes, one Airflow task's work in the fan-out engine, submits each
sub-cube as a Dask task of its own, so the cluster, not an Airflow pool, decides how many run at
once; four workers image four sub-cubes at the same time (the intervals are the wall clock each
worker recorded around its sub-cube).
"""

from __future__ import annotations

import functools
import logging
import os

import pytest

from tests.casa.cube_helpers import assert_cube_matches, pclean_and_tclean

pytestmark = pytest.mark.casa

IMAGING = dict(imsize=[64, 64], cell="12arcsec", weighting="briggs", robust=0.5, deconvolver="hogbom",
               gridder="standard")
NWORKERS = 4


@pytest.fixture(scope="module")
def client4(casa_runtime):
    """Four workers of the module's own (on two cores: they take turns; only the split matters)."""
    from pclean_provider.compute import open_cluster
    from pclean_provider.config.cluster import ClusterSpec

    with open_cluster(ClusterSpec(nworkers=NWORKERS)) as handle:
        handle.client.wait_for_workers(NWORKERS, timeout=120)
        yield handle.client


_pclean_and_tclean = functools.partial(pclean_and_tclean, imaging=dict(IMAGING, specmode="cube"))


DIRTY = {
    # 13 channels: sessions of 4, 3, 3 and 3.
    "cubedata-channel-start": dict(specmode="cubedata", spw="0:2~14", start=2, nchan=13),
    # 10 channels (3, 3, 2, 2), 7 and 8 blank: a boundary falls inside the gap.
    "selection-gap-more-channels-than-selected": dict(spw="0:2~6;9~11", start=2, nchan=10),
    # Boundaries on both sides of the two spws' meeting point.
    "spws-of-different-widths": dict(vis="spw_widths_ms", width="1MHz"),
}


@pytest.mark.parametrize("case", sorted(DIRTY))
def test_dirty_cube_on_four_sessions_equals_tclean(request, client4, tmp_path, case):
    kwargs = dict(DIRTY[case])
    ms = request.getfixturevalue(kwargs.pop("vis", "line_ms"))
    result, ref, got, want = _pclean_and_tclean(ms, tmp_path, client4, niter=0, **kwargs)
    assert result.nsubcubes == NWORKERS
    assert_cube_matches(got, want, 1e-5)


def test_cleaned_cubedata_on_four_sessions_equals_tclean(line_ms, client4, tmp_path, caplog):
    """Also relayout_ms='auto' (the default): a cleaned cube in four sessions reads re-laid copies."""
    caplog.set_level(logging.INFO, logger="pclean_provider.engine.cube.ms_copies")
    result, ref, got, want = _pclean_and_tclean(line_ms, tmp_path, client4, specmode="cubedata", spw="0:2~14",
                                                start=2, nchan=13, niter=100000, threshold="0.03Jy")
    assert result.nsubcubes == NWORKERS and result.iterations > 0
    assert any("the sessions read the copy" in r.getMessage() for r in caplog.records), "no relayout copy was made"
    assert (result.iterations, result.cube_loop["stopcode"]) == (ref["iterdone"], ref["stopcode"]), ref
    assert_cube_matches(got, want, 1e-4, products=(".image", ".residual", ".model", ".psf", ".pb"))


def test_a_batch_runs_one_subcube_per_worker_at_once(small_ms, client4, tmp_path):
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
    out = client4.submit(image_subcube_batch, specs, key="pclean-subcubes-test-m0-try1", pure=False).result()

    assert [r["chan_start"] for r in out["results"]] == [0, 2, 4, 6]
    assert all(os.path.isdir(r["product_prefix"] + ".image") for r in out["results"])
    timings = out["timings"]
    assert len({t["worker"] for t in timings}) == NWORKERS, timings
    # Four at once: every sub-cube started before any of them finished.
    latest_start = max(t["started"] for t in timings)
    earliest_end = min(t["finished"] for t in timings)
    assert latest_start < earliest_end, timings
