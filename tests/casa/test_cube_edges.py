"""Cubes whose sessions start or end where the data do not: each vs serial casatasks.tclean.

The exact loop splits a cube into sessions; what goes wrong goes wrong at a session's edges (how its
spectral axis and its data are derived there). Each case here failed before its fix:
- `specmode='cubedata'` with a channel start: a session given the cube's coordinate system left its
  first channel empty and the others 1e-4 of the peak off (a 'cubedata' axis has no frame, and CASA
  maps the data onto a given one differently from the axis it defines itself).
- an spw selection with a gap and more channels than were selected: tclean images them (blank
  where nothing was selected); preflight refused them.
Two Dask workers, two sessions; tolerances as in test_cube_sessions.py.
"""

from __future__ import annotations

import functools

import pytest

from tests.casa.cube_helpers import assert_cube_matches, pclean_and_tclean

pytestmark = pytest.mark.casa

IMAGING = dict(imsize=[64, 64], cell="12arcsec", weighting="briggs", robust=0.5, deconvolver="hogbom",
               gridder="standard")


_pclean_and_tclean = functools.partial(pclean_and_tclean, imaging=dict(IMAGING, specmode="cube"))


DIRTY = {
    # Channels 2-14 of the data, no frame; cube_chunksize is the fan-out's and must not change the loop.
    "cubedata-channel-start": (dict(specmode="cubedata", spw="0:2~14", start=2, nchan=13), dict(cube_chunksize=3)),
    # Data channels 2-6 and 9-11 selected, ten output channels from channel 2: 7 and 8 stay blank.
    "selection-gap-more-channels-than-selected": (dict(spw="0:2~6;9~11", start=2, nchan=10), {}),
    # The cube's grid over two spws of different channel widths, sessions meeting inside it.
    "spws-of-different-widths": (dict(vis="spw_widths_ms", width="1MHz"), {}),
}


@pytest.mark.parametrize("case", sorted(DIRTY))
def test_dirty_cube_at_the_edges_equals_tclean(request, client, tmp_path, case):
    kwargs, extras = dict(DIRTY[case][0]), DIRTY[case][1]
    ms = request.getfixturevalue(kwargs.pop("vis", "line_ms"))
    result, ref, got, want = _pclean_and_tclean(ms, tmp_path, client, extras, niter=0, **kwargs)
    assert result.nsubcubes == 2
    assert_cube_matches(got, want, 1e-5)


def test_cleaned_cubedata_equals_tclean(line_ms, client, tmp_path):
    result, ref, got, want = _pclean_and_tclean(line_ms, tmp_path, client, specmode="cubedata", spw="0:2~14",
                                                start=2, nchan=13, niter=100000, threshold="0.03Jy")
    assert result.nsubcubes == 2 and result.iterations > 0
    assert (result.iterations, result.cube_loop["stopcode"]) == (ref["iterdone"], ref["stopcode"]), ref
    assert_cube_matches(got, want, 1e-4, products=(".image", ".residual", ".model", ".psf", ".pb"))
