"""tclean's restart: a second pclean() on the same imagename continues from the images on disk.

Two calls of pclean() (parallel continuum, 2 workers) against the same two calls of serial
casatasks.tclean: the second call cleans on from the first's model and mask (restart=True, the
default), with calcpsf/calcres as given. Tolerances: tests/casa/continuum_helpers.py.
"""

from __future__ import annotations

import os

import pytest

from tests.casa.continuum_helpers import CLEAN_TOL, assert_images_match, kwargs_for, product_suffixes

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.casa, pytest.mark.usefixtures("plaintext_dask_allowed")]

# The first call stops on its iteration limit well above the threshold, so the second has work left.
FIRST = dict(niter=15)
SECOND = dict(niter=300)


def _kwargs(ms: str, deconvolver: str, call: dict, second: dict) -> dict:
    return {**kwargs_for(ms, deconvolver, "briggs", 1), **call, **second}


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("deconvolver", "second", "parallel"), [
    ("hogbom", {}, True),
    ("hogbom", dict(calcpsf=False, calcres=False), True),
    ("mtmfs", dict(calcpsf=False), True),
    ("hogbom", dict(calcres=False), False),
], ids=["hogbom", "hogbom-calcpsf-calcres-false", "mtmfs-calcpsf-false", "serial-calcres-false"])
def test_second_call_continues_like_tclean(two_spw_ms, cluster, tmp_path, deconvolver, second, parallel):
    """parallel=False: the one in-process part images straight onto the products (serial layout)."""
    from casatasks import tclean

    from pclean_provider.engine.api import pclean

    ref = str(tmp_path / "tclean" / "img")
    os.makedirs(os.path.dirname(ref))
    ours = str(tmp_path / "pclean" / "img")
    os.makedirs(os.path.dirname(ours))
    address = cluster.client.scheduler.address

    done_ref, done_ours = [], []
    for call, extra in ((FIRST, {}), (SECOND, second)):
        summary = tclean(imagename=ref, **_kwargs(two_spw_ms.ms, deconvolver, call, extra))
        on_cluster = dict(cluster_type="address", scheduler_address=address) if parallel else {}
        result = pclean(imagename=ours, **_kwargs(two_spw_ms.ms, deconvolver, call, extra), parallel=parallel,
                        **on_cluster)
        assert result.nworkers == (2 if parallel else 1)
        done_ref.append((summary["iterdone"], summary["stopcode"]))
        done_ours.append((result.iterations, result.continuum["stopcode"]))

    # The first call stopped on niter, the second went on to the threshold: both as tclean.
    assert done_ref[0] == (FIRST["niter"], 1) and done_ref[1][1] == 2, done_ref
    assert done_ours == done_ref
    assert product_suffixes(ours) == product_suffixes(ref)
    assert_images_match(ours, ref, deconvolver, ["image", "residual", "model"], CLEAN_TOL)
    # The staging folder and the replaced images are gone; nothing else was left beside the products.
    assert [p for p in os.listdir(os.path.dirname(ours)) if p.startswith(".")] == []


@pytest.mark.timeout(600)
def test_restart_false_writes_the_next_numbered_name_like_tclean(two_spw_ms, cluster, tmp_path, monkeypatch):
    """restart=False: the second call leaves the first's images alone and writes <name>_2, as tclean.

    Relative image names: tclean's numbering drops the first two characters of an absolute
    folder ('/tmp/...' becomes 'mp/...') and then fails to write the PSF.
    """
    from casatasks import tclean

    from pclean_provider.engine.api import pclean

    monkeypatch.chdir(tmp_path)
    os.makedirs("tclean")
    os.makedirs("pclean")
    ref, ours = "tclean/img", "pclean/img"
    kw = dict(_kwargs(two_spw_ms.ms, "hogbom", FIRST, {}), restart=False)
    names = []
    for _ in range(2):
        summary = tclean(imagename=ref, **kw)
        result = pclean(imagename=ours, **kw, parallel=True, cluster_type="address",
                        scheduler_address=cluster.client.scheduler.address)
        assert result.iterations == summary["iterdone"] == FIRST["niter"]
        names.append(result.imagename)
    assert names == [str(tmp_path / ours), str(tmp_path / ours) + "_2"]
    assert sorted(os.listdir(os.path.dirname(ref))) == sorted(
        p for p in os.listdir(os.path.dirname(ours)) if not p.endswith(".progress.jsonl"))
    for suffix in ("", "_2"):
        assert_images_match(ours + suffix, ref + suffix, "hogbom", ["image", "residual", "model"], CLEAN_TOL)
