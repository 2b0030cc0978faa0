"""Two tries of one sub-cube: the older one (a cleared try still running in CASA) finishes last.

The older try runs in its own process and stops just before its swap (on a FIFO the test holds);
the newer try then images the sub-cube here and publishes it; released, the older try must find
that it no longer owns the folder and discard its output. Order by the FIFO, not by timing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def spec(casa_runtime, tmp_path_factory):
    from pclean_provider.casa.simulator import simulate_ms
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.cube.plan import plan_subcubes

    root = tmp_path_factory.mktemp("fence")
    ms = simulate_ms(root / "fence.ms", nchan=4, antennas=6, hours=0.25, seed=5).ms
    cfg = PcleanConfig.from_flat(vis=ms, imagename=str(root / "out" / "fence"), specmode="cube", imsize=[32, 32],
                                 cell="12arcsec", niter=0, cube_engine="independent", cube_chunksize=2)
    return plan_subcubes(cfg, nworkers=1).specs[1]


def test_older_try_finishing_last_keeps_the_newer_products(spec, tmp_path):
    from pclean_provider.casa.runtime import casa_env
    from pclean_provider.engine.cube.subcube import PAUSE_BEFORE_SWAP_ENV, image_subcube

    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    env = {**os.environ, **casa_env(), "PYTHONPATH": str(REPO), PAUSE_BEFORE_SWAP_ENV: str(fifo)}
    older = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pclean_provider.engine.cube.subcube import image_subcube; "
         "image_subcube(open(sys.argv[1]).read())", str(spec_file)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        err_lines = []
        for line in older.stderr:  # blocks until the older try has imaged and waits before its swap
            err_lines.append(line)
            if "paused before swap" in line:
                break
        else:
            pytest.fail("the older try ended before its swap:\n" + "".join(err_lines))
        newer = image_subcube(spec)  # the retry: claims the folder after the older one did
        mark = os.path.join(spec.subcube_dir, "written-by-the-newer-try")
        open(mark, "w").close()
        with open(fifo, "w") as release:
            release.write("go\n")
        rest = older.stderr.read()
        assert older.wait(timeout=120) != 0
    finally:
        if older.poll() is None:
            os.killpg(older.pid, 9)
            older.wait()
    assert "SubcubeSuperseded" in rest and "newer try" in rest, rest
    assert os.path.exists(mark), "the older try replaced the newer try's products"
    assert ".image" in newer.products and os.path.isdir(newer.product_prefix + ".image")
    parent = os.path.dirname(spec.subcube_dir)
    leftovers = [p for p in os.listdir(parent) if ".tmp-" in p or ".old-" in p or p.endswith(".claim")]
    assert leftovers == []
