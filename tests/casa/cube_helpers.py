"""Serial tclean references and cube comparisons shared by the cube tests."""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.image_compare import beams, frequencies, pixels

# A process that has imported CASA and done nothing with it; each reference is a child forked from
# it. The child starts where a fresh interpreter would be after `import casatasks`, without paying
# for that import (about 2.5 CPU-seconds) once per reference.
_ZYGOTE = """
import json, os, sys, traceback
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime(log_dir=sys.argv[1])
import casatasks
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(2, 1)  # the parent's stdout is the protocol: CASA's prints go to stderr
            folder = os.path.dirname(req["imagename"])
            ensure_casa_runtime(log_dir=folder)
            os.chdir(folder)  # tclean's scratch files go to the cwd
            ret = casatasks.tclean(imagename=req["imagename"], **req["kwargs"]) or {}
            out = {k: (ret.get(k).item() if hasattr(ret.get(k), "item") else ret.get(k))
                   for k in ("iterdone", "stopcode", "nmajordone")}
            with open(req["result"] + ".partial", "w") as fh:
                json.dump(out, fh)
            os.replace(req["result"] + ".partial", req["result"])
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""

REFERENCE_TIMEOUT_S = 600
_zygote: subprocess.Popen | None = None
_zygote_log: Path | None = None


def _reference_process() -> subprocess.Popen:
    """This test process's zygote, started on first use and ended with the process."""
    global _zygote, _zygote_log
    if _zygote is None or _zygote.poll() is not None:
        _zygote_log = Path(tempfile.mkdtemp(prefix="pclean-tclean-refs-"))
        _zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(_zygote_log)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=open(_zygote_log / "stderr.txt", "w"),
                                   text=True, cwd=Path(__file__).resolve().parents[2])
        ready = _zygote.stdout.readline()
        assert ready.startswith('{"ready"'), f"the tclean reference process did not start: see {_zygote_log}"
        atexit.register(_zygote.kill)
    return _zygote


def tclean_fresh(ms: str, imagename: str, **kwargs) -> dict:
    """Serial tclean in a process that has done nothing with casatools but import it, as a Dask
    worker starts. CASA's frame conversion of a partly covered edge channel depends on what the
    process did with casatools before (this one simulated MeasurementSets), so references for
    worker results come from such a process: a child forked from this test process's zygote.
    Returns tclean's iterdone, stopcode and nmajordone."""
    os.makedirs(os.path.dirname(imagename), exist_ok=True)
    result = imagename + ".tclean.json"
    zygote = _reference_process()
    zygote.stdin.write(json.dumps({"imagename": imagename, "kwargs": dict(vis=ms, **kwargs), "result": result})
                       + "\n")
    zygote.stdin.flush()
    # A child that never ends (it should take seconds) fails its test instead of holding the run.
    ready, _, _ = select.select([zygote.stdout], [], [], REFERENCE_TIMEOUT_S)
    if not ready:
        zygote.kill()
        raise AssertionError(f"serial tclean took over {REFERENCE_TIMEOUT_S} s; see {_zygote_log}/stderr.txt")
    reply = json.loads(zygote.stdout.readline() or '{"exit": "no reply"}')
    assert reply.get("exit") == 0, f"serial tclean failed ({reply}); its traceback is in {_zygote_log}/stderr.txt"
    with open(result, encoding="utf-8") as fh:
        return json.load(fh)


def pclean_and_tclean(ms: str, tmp_path: Path, client, extras: dict | None = None, *, imaging: dict, **kwargs):
    """pclean() on the Dask `client` and serial tclean (tclean_fresh) with the same parameters: the
    module's `imaging` updated by `kwargs`; `extras` go to pclean alone. Returns the PcleanResult,
    tclean's summary, and the two image names (without suffix)."""
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    args = {**imaging, **kwargs}
    ref = tclean_fresh(ms, str(tmp_path / "ref" / "ref"), **args)
    cfg = PcleanConfig.from_flat(vis=ms, imagename=str(tmp_path / "par"), parallel=True, **args, **(extras or {}))
    result = run(cfg, client=client)
    return result, ref, str(tmp_path / "par"), str(tmp_path / "ref" / "ref")


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
