"""savemodel: the model a parallel continuum run leaves in the MS equals serial tclean's.

'modelcolumn' (MODEL_DATA) and 'virtual' (the predict recipe in the SOURCE table).

Each side images its own copy of the two-spw MS (both write their model into it). The parts never write
the MS; the coordinator predicts the final model once after the loop (see
pclean_provider.engine.continuum.run._without_model_writes). Tolerance: the model images agree to the
clean tolerance of tests/casa/continuum_helpers.py (measured ~1e-6), and the visibilities are a
linear function of them, so MODEL_DATA is held to the same fraction of its largest amplitude
(measured: 2.0e-7 hogbom, 2.6e-7 mtmfs; a part's rows left without a model would be 1.0).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.casa.continuum_helpers import CLEAN_TOL, assert_images_match, kwargs_for
from tests.casa.saved_models import complex_pixels, model_data, virtual_model

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.casa, pytest.mark.usefixtures("plaintext_dask_allowed")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("deconvolver", "extra", "parallel"), [
    ("hogbom", {}, True),
    ("mtmfs", dict(nsigma=2.0), True),
    ("hogbom", {}, False),
], ids=["hogbom-saved-in-loop-by-tclean", "mtmfs-nsigma-saved-after-loop-by-tclean", "serial-layout"])
def test_model_column_equals_tclean(two_spw_ms, cluster, tmp_path, deconvolver, extra, parallel):
    from casatasks import tclean

    from pclean_provider.engine.api import pclean

    ref_ms, our_ms = str(tmp_path / "ref.ms"), str(tmp_path / "ours.ms")
    shutil.copytree(two_spw_ms.ms, ref_ms)
    shutil.copytree(two_spw_ms.ms, our_ms)
    kw = {**kwargs_for(two_spw_ms.ms, deconvolver, "briggs", 1), **extra, "savemodel": "modelcolumn"}

    summary = tclean(imagename=str(tmp_path / "ref"), **{**kw, "vis": ref_ms})
    on_cluster = dict(cluster_type="address", scheduler_address=cluster.client.scheduler.address) if parallel else {}
    result = pclean(imagename=str(tmp_path / "ours"), **{**kw, "vis": our_ms}, parallel=parallel, **on_cluster)

    assert result.nworkers == (2 if parallel else 1)
    assert result.iterations == summary["iterdone"] > 0
    assert_images_match(str(tmp_path / "ours"), str(tmp_path / "ref"), deconvolver, ["model"], CLEAN_TOL)
    ours, ref = model_data(our_ms), model_data(ref_ms)
    assert ours.shape == ref.shape
    scale = float(np.max(np.abs(ref)))
    assert scale > 0
    diff = float(np.max(np.abs(ours - ref))) / scale
    assert diff <= CLEAN_TOL, f"MODEL_DATA differs from tclean's by {diff:.3g} of its largest amplitude"


@pytest.mark.timeout(600)
def test_predict_only_call_equals_tclean(two_spw_ms, cluster, tmp_path):
    """The self-calibration recipe: clean, then tclean(niter=0, calcpsf=False, calcres=False,
    savemodel='modelcolumn') on the same imagename only predicts the model into the MS."""
    from casatasks import tclean

    from pclean_provider.engine.api import pclean

    ref_ms, our_ms = str(tmp_path / "ref.ms"), str(tmp_path / "ours.ms")
    shutil.copytree(two_spw_ms.ms, ref_ms)
    shutil.copytree(two_spw_ms.ms, our_ms)
    clean = kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1)
    predict = dict(clean, niter=0, calcpsf=False, calcres=False, savemodel="modelcolumn")
    address = cluster.client.scheduler.address
    for kw in (clean, predict):
        tclean(imagename=str(tmp_path / "ref"), **{**kw, "vis": ref_ms})
        pclean(imagename=str(tmp_path / "ours"), **{**kw, "vis": our_ms}, parallel=True, cluster_type="address",
               scheduler_address=address)
    ours, ref = model_data(our_ms), model_data(ref_ms)
    scale = float(np.max(np.abs(ref)))
    assert scale > 0 and ours.shape == ref.shape
    assert float(np.max(np.abs(ours - ref))) <= CLEAN_TOL * scale
    assert_images_match(str(tmp_path / "ours"), str(tmp_path / "ref"), "hogbom", ["image", "model"], CLEAN_TOL)


@pytest.mark.timeout(600)
def test_virtual_model_equals_tclean(two_spw_ms, cluster, tmp_path):
    """A virtual model is a predict recipe (the gridder's record) and the model image it reads.

    Both must be tclean's: every field of the record but the image's own file name and
    `nantenna`, which neither record fills with the number of antennas (tclean's held 1049016228
    for this MS), and the stored model image within the clean tolerance of its peak (measured
    1.7e-7).
    """
    import casatools
    from casatasks import tclean

    from pclean_provider.engine.api import pclean

    ref_ms, our_ms = str(tmp_path / "ref.ms"), str(tmp_path / "ours.ms")
    shutil.copytree(two_spw_ms.ms, ref_ms)
    shutil.copytree(two_spw_ms.ms, our_ms)
    kw = {**kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1), "savemodel": "virtual"}
    summary = tclean(imagename=str(tmp_path / "ref"), **{**kw, "vis": ref_ms})
    result = pclean(imagename=str(tmp_path / "ours"), **{**kw, "vis": our_ms}, parallel=True,
                    cluster_type="address", scheduler_address=cluster.client.scheduler.address)
    assert result.iterations == summary["iterdone"] > 0

    ref, ours = virtual_model(ref_ms), virtual_model(our_ms)
    assert set(ours) == set(ref)
    unset = {"ft_0/container/diskimage", "ft_0/container/nantenna"}
    differ = [k for k in sorted(set(ref) - unset) if not np.array_equal(np.asarray(ours[k]), np.asarray(ref[k]))]
    assert differ == [], {k: (ours[k], ref[k]) for k in differ}
    image = "ft_0/container/diskimage"
    assert ours[image].startswith(our_ms + "/SOURCE/")
    # The stored model is a complex image (the model's Fourier plane): compared with its phases.
    a, b = complex_pixels(ours[image]), complex_pixels(ref[image])
    assert a.shape == b.shape and np.max(np.abs(b)) > 0
    assert np.max(np.abs(a - b)) <= CLEAN_TOL * np.max(np.abs(b))
    # No MODEL_DATA column was added: the virtual model is the only model.
    tb = casatools.table()
    tb.open(our_ms)
    try:
        assert "MODEL_DATA" not in tb.colnames()
    finally:
        tb.close()
