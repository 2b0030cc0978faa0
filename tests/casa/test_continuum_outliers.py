"""Outlier fields (`outlierfile`): the continuum engine's one-process exact path against serial tclean.

A main field and one outlier field with its own imsize and phasecenter, cleaned to the usual
threshold; pclean() (parallel=False) against casatasks.tclean with the same outlier file (its
imagenames changed). Both are serial tclean underneath, so every product of both fields must be
equal (NITER0_TOL is the tightest tolerance of tests/casa/continuum_helpers.py; measured 0).
Bad outlier files are refused before anything runs, naming the file and the fix.
"""

from __future__ import annotations

import os

import pytest

from tests.casa.continuum_helpers import NITER0_TOL, assert_images_match, kwargs_for, product_suffixes

pytestmark = pytest.mark.casa


def _phasecenter_offset(ms: str, arcmin: float) -> str:
    """The MS's field 0 direction moved `arcmin` east, as a tclean phasecenter string."""
    import casatools

    msmd = casatools.msmetadata()
    msmd.open(ms)
    try:
        pc = msmd.phasecenter(0)
    finally:
        msmd.close()
    qa = casatools.quanta()
    ra = qa.add(pc["m0"], qa.div(qa.quantity(arcmin, "arcmin"), qa.cos(pc["m1"])))
    return f"J2000 {qa.time(ra, prec=9)[0]} {qa.angle(pc['m1'], prec=9)[0]}"


def _outlier_file(path, imagename: str, phasecenter: str) -> str:
    path.write_text(f"# one outlier field\nimagename={imagename}\nimsize=[48,48]\ncell=[8arcsec,8arcsec]\n"
                    f"phasecenter={phasecenter}\n", encoding="utf-8")
    return str(path)


def test_outlier_field_equals_serial_tclean(two_spw_ms, tmp_path, monkeypatch):
    from casatasks import tclean

    import pclean_provider.compute as compute
    from pclean_provider.engine.api import pclean

    def no_cluster(*args, **kwargs):
        raise AssertionError("a run with outlier fields images in one process: no cluster to start")

    # parallel=True as a user would ask: the one-process path must not start a cluster it never uses.
    monkeypatch.setattr(compute, "open_cluster", no_cluster)

    phasecenter = _phasecenter_offset(str(two_spw_ms.ms), 14.0)  # outside the 12.8' main image
    kw = kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1)
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    ref, ref_out = str(tmp_path / "ref" / "main"), str(tmp_path / "ref" / "outlier")
    ours, ours_out = str(tmp_path / "ours" / "main"), str(tmp_path / "ours" / "outlier")
    summary = tclean(imagename=ref, outlierfile=_outlier_file(tmp_path / "ref.txt", ref_out, phasecenter), **kw)
    result = pclean(imagename=ours, outlierfile=_outlier_file(tmp_path / "ours.txt", ours_out, phasecenter),
                    parallel=True, **kw)

    for mine, theirs in ((ours, ref), (ours_out, ref_out)):
        assert product_suffixes(mine) == product_suffixes(theirs) and ".image" in product_suffixes(mine)
        assert_images_match(mine, theirs, "hogbom", ["image", "residual", "model", "psf", "pb"], NITER0_TOL)
    # The outlier image really is its own field: its own size.
    from tests.image_compare import pixels

    assert pixels(ours_out + ".image").shape[:2] == (48, 48)
    assert result.iterations == summary["iterdone"] > 0
    assert sorted(result.continuum["products"]) == sorted(
        [ours + s for s in product_suffixes(ours)] + [ours_out + s for s in product_suffixes(ours_out)])
    # Nothing staged is left beside either field.
    assert [p for p in os.listdir(tmp_path / "ours") if p.startswith(".")] == []
    stages = [s["stage"] for s in result.continuum["stages"]]
    assert "tclean (one process, outlier fields)" in stages and "publish" in stages


@pytest.mark.parametrize(("content", "match"), [
    ("imsize=[48,48]\nimagename=/tmp/x\n", "before the first imagename"),
    ("imagename=relative/name\nimsize=[48,48]\n", "relative"),
    ("imagename={tmp}/o\nphasecenter=J2000 0h0m0s +0d0m0s\n", "no imsize"),
    ("imagename={tmp}/o\nimsize=[48,48]\nimagename={tmp}/o\nimsize=[48,48]\n", "used twice"),
    ("imagename={tmp}/o\nimsize=[48,48]\ncell=a=b\n", "not one key=value"),
])
def test_bad_outlier_file_is_refused_before_any_work(two_spw_ms, tmp_path, content, match):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.continuum.preflight import check_continuum_request
    from pclean_provider.errors import PcleanInputError

    path = tmp_path / "outliers.txt"
    path.write_text(content.format(tmp=tmp_path), encoding="utf-8")
    cfg = PcleanConfig.from_flat(imagename=str(tmp_path / "main"), outlierfile=str(path),
                                 **kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 0))
    with pytest.raises(PcleanInputError, match=match) as info:
        check_continuum_request(cfg)
    assert "outlierfile" in str(info.value)
    assert os.listdir(tmp_path) == ["outliers.txt"]
