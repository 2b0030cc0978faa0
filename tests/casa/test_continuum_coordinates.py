"""The coordinator's coordinate system, made without selectdata's frequency-frame pass, against the
one made with it (CASA's own path), on MSs of several shapes and selections.

The shortcut (continuum_parts.global_coordinates) selects in the data frame when every named spw
keeps rows; these tests hold it to an identical record (every field, every array element), and
check that it is NOT taken when a named spw is left without rows (there the two paths may keep
different spws).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.casa

TINY = dict(antennas=6, hours=0.5, integration_s=120.0, noise_jy=0.01)


@pytest.fixture(scope="module")
def shapes(casa_runtime, two_spw_ms, tmp_path_factory):
    """name -> MS path: contiguous spws, descending channels, a two-pointing mosaic with a gap
    between its spws, data already labelled LSRK."""
    from pclean_provider.casa.simulator import simulate_ms

    root = tmp_path_factory.mktemp("coords")
    return {
        "two_spw": str(two_spw_ms.ms),
        "descending": str(simulate_ms(root / "desc.ms", nspw=2, nchan=6, descending=True, seed=2, **TINY).ms),
        "mosaic_gap": str(simulate_ms(root / "mos.ms", nspw=3, nchan=4, fields=2, spw_gap_hz=3e6, seed=4,
                                      **TINY).ms),
        "lsrk_data": str(simulate_ms(root / "lsrk.ms", nspw=2, nchan=4, freq_frame="LSRK", seed=6, **TINY).ms),
    }


def _records(vis: str, **selection):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.casa_bridge import casa_records

    cfg = PcleanConfig.from_flat(vis=vis, imagename="/tmp/unused-coords", specmode="mfs", imsize=[64, 64],
                                 cell="8arcsec", deconvolver="hogbom", niter=0, **selection)
    return casa_records(cfg.tclean_kwargs())


def _first_half(vis: str) -> str:
    """A timerange expression for the first half of the observation."""
    import casatools

    tb = casatools.table()
    tb.open(vis)
    try:
        times = tb.getcol("TIME")
    finally:
        tb.close()
    middle = (float(times.min()) + float(times.max())) / 2.0
    return "<" + casatools.quanta().time({"value": middle, "unit": "s"}, form="ymd")[0]


def _assert_same_record(a, b, path="csys"):
    assert type(a) is type(b) or (np.isscalar(a) and np.isscalar(b)), path
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
        for key in a:
            _assert_same_record(a[key], b[key], f"{path}/{key}")
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{path}: {a!r} != {b!r}"


CASES = [
    ("two_spw", {}),
    ("two_spw", {"spw": "0:2~5,1"}),
    ("two_spw", {"timerange": "FIRST_HALF", "spw": "1"}),
    ("descending", {}),
    ("descending", {"spw": "1:1~4"}),
    ("mosaic_gap", {}),
    ("mosaic_gap", {"field": "1", "spw": "0,2"}),
    ("lsrk_data", {}),
]


@pytest.mark.parametrize(("shape", "selection"), CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_data_frame_selection_gives_the_same_coordinates(shapes, shape, selection):
    from pclean_provider.casa import continuum_parts as cp

    if selection.get("timerange") == "FIRST_HALF":
        selection = dict(selection, timerange=_first_half(shapes[shape]))
    rec = _records(shapes[shape], **selection)
    sel = cp.check_selection(rec.selection)
    try:
        with_pass = cp.global_coordinates(sel, rec.image, rec.gridding, skip_frame_pass=False)
    except RuntimeError as exc:
        pytest.fail(f"CASA's own path refused {selection}: {exc}")
    assert all(cp.every_selected_spw_has_rows(sel[k]) for k in sel), "the shortcut would not be taken here"
    _assert_same_record(with_pass, cp.global_coordinates(sel, rec.image, rec.gridding))


def test_a_named_spw_without_rows_keeps_the_frame_pass(shapes):
    """spw 0 and 1 named, but a TaQL leaves only spw 1's rows: CASA's LSRK selection drops spw 0, the
    data-frame one keeps it (and takes the rest frequency from it), so the shortcut must not be
    taken and the record is CASA's own."""
    from pclean_provider.casa import continuum_parts as cp

    rec = _records(shapes["two_spw"])
    sel = cp.check_selection(rec.selection)
    sel = {k: dict(v, taql="DATA_DESC_ID == 1") for k, v in sel.items()}
    assert not cp.every_selected_spw_has_rows(sel["ms0"])
    decided = cp.global_coordinates(sel, rec.image, rec.gridding)
    _assert_same_record(cp.global_coordinates(sel, rec.image, rec.gridding, skip_frame_pass=False), decided)
    skipped = cp.global_coordinates(sel, rec.image, rec.gridding, skip_frame_pass=True)
    # What the shortcut would have got wrong here (measured): the rest frequency.
    assert skipped["spectral2"]["restfreq"] != decided["spectral2"]["restfreq"]


def test_unreadable_selection_is_answered_no(shapes):
    from pclean_provider.casa import continuum_parts as cp

    rec = _records(shapes["two_spw"])
    sel = cp.check_selection(rec.selection)["ms0"]
    assert not cp.every_selected_spw_has_rows(dict(sel, spw="7"))
    assert not cp.every_selected_spw_has_rows(dict(sel, field="9"))
