"""A continuum mosaic weighted per field (gridder='mosaic', mosweight=True, briggs) on parts vs tclean.

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


@pytest.fixture(scope="module")
def reference(mosaic_ms, tmp_path_factory):
    """Serial tclean's mosaic, made once for the module's part counts."""
    want = str(tmp_path_factory.mktemp("mosaic-ref") / "ref")
    return want, tclean_fresh(mosaic_ms, want, **MOSAIC)


# The MS's rows visit the pointings in blocks 0, 1, 0, 1. CASA's row cuts into 2 parts give each part
# both pointings in that order; into 4 parts, part 2 meets pointing 1 first, which the mosaic gridder
# images differently from tclean (dirty image 20 % off): the run then takes one part
# (casa.continuum_parts.mosaic_field_order_blocker) and is still tclean's.
@pytest.mark.parametrize(("nparts", "parts_used"), [(2, 2), (4, 1)])
def test_mosaic_weighted_per_field_equals_tclean(mosaic_ms, reference, cluster, tmp_path, nparts, parts_used):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.continuum.run import run_continuum

    want, ref = reference
    got = str(tmp_path / "par")
    cfg = PcleanConfig.from_flat(vis=mosaic_ms, imagename=got, parallel=True, **MOSAIC)
    result = run_continuum(cfg, cluster.client, nparts=nparts)

    assert result.nparts == parts_used
    assert (result.iterations, result.stopcode) == (ref["iterdone"], ref["stopcode"]), (result, ref)
    if parts_used > 1:
        assert "weight density" in [s.stage for s in result.stages]
    peak = float(np.abs(pixels(want + ".image")).max())
    for suffix in (".image", ".residual", ".model"):
        assert float(np.abs(pixels(got + suffix) - pixels(want + suffix)).max()) <= TOL * peak, suffix
    for suffix in (".psf", ".pb", ".sumwt"):
        ref_pix = pixels(want + suffix)
        assert float(np.abs(pixels(got + suffix) - ref_pix).max()) <= TOL * float(np.abs(ref_pix).max()), suffix
