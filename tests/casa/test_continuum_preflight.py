"""Bad continuum input fails before any Dask cluster starts (as the cube's preflight does).

pclean(parallel=True) would start a LocalCluster for the run; with bad input it must raise the
PcleanInputError naming the parameter without ever asking for a cluster, and write nothing.
"""

from __future__ import annotations

import os

import pytest

from tests.casa.continuum_helpers import kwargs_for

pytestmark = pytest.mark.casa


@pytest.fixture
def no_cluster(monkeypatch):
    """Record any attempt to start a cluster (the check must come first, so none may happen)."""
    import pclean_provider.compute as compute

    asked = []

    def refuse(*args, **kwargs):
        asked.append((args, kwargs))
        raise AssertionError("a Dask cluster was requested before the continuum inputs were checked")

    monkeypatch.setattr(compute, "open_cluster", refuse)
    return asked


@pytest.mark.parametrize(("bad", "match"), [
    (dict(spw="9"), "spw"),
    (dict(vis="missing.ms"), "vis"),
    (dict(gridder="awphpg"), "gridder"),
    (dict(startmodel="nowhere.model"), "startmodel"),
    (dict(psfphasecenter="J2000 0h0m0s 0d0m0s"), "psfphasecenter"),
    (dict(calcpsf=False), "calcpsf=False"),
    (dict(calcres=False), "calcres=False"),
], ids=["spw", "vis", "gridder", "startmodel", "psfphasecenter", "calcpsf-without-psf", "calcres-without-residual"])
def test_bad_input_raises_before_a_cluster_exists(two_spw_ms, tmp_path, no_cluster, bad, match):
    from pclean_provider.engine.api import pclean
    from pclean_provider.errors import PcleanInputError

    kw = {**kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1), **bad}
    if kw["vis"] == "missing.ms":
        kw["vis"] = str(tmp_path / "missing.ms")
    with pytest.raises(PcleanInputError, match=match):
        pclean(imagename=str(tmp_path / "bad"), parallel=True, nworkers=2, **kw)
    assert no_cluster == []
    assert os.listdir(tmp_path) == []


def test_earlier_non_image_in_the_way_raises_before_a_cluster_exists(two_spw_ms, tmp_path, no_cluster):
    from pclean_provider.engine.api import pclean
    from pclean_provider.errors import PcleanInputError

    (tmp_path / "way.residual").write_text("not an image", encoding="utf-8")
    with pytest.raises(PcleanInputError, match="way.residual"):
        pclean(imagename=str(tmp_path / "way"), parallel=True, nworkers=2,
               **kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 0))
    assert no_cluster == []


def test_restart_with_another_imsize_raises_before_a_cluster_exists(two_spw_ms, tmp_path, no_cluster):
    """A restart continues on the earlier images: another imsize is refused up front, the images kept."""
    from pclean_provider.engine.api import pclean
    from pclean_provider.errors import PcleanInputError

    kw = kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 0)
    pclean(imagename=str(tmp_path / "img"), **kw)  # serial: asks for no cluster
    before = {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path) if not p.endswith(".jsonl")}
    with pytest.raises(PcleanInputError, match=r"imsize=\[64, 64\].*img.psf is 96x96"):
        pclean(imagename=str(tmp_path / "img"), parallel=True, nworkers=2, **{**kw, "imsize": [64, 64]})
    assert no_cluster == []
    assert {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path) if not p.endswith(".jsonl")} == before
