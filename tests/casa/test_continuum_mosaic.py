"""A continuum mosaic weighted per field (gridder='mosaic', mosweight=True, briggs) on two parts vs tclean.

Before: the parts summed their own weight densities, which with one plane per field CASA cannot
load; each part's process aborted in makepsf (casacore ArrayConformanceError) and the user was told
a worker had left the cluster. Now the coordinator makes the per-field density from all the data
and every part loads it. Measured: image, residual and model within 3e-7 of the peak, the same
iterations and stop code as tclean.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.casa.cube_helpers import tclean_fresh
from tests.image_compare import pixels
from tests.run_cache import simulated

pytestmark = pytest.mark.casa

MOSAIC = dict(specmode="mfs", gridder="mosaic", mosweight=True, imsize=[32, 32], cell="45arcsec",
              weighting="briggs", robust=0.5, deconvolver="hogbom", niter=100)
TOL = 1e-4


@pytest.fixture(scope="module")
def mosaic_ms(casa_runtime):
    """Two pointings, four channels (small: the mosaic gridder's convolution functions are costly)."""
    return simulated("mosaic-continuum", nchan=4, fields=2, antennas=6, hours=0.25, integration_s=120,
                     noise_jy=0.01, seed=9).ms


def test_mosaic_weighted_per_field_equals_tclean_on_two_parts(mosaic_ms, cluster, tmp_path):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.continuum.run import run_continuum

    want = str(tmp_path / "ref" / "ref")
    ref = tclean_fresh(mosaic_ms, want, **MOSAIC)
    got = str(tmp_path / "par")
    cfg = PcleanConfig.from_flat(vis=mosaic_ms, imagename=got, parallel=True, **MOSAIC)
    result = run_continuum(cfg, cluster.client, nparts=2)

    assert (result.iterations, result.stopcode) == (ref["iterdone"], ref["stopcode"]), (result, ref)
    assert "weight density" in [s.stage for s in result.stages]
    peak = float(np.abs(pixels(want + ".image")).max())
    for suffix in (".image", ".residual", ".model"):
        assert float(np.abs(pixels(got + suffix) - pixels(want + suffix)).max()) <= TOL * peak, suffix
    for suffix in (".psf", ".pb", ".sumwt"):
        ref_pix = pixels(want + suffix)
        assert float(np.abs(pixels(got + suffix) - ref_pix).max()) <= TOL * float(np.abs(ref_pix).max()), suffix
