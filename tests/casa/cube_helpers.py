"""Serial tclean references and cube comparisons shared by the cube tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.image_compare import beams, frequencies, pixels

_FRESH_TCLEAN = """
import json, os, sys
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=os.path.dirname(sys.argv[2]))
from casatasks import tclean
os.chdir(os.path.dirname(sys.argv[2]))
ret = tclean(imagename=sys.argv[2], **json.loads(sys.argv[1])) or {}
print(json.dumps({k: (ret.get(k).item() if hasattr(ret.get(k), "item") else ret.get(k))
                  for k in ("iterdone", "stopcode", "nmajordone")}))
"""


def tclean_fresh(ms: str, imagename: str, **kwargs) -> dict:
    """Serial tclean in a process of its own, as the Dask workers are. CASA's frame conversion of
    a partly covered edge channel depends on what the process did with casatools before (this
    one simulated MeasurementSets), so references for worker results come from a fresh process.
    Returns tclean's iterdone, stopcode and nmajordone."""
    os.makedirs(os.path.dirname(imagename), exist_ok=True)
    out = subprocess.run([sys.executable, "-c", _FRESH_TCLEAN, json.dumps(dict(vis=ms, **kwargs)), imagename],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1])


def channel_errors(got: str, ref: str, suffix: str, scale_suffix: str | None = None) -> np.ndarray:
    """Largest |difference| per channel, over the peak of the reference (`scale_suffix`'s peak if given)."""
    a, b = pixels(got + suffix), pixels(ref + suffix)
    assert a.shape == b.shape, (suffix, a.shape, b.shape)
    peak = float(np.max(np.abs(pixels(ref + (scale_suffix or suffix)))))
    return np.max(np.abs(a - b), axis=(0, 1, 2)) / max(peak, 1e-30)


def assert_cube_matches(got: str, ref: str, tol: float, products=(".image", ".residual", ".model", ".psf",
                                                                  ".pb", ".sumwt")) -> dict[str, float]:
    """Every product within `tol` of its peak (image-like products: of the image's peak), channel by
    channel; the frequency axis to 1e-9, beams and sums of weights to 1e-6."""
    worst = {}
    for suffix in products:
        if not os.path.isdir(ref + suffix):
            continue
        scale = ".image" if suffix in (".residual", ".model") else None
        err = channel_errors(got, ref, suffix, scale)
        worst[suffix] = float(err.max())
        assert worst[suffix] <= tol, (suffix, err)
    np.testing.assert_allclose(frequencies(got + ".image"), frequencies(ref + ".image"), rtol=1e-9, atol=0)
    np.testing.assert_allclose(np.array(beams(got + ".image")), np.array(beams(ref + ".image")), rtol=1e-6)
    np.testing.assert_allclose(pixels(got + ".sumwt"), pixels(ref + ".sumwt"), rtol=1e-6)
    return worst
