"""The session-edge cases on four workers: sessions of different sizes (4/3/3/3, 3/3/2/2 channels),
so three session boundaries instead of one, each vs serial casatasks.tclean.

The cases are those that once failed at a session's edge on two workers (test_cube_edges.py,
test_cube_sessions.py): `specmode='cubedata'` with a channel start, an spw selection with a gap and
more channels than were selected, two spws of different channel widths, a cleaned cubedata cube
(tclean's iterdone and stop code). Tolerances as in test_cube_sessions.py.
"""

from __future__ import annotations

import functools

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


def test_cleaned_cubedata_on_four_sessions_equals_tclean(line_ms, client4, tmp_path):
    result, ref, got, want = _pclean_and_tclean(line_ms, tmp_path, client4, specmode="cubedata", spw="0:2~14",
                                                start=2, nchan=13, niter=100000, threshold="0.03Jy")
    assert result.nsubcubes == NWORKERS and result.iterations > 0
    assert (result.iterations, result.cube_loop["stopcode"]) == (ref["iterdone"], ref["stopcode"]), ref
    assert_cube_matches(got, want, 1e-4, products=(".image", ".residual", ".model", ".psf", ".pb"))
