"""tclean's restart for cubes: a second call on the same imagename continues from the first one's
images (model, mask, PSF, residual), with calcpsf/calcres honoured, as serial tclean does.

Each side images its own copy of the MS (the predict-only call writes MODEL_DATA) and makes both
calls; the second pclean() call runs as one session in this process whatever the first one did
(in this process, or split on a cluster, whose concatenated images are then references to the
sessions' images and are copied as plain images before the imager opens them). The pclean() calls
that image in a process of their own run in a fresh interpreter, as the tclean references do (see
_pclean_fresh: in this test process, after other modules, the split case's continued clean took 247
iterations where tclean took 212, its first call bit-identical).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.casa.cube_helpers import assert_cube_matches, tclean_fresh
from tests.casa.saved_models import model_data, two_copies

pytestmark = pytest.mark.casa

IMAGING = dict(specmode="cube", imsize=[64, 64], cell="12arcsec", weighting="briggs", robust=0.5,
               deconvolver="hogbom", gridder="standard")
CLEAN_TOL = 1e-4


_PCLEAN = r"""
import json, sys
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[2])
from pclean_provider.engine.api import pclean
r = pclean(**json.loads(sys.argv[1]))
print("RESULT " + json.dumps({"iterations": r.iterations, "parallel": r.parallel, "nsubcubes": r.nsubcubes,
                              "stopcode": (r.cube_loop or {}).get("stopcode"),
                              "in_process_reason": r.in_process_reason}))
"""


def _pclean_fresh(tmp_path, **kwargs) -> dict:
    """pclean() in a fresh interpreter, as the references are made: an in-process cube's partly
    covered edge channels depend, at the mHz level of CASA's frame conversion, on what the process
    did with casatools before (this test process imaged other modules' data), and a continued clean
    turns such a difference into other iteration counts."""
    proc = subprocess.run([sys.executable, "-c", _PCLEAN, json.dumps(kwargs), str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _first_on_client(client, ms: str, imagename: str, **kwargs):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    return run(PcleanConfig.from_flat(vis=ms, imagename=imagename, parallel=True, **kwargs), client=client)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("first", ["in-process", "split-on-cluster"])
def test_a_second_call_continues_cleaning_as_tclean(line_ms, client, tmp_path, first):
    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    one = dict(IMAGING, niter=60, cycleniter=20)
    two = dict(IMAGING, niter=200, cycleniter=40, threshold="0.02Jy")
    ref = str(tmp_path / "ref" / "ref")
    tclean_fresh(ref_ms, ref, **one)
    ref_two = tclean_fresh(ref_ms, ref, **two)
    ours = str(tmp_path / "ours")
    if first == "in-process":
        first_result = _pclean_fresh(tmp_path, vis=our_ms, imagename=ours, parallel=True, nworkers=2, **one)
        assert not first_result["parallel"]
    else:
        result = _first_on_client(client, our_ms, ours, **one)
        assert result.parallel and result.nsubcubes == 2
    second = _pclean_fresh(tmp_path, vis=our_ms, imagename=ours, parallel=True, nworkers=2, **two)
    assert not second["parallel"] and second["nsubcubes"] == 1 and "restart=True" in second["in_process_reason"]
    assert second["iterations"] == ref_two["iterdone"] > 0
    assert second["stopcode"] == ref_two["stopcode"]
    assert_cube_matches(ours, ref, CLEAN_TOL)


@pytest.mark.timeout(600)
def test_the_predict_only_call_saves_the_model_as_tclean(line_ms, tmp_path):
    """The self-calibration recipe: clean, then niter=0, calcpsf=False, calcres=False,
    savemodel='modelcolumn' on the same imagename only predicts the model into the MS."""
    ref_ms, our_ms = two_copies(line_ms, tmp_path)
    clean = dict(IMAGING, niter=100, cycleniter=50)
    predict = dict(IMAGING, niter=0, calcpsf=False, calcres=False, savemodel="modelcolumn")
    ref = str(tmp_path / "ref" / "ref")
    for kw in (clean, predict):
        tclean_fresh(ref_ms, ref, **kw)
        _pclean_fresh(tmp_path, vis=our_ms, imagename=str(tmp_path / "ours"), **kw)
    got, want = model_data(our_ms), model_data(ref_ms)
    assert got.shape == want.shape and float(np.max(np.abs(want))) > 0
    assert float(np.max(np.abs(got - want))) <= 1e-9 * float(np.max(np.abs(want)))
    assert_cube_matches(str(tmp_path / "ours"), ref, CLEAN_TOL, products=(".image", ".model", ".residual"))


def test_what_does_not_continue_is_refused_before_imaging(line_ms, tmp_path):
    from pclean_provider.engine.api import pclean
    from pclean_provider.errors import PcleanInputError

    ours = str(tmp_path / "ours")
    pclean(vis=line_ms, imagename=ours, **dict(IMAGING, niter=0))
    with pytest.raises(PcleanInputError, match="restart=False"):
        pclean(vis=line_ms, imagename=ours, restart=False, **dict(IMAGING, niter=0))
    with pytest.raises(PcleanInputError, match="only the exact loop"):
        pclean(vis=line_ms, imagename=ours, cube_engine="independent", **dict(IMAGING, niter=0))
