"""Two MeasurementSets in one image, one recorded in TOPO and one in LSRK (as after cvel), vs tclean.

tclean combines them; before, the parallel continuum's coordinator selected both in their data
frames to save a frame-conversion pass, which CASA refuses for selections of different frames
("Frequency selection #2 has incompatible frame of reference"). Cube and continuum, cleaned, two
Dask workers; measured: the cube bit-identical, the continuum within 2e-7 of the peak, the same
iterations and stop codes as tclean.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.casa.cube_helpers import assert_cube_matches, tclean_fresh
from tests.image_compare import pixels
from tests.run_cache import simulated

pytestmark = pytest.mark.casa

COMMON = dict(imsize=[64, 64], cell="12arcsec", weighting="briggs", robust=0.5, deconvolver="hogbom",
              gridder="standard")


@pytest.fixture(scope="module")
def two_frames(line_ms):
    topo = line_ms
    lsrk = simulated("line-lsrk", nchan=16, antennas=8, hours=0.5, integration_s=60, noise_jy=0.01, seed=22,
                     spectral_line=True, freq_frame="LSRK").ms
    return [lsrk, topo]


def _both(vis, tmp_path, client, **kwargs):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    args = dict(COMMON, **kwargs)
    want = str(tmp_path / "ref" / "ref")
    ref = tclean_fresh(vis, want, **args)
    got = str(tmp_path / "par")
    result = run(PcleanConfig.from_flat(vis=vis, imagename=got, parallel=True, **args), client=client)
    return result, ref, got, want


def test_cube_of_two_ms_in_two_frames_equals_tclean(two_frames, client, tmp_path):
    result, ref, got, want = _both(two_frames, tmp_path, client, specmode="cube", niter=100000, threshold="0.03Jy")
    assert result.nsubcubes == 2 and result.iterations > 0
    assert (result.iterations, result.cube_loop["stopcode"]) == (ref["iterdone"], ref["stopcode"]), ref
    assert_cube_matches(got, want, 1e-4, products=(".image", ".residual", ".model", ".psf", ".pb"))


def test_continuum_of_two_ms_in_two_frames_equals_tclean(two_frames, client, tmp_path):
    result, ref, got, want = _both(two_frames, tmp_path, client, specmode="mfs", niter=300, threshold="0.02Jy")
    assert (result["iterdone"], result["stopcode"]) == (ref["iterdone"], ref["stopcode"]), ref
    peak = float(np.abs(pixels(want + ".image")).max())
    for suffix in (".image", ".residual", ".model"):
        assert float(np.abs(pixels(got + suffix) - pixels(want + suffix)).max()) <= 1e-4 * peak, suffix
