"""keep_cluster=True: repeated pclean() calls reuse one cluster whose workers keep CASA loaded; and a
parallel cube too small for a cluster is imaged in this process, before any cluster starts."""

from __future__ import annotations

import pytest

from tests.casa.cube_helpers import assert_cube_matches, tclean_fresh
from tests.image_compare import pixels

pytestmark = pytest.mark.casa

SMALL = dict(specmode="cube", imsize=[48, 48], cell="12arcsec", niter=0, parallel=True, nworkers=2)
# The cluster tests ask for it: a cube this small would otherwise be imaged in this process.
ON_CLUSTER = dict(SMALL, in_process_below_s=0)
PRODUCTS = (".image", ".residual", ".psf", ".pb", ".sumwt")


@pytest.fixture(scope="module")
def small_ms(casa_runtime, tmp_path_factory):
    from pclean_provider.casa.simulator import simulate_ms

    return simulate_ms(tmp_path_factory.mktemp("kept") / "small.ms", nchan=6, antennas=6, hours=0.25,
                       integration_s=60, seed=3).ms


def _serial(ms, tmp_path, **imaging) -> tuple[str, dict]:
    """Serial tclean in a fresh process: its image name and its summary."""
    kwargs = {k: v for k, v in imaging.items() if k not in ("parallel", "nworkers", "in_process_below_s")}
    ref = str(tmp_path / "ref" / "ref")
    return ref, tclean_fresh(ms, ref, **kwargs)


def test_second_call_reuses_the_kept_cluster_and_equals_tclean(small_ms, tmp_path):
    from pclean_provider.engine.api import pclean
    from pclean_provider.engine.kept_cluster import close_kept_clusters, kept_clusters
    from pclean_provider.errors import PcleanInputError

    ms = small_ms
    close_kept_clusters()
    try:
        # Bad input is refused before a cluster is started (and kept).
        with pytest.raises(PcleanInputError):
            pclean(vis=ms, imagename=str(tmp_path / "bad"), keep_cluster=True, **dict(ON_CLUSTER, specmode="cubesource"))
        assert kept_clusters() == []

        first = pclean(vis=ms, imagename=str(tmp_path / "one"), keep_cluster=True, **ON_CLUSTER)
        address = kept_clusters()
        assert len(address) == 1 and first.nsubcubes == 2
        assert first.parallel and first.in_process_reason is None
        second = pclean(vis=ms, imagename=str(tmp_path / "two"), keep_cluster=True, **ON_CLUSTER)
        assert kept_clusters() == address, "the second call started another cluster"
        assert second.nworkers == 2 and second.parallel

        # With the default threshold even the live kept cluster costs more than this cube can gain
        # (its sessions' set-up): imaged here, the kept cluster left as it was.
        third = pclean(vis=ms, imagename=str(tmp_path / "three"), keep_cluster=True, **SMALL)
        assert not third.parallel and third.nworkers == 1 and "kept cluster" in third.in_process_reason
        assert kept_clusters() == address

        ref, _ = _serial(ms, tmp_path, **SMALL)
        assert_cube_matches(str(tmp_path / "two"), ref, 1e-5, products=PRODUCTS)
        assert_cube_matches(str(tmp_path / "three"), ref, 1e-5, products=PRODUCTS)
    finally:
        assert close_kept_clusters() <= 1
    assert kept_clusters() == []


@pytest.mark.parametrize("keep", [False, True], ids=["new-cluster", "keep_cluster"])
def test_a_tiny_parallel_cube_is_imaged_here_without_a_cluster_and_equals_tclean(small_ms, tmp_path, monkeypatch,
                                                                                 caplog, keep):
    import logging

    from pclean_provider.compute import cluster
    from pclean_provider.engine.api import pclean
    from pclean_provider.engine.kept_cluster import close_kept_clusters, kept_clusters

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for a cube that is imaged in this process")

    close_kept_clusters()
    monkeypatch.setattr(cluster, "open_cluster", no_cluster)
    monkeypatch.setattr(cluster, "start_cluster", no_cluster)
    imaging = dict(SMALL, niter=30, threshold="0.01Jy")
    with caplog.at_level(logging.INFO, logger="pclean_provider"):
        result = pclean(vis=small_ms, imagename=str(tmp_path / "here"), keep_cluster=keep, **imaging)
    assert kept_clusters() == []
    assert not result.parallel and result.nworkers == 1 and result.nsubcubes == 1
    reason = result.in_process_reason
    assert reason and "serial tclean is estimated at" in reason and "in_process_below_s=0" in reason
    assert [r.getMessage() for r in caplog.records].count(f"cube {tmp_path / 'here'}: {reason}") == 1

    ref, summary = _serial(small_ms, tmp_path, **imaging)
    assert result["iterdone"] == summary["iterdone"] > 0 and result["stopcode"] == summary["stopcode"]
    # Serial tclean's own path: bit for bit.
    worst = assert_cube_matches(str(tmp_path / "here"), ref, 0.0, products=PRODUCTS + (".model",))
    assert set(worst) >= {".image", ".residual", ".model", ".psf"}
    assert (pixels(str(tmp_path / "here.image")) == pixels(ref + ".image")).all()
