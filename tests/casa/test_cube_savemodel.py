"""savemodel on a cube: the model pclean() leaves in the MS equals serial tclean's.

Split sessions never write the MS; once the cube is published, one imager over the whole cube
predicts its model into the user's MS (casa.cube_session.save_cube_model), as tclean does after its
loop when it cannot save in it. One session (a small cube imaged in this process) saves in its last
major cycle, tclean's own path. Each side images its own copy of the MS. MODEL_DATA is a linear
function of the model, so it is held to the clean tolerance of its largest amplitude (measured: 0
to 1.4e-12, the frequencies' process-to-process rounding; see _same_field).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.casa.cube_helpers import assert_cube_matches, tclean_fresh
from tests.casa.saved_models import complex_pixels, has_model_data, model_data, two_copies, virtual_model
from tests.run_cache import simulated

pytestmark = pytest.mark.casa

IMAGING = dict(specmode="cube", imsize=[64, 64], cell="12arcsec", weighting="briggs", robust=0.5,
               deconvolver="hogbom", gridder="standard")
CLEAN_TOL = 1e-4


def _on_client(client, ms: str, imagename: str, **kwargs):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    return run(PcleanConfig.from_flat(vis=ms, imagename=imagename, parallel=True, **kwargs), client=client)


def _model_data_error(ours: str, ref: str) -> float:
    got, want = model_data(ours), model_data(ref)
    assert got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0, "tclean saved an empty model"
    return float(np.max(np.abs(got - want))) / scale


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["cycleniter", "relayout-copies", "nsigma"])
def test_split_cube_model_column_equals_tclean(line_ms, client, tmp_path, case):
    """Two sessions; tclean saves in its last major cycle (cycleniter, threshold) or after its loop
    (nsigma). With relayout copies the sessions read a copy, and the model still goes to the MS given."""
    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    stop = {"cycleniter": dict(niter=120, cycleniter=20), "relayout-copies": dict(niter=100000, threshold="0.2Jy"),
            "nsigma": dict(niter=5000, nsigma=5.0)}[case]
    extras = {"relayout_ms": True} if case == "relayout-copies" else {}
    imaging = dict(IMAGING, **stop, savemodel="modelcolumn")
    ref = tclean_fresh(ref_ms, str(tmp_path / "ref" / "ref"), **imaging)
    result = _on_client(client, our_ms, str(tmp_path / "ours"), **imaging, **extras)
    assert result.nsubcubes == 2 and result.iterations == ref["iterdone"] > 0
    assert_cube_matches(str(tmp_path / "ours"), str(tmp_path / "ref" / "ref"), CLEAN_TOL)
    error = _model_data_error(our_ms, ref_ms)
    assert error <= CLEAN_TOL, f"MODEL_DATA differs from tclean's by {error:.3g} of its largest amplitude"


def _same_field(got, want) -> bool:
    """Equal, frequencies to 1e-12: CASA's frame conversion of one and the same cube differs between
    processes at the uHz level, with what the process did with casatools before (the reference is a
    fresh process; measured 6e-6 Hz on 1.39 GHz)."""
    a, b = np.asarray(got), np.asarray(want)
    if a.dtype.kind == "f" and b.dtype.kind == "f" and a.shape == b.shape:
        return bool(np.allclose(a, b, rtol=1e-12, atol=0))
    return np.array_equal(a, b)


@pytest.mark.timeout(600)
def test_split_cube_of_two_spws_saves_tclean_s_model(client, tmp_path):
    """Another shape: two spws with a gap between them, natural weighting, cleaned to a threshold
    (by hand also a descending-frequency MS and an averaging width: bit-identical MODEL_DATA)."""
    gap_ms = simulated("gap", nchan=12, nspw=2, spw_gap_hz=4e6, antennas=8, hours=0.5, integration_s=60,
                       noise_jy=0.01, seed=8).ms
    ref_ms, our_ms = two_copies(gap_ms, tmp_path)
    imaging = dict(IMAGING, spw="0,1", weighting="natural", niter=100000, threshold="0.03Jy",
                   savemodel="modelcolumn")
    ref = tclean_fresh(ref_ms, str(tmp_path / "ref" / "ref"), **imaging)
    result = _on_client(client, our_ms, str(tmp_path / "ours"), **imaging)
    assert result.nsubcubes == 2 and result.iterations == ref["iterdone"] > 0
    error = _model_data_error(our_ms, ref_ms)
    assert error <= CLEAN_TOL, f"MODEL_DATA differs from tclean's by {error:.3g} of its largest amplitude"


@pytest.mark.timeout(600)
def test_split_dirty_cube_model_column_equals_tclean(line_ms, client, tmp_path):
    """niter=0: tclean saves the (empty) model in its one major cycle; the split cube saves it after."""
    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    imaging = dict(IMAGING, niter=0, savemodel="modelcolumn")
    tclean_fresh(ref_ms, str(tmp_path / "ref" / "ref"), **imaging)
    result = _on_client(client, our_ms, str(tmp_path / "ours"), **imaging)
    assert result.nsubcubes == 2
    got, want = model_data(our_ms), model_data(ref_ms)
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.timeout(600)
def test_split_cube_virtual_model_equals_tclean(line_ms, client, tmp_path):
    """The virtual model: tclean's predict record (but the model image's own file name) and the
    model image it keeps; no MODEL_DATA column is added."""
    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    imaging = dict(IMAGING, niter=120, cycleniter=20, savemodel="virtual")
    ref = tclean_fresh(ref_ms, str(tmp_path / "ref" / "ref"), **imaging)
    result = _on_client(client, our_ms, str(tmp_path / "ours"), **imaging)
    assert result.nsubcubes == 2 and result.iterations == ref["iterdone"] > 0

    want, got = virtual_model(ref_ms), virtual_model(our_ms)
    assert set(got) == set(want)
    image_keys = {k for k in want if k.endswith("/diskimage")}
    assert image_keys, sorted(want)
    unset = image_keys | {k for k in want if k.endswith("/nantenna")}
    differ = [k for k in sorted(set(want) - unset) if not _same_field(got[k], want[k])]
    assert differ == [], {k: (got[k], want[k]) for k in differ}
    for key in image_keys:
        assert got[key].startswith(our_ms + "/SOURCE/")
        a, b = complex_pixels(got[key]), complex_pixels(want[key])
        assert a.shape == b.shape and np.max(np.abs(b)) > 0
        assert np.max(np.abs(a - b)) <= CLEAN_TOL * np.max(np.abs(b))
    assert not has_model_data(our_ms)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["in-loop", "nsigma-after-loop"])
def test_small_cube_in_process_saves_the_model_as_tclean(line_ms, tmp_path, case):
    """parallel=True on a cube too small for a cluster: one session in this process saves the model
    where tclean does: in its last major cycle, or after its loop when it stops on nsigma (tclean's
    check makes the loop read-only then): MODEL_DATA equal to rounding (measured 0 to 1.4e-12 of its
    largest amplitude: the frame conversion's process-to-process uHz, see _same_field)."""
    from pclean_provider.engine.api import pclean

    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    stop = dict(niter=120, cycleniter=40) if case == "in-loop" else dict(niter=5000, nsigma=5.0)
    imaging = dict(IMAGING, **stop, savemodel="modelcolumn")
    ref = tclean_fresh(ref_ms, str(tmp_path / "ref" / "ref"), **imaging)
    result = pclean(vis=our_ms, imagename=str(tmp_path / "ours"), parallel=True, nworkers=2, **imaging)
    assert not result.parallel and result.in_process_reason and result.nsubcubes == 1
    assert result.iterations == ref["iterdone"] > 0
    assert_cube_matches(str(tmp_path / "ours"), str(tmp_path / "ref" / "ref"), 0.0)
    assert _model_data_error(our_ms, ref_ms) <= 1e-9
