"""keep_cluster=True: repeated pclean() calls reuse one cluster whose workers keep CASA loaded."""

from __future__ import annotations

import pytest

from tests.casa.cube_helpers import assert_cube_matches, tclean_fresh

pytestmark = pytest.mark.casa

SMALL = dict(specmode="cube", imsize=[48, 48], cell="12arcsec", niter=0, parallel=True, nworkers=2)


def test_second_call_reuses_the_kept_cluster_and_equals_tclean(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import simulate_ms
    from pclean_provider.engine.api import pclean
    from pclean_provider.engine.kept_cluster import close_kept_clusters, kept_clusters
    from pclean_provider.errors import PcleanInputError

    ms = simulate_ms(tmp_path / "small.ms", nchan=6, antennas=6, hours=0.25, integration_s=60, seed=3).ms
    close_kept_clusters()
    try:
        # Bad input is refused before a cluster is started (and kept).
        with pytest.raises(PcleanInputError):
            pclean(vis=ms, imagename=str(tmp_path / "bad"), keep_cluster=True, **dict(SMALL, specmode="cubesource"))
        assert kept_clusters() == []

        first = pclean(vis=ms, imagename=str(tmp_path / "one"), keep_cluster=True, **SMALL)
        address = kept_clusters()
        assert len(address) == 1 and first.nsubcubes == 2
        second = pclean(vis=ms, imagename=str(tmp_path / "two"), keep_cluster=True, **SMALL)
        assert kept_clusters() == address, "the second call started another cluster"
        assert second.nworkers == 2

        kwargs = {k: v for k, v in SMALL.items() if k not in ("parallel", "nworkers")}
        tclean_fresh(ms, str(tmp_path / "ref" / "ref"), **kwargs)
        assert_cube_matches(str(tmp_path / "two"), str(tmp_path / "ref" / "ref"), 1e-5,
                            products=(".image", ".residual", ".psf", ".pb", ".sumwt"))
    finally:
        assert close_kept_clusters() <= 1
    assert kept_clusters() == []
