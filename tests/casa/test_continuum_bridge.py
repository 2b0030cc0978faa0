"""tclean keyword arguments -> synthesis-tool records (pure logic; the casa tests check the images)."""

from __future__ import annotations

import json

import pytest

from pclean_provider.config.casa_bridge import BridgeError, casa_records, casa_records_for


def _kwargs(**changes):
    from pclean_provider.config import PcleanConfig

    flat = dict(vis="/data/a.ms", imagename="/out/img", specmode="mfs")
    flat.update(changes)
    return PcleanConfig.from_flat(flat, check_paths=False).tclean_kwargs()


def test_tclean_adjustments_for_mfs_and_non_mosaic_gridders():
    # tclean's defaults are perchanweightdensity=True and mosweight=True; for mfs with the standard
    # gridder tclean turns both off before building the records.
    kw = _kwargs(weighting="briggs", robust=0.0)
    assert kw["perchanweightdensity"] is True and kw["mosweight"] is True
    rec = casa_records(kw)
    assert rec.weighting["usecubebriggs"] is False
    assert rec.weighting["multifield"] is False
    assert rec.weighting["type"] == "briggs" and rec.weighting["rmode"] == "norm"
    assert rec.weighting["robust"] == 0.0


def test_mosaic_keeps_mosweight_and_briggsabs_maps_to_abs_mode():
    rec = casa_records(_kwargs(gridder="mosaic", weighting="briggsabs"))
    assert rec.weighting["multifield"] is True
    assert (rec.weighting["type"], rec.weighting["rmode"]) == ("briggs", "abs")
    assert casa_records(_kwargs(weighting="natural")).weighting["rmode"] == "none"


def test_renamed_selection_and_iteration_parameters():
    rec = casa_records(_kwargs(timerange="10:00~11:00", uvrange=">1klambda", intent="*TARGET*", gain=0.2,
                               smallscalebias=0.3, deconvolver="multiscale", scales=[0, 5]))
    sel = rec.selection["ms0"]
    assert sel["msname"] == "/data/a.ms"
    assert (sel["timestr"], sel["uvdist"], sel["state"]) == ("10:00~11:00", ">1klambda", "*TARGET*")
    assert rec.iteration["loopgain"] == 0.2 and rec.deconvolution["scalebias"] == 0.3
    assert rec.deconvolution["scales"] == [0, 5]


def test_cycleniter_defaults_to_niter_and_images_are_named_everywhere():
    rec = casa_records(_kwargs(niter=500, cycleniter=-1, deconvolver="mtmfs", nterms=3))
    assert rec.iteration["cycleniter"] == 500
    assert rec.iteration["allimages"]["0"] == {"imagename": "/out/img", "multiterm": True}
    assert rec.nterms == 3
    moved = rec.with_imagename("/stage/img")
    for part in (moved.image, moved.gridding, moved.normalization, moved.deconvolution):
        assert part["imagename"] == "/stage/img"
    assert moved.iteration["allimages"]["0"]["imagename"] == "/stage/img"
    assert rec.imagename == "/out/img"  # the original is untouched


def test_one_selection_per_ms_with_per_ms_fields():
    rec = casa_records(_kwargs(vis=["/data/a.ms", "/data/b.ms"], field=["0", "1"], spw="0"))
    assert [s["msname"] for s in rec.selection.values()] == ["/data/a.ms", "/data/b.ms"]
    assert [s["field"] for s in rec.selection.values()] == ["0", "1"]
    assert [s["spw"] for s in rec.selection.values()] == ["0", "0"]
    with pytest.raises(BridgeError, match="field"):
        casa_records(_kwargs(vis=["/data/a.ms", "/data/b.ms"], field=["0", "1", "2"]))


def test_records_are_plain_json():
    rec = casa_records_for(type("Cfg", (), {"tclean_kwargs": staticmethod(lambda: _kwargs(niter=10))})())
    dumped = rec.model_dump()
    assert json.loads(json.dumps(dumped)) == dumped  # survives JSON unchanged: no numpy or CASA types


@pytest.mark.parametrize(("changes", "names"), [
    (dict(specmode="cube"), "specmode"),
    (dict(interactive=True), "interactive"),
    (dict(outlierfile="/x/outliers.txt"), "outlierfile"),
])
def test_refusals_name_the_parameter(changes, names):
    # Set on the raw keyword arguments: the config already refuses some of these itself, the
    # bridge must not rely on that.
    with pytest.raises(BridgeError, match=names):
        casa_records({**_kwargs(), **changes})
