"""Publishing real products: FITS with checksums, manifest and provenance, crash safety, verify.

The crash tests run ``pclean archive publish`` in a subprocess that stops at a named point
(PCLEAN_ARCHIVE_PAUSE_AT) and SIGKILL it there, so the kill lands at a known step instead of
at a random time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def product(small_ms, tmp_path_factory):
    from casatasks import tclean

    from pclean_provider.pipeline.qa import run_qa

    out = tmp_path_factory.mktemp("archive-products")
    name = str(out / "cube")
    tclean(
        vis=small_ms.ms, imagename=name, imsize=small_ms.suggested_imsize, cell=small_ms.suggested_cell,
        phasecenter=small_ms.phasecenter, specmode="cube", nchan=4, width=8, niter=200, threshold="20mJy",
        pbcor=True,
    )
    run_qa(name, kind="cube", out_dir=name + ".qa", html=False)
    return name


def _publish_cli(args: list[str], pause_at: str, cwd: Path) -> subprocess.Popen:
    from pclean_provider.casa.runtime import casa_env

    env = dict(os.environ)
    env.update(casa_env())
    env["PCLEAN_ARCHIVE_PAUSE_AT"] = pause_at
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "pclean_provider.cli.main", "archive", "publish", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for_pause(proc: subprocess.Popen, point: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if f"paused at {point}" in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"publisher never reached {point}; rc={proc.poll()}")


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()


def test_publish_writes_checksummed_fits_and_manifest(product, small_ms, tmp_path):
    from astropy.io import fits

    from pclean_provider.pipeline.archive import publish, verify
    from pclean_provider.pipeline.fits_provenance import read_provenance

    config = {"vis": small_ms.ms, "imagename": product, "specmode": "cube", "nchan": 4, "niter": 200}
    result = publish(product, tmp_path / "archive", "cube_test", vis=small_ms.ms, config=config,
                     dag_run_id="manual__2026-01-01")
    folder = Path(result.path)
    assert result.version == 1 and folder == tmp_path / "archive" / "cube_test" / "v0001"
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"cube.image.fits", "cube.image.pbcor.fits", "cube.residual.fits", "cube.pb.fits", "cube.mask.fits",
            "manifest.json", "qa/qa.json", "qa/qa.schema.json"} <= names
    with fits.open(folder / "cube.image.fits", checksum=True) as hdul:
        assert "CHECKSUM" in hdul[0].header and "DATASUM" in hdul[0].header
        assert hdul[0].header["NAXIS3"] == 4
        assert hdul[0].verify_checksum() == 1
    # Every archived file carries its provenance and passes the standard's checks.
    for name in ("cube.image.fits", "cube.pb.fits", "cube.mask.fits"):
        with fits.open(folder / name, checksum=True) as hdul:
            hdul.verify("exception")
            found = read_provenance(hdul[0].header)
        assert found["ORIGIN"] == "pclean_provider" and found["PRODID"] == "cube_test"
        assert found["RUNID"] == "manual__2026-01-01" and found["CASATOOL"] and found["PCLVER"]
        assert found["ms"] == [(Path(small_ms.ms).name, result_inputs_ms(folder)[Path(small_ms.ms).name])]
        assert 0.0 <= found["QASCORE"] <= 1.0 and found["QABAND"]
        assert found["params"] == {k: v for k, v in config.items()}

    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert listed == names - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    prov = manifest["provenance"]
    assert prov["imaging_config"] == config and prov["dag_run_id"] == "manual__2026-01-01"
    assert prov["input_ms"] == [small_ms.ms] and prov["ms_metadata"][0]["nrows"] == small_ms.nrows
    assert prov["versions"]["casatools"] and prov["versions"]["provider"] and "airflow" in prov["versions"]
    assert prov["qa"]["overall_score"] is not None and prov["qa"]["scores"]
    obs = manifest["obscore"]
    assert obs["dataproduct_type"] == "cube"
    assert obs["s_ra"] == pytest.approx(180.0, abs=0.01) and obs["s_dec"] == pytest.approx(40.0, abs=0.01)
    assert 0.20 < obs["em_min"] < obs["em_max"] < 0.22  # 1.384-1.416 GHz in metres
    assert obs["t_min"] < obs["t_max"] and 50000 < obs["t_min"] < 70000
    assert 10 < obs["s_resolution"] < 60
    assert obs["em_xel"] == 4 and obs["s_xel1"] == obs["s_xel2"] == small_ms.suggested_imsize
    assert obs["pol_states"] == "/I/" and obs["pol_xel"] == 1 and obs["em_res_power"] > 1
    assert verify(folder).ok
    assert "sys.modules" not in json.dumps(prov)  # provenance is plain data


def result_inputs_ms(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["provenance"]["inputs"]["ms"]


def test_verify_cli_names_flipped_byte_and_missing_file(product, tmp_path):
    from pclean_provider.cli.archive import main
    from pclean_provider.pipeline.archive import publish

    result = publish(product, tmp_path / "archive", "cube_verify")
    folder = Path(result.path)
    assert main(["verify", str(folder)]) == 0

    target = folder / "cube.residual.fits"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "pclean_provider.cli.main", "archive", "verify", str(folder)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode != 0
    assert "cube.residual.fits" in proc.stdout and "SHA-256" in proc.stdout
    assert "cube.image.fits" not in proc.stdout

    (folder / "cube.image.pbcor.fits").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "pclean_provider.cli.main", "archive", "verify", str(tmp_path / "archive")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode != 0
    assert "cube.image.pbcor.fits: missing" in proc.stdout


def test_killed_publish_leaves_no_partial_product_and_rerun_versions(product, tmp_path):
    from pclean_provider.pipeline.archive import list_versions, publish, verify

    root = tmp_path / "archive"
    args = ["--image", product, "--archive-root", str(root), "--product-id", "cube_crash"]

    # 1. Killed after the manifest is written, just before the rename: nothing visible.
    proc = _publish_cli(args, "manifest-written", tmp_path)
    _wait_for_pause(proc, "manifest-written")
    _kill(proc)
    assert not (root / "cube_crash").exists() or list(os.scandir(root / "cube_crash")) == []
    leftovers = [p for p in (root / ".staging").iterdir() if p.is_dir()]
    assert len(leftovers) == 1 and (leftovers[0] / "manifest.json").exists()

    # 2. The next publish cleans the leftover and makes version 1.
    first = publish(product, root, "cube_crash")
    assert first.version == 1 and first.removed_staging == [str(leftovers[0])]
    assert [p for p in (root / ".staging").iterdir()] == []
    v1_manifest = Path(first.manifest).read_bytes()

    # 3. A publish killed half way (FITS written, no manifest) shows nothing and keeps version 1
    #    intact. (Under another product id: the same product again would not be staged at all,
    #    its inputs are already published.)
    proc = _publish_cli([*args[:-1], "cube_crash_other"], "fits-written", tmp_path)
    _wait_for_pause(proc, "fits-written")
    _kill(proc)
    assert list_versions(root / "cube_crash") == [1] and list_versions(root / "cube_crash_other") == []
    assert verify(first.path).ok

    # 4. A rerun of the unchanged product cleans the killed attempt's folder and returns version 1
    #    (same input fingerprints: nothing new to publish; test_archive_idempotent.py has the rest).
    second = publish(product, root, "cube_crash")
    assert second.version == 1 and second.already_published
    assert len(second.removed_staging) == 1  # the killed attempt's folder
    assert list_versions(root / "cube_crash") == [1]
    assert Path(first.manifest).read_bytes() == v1_manifest
    assert verify(first.path).ok


def test_publish_rejects_bad_arguments_early(tmp_path):
    from pclean_provider.pipeline.archive import ArchiveError, publish

    with pytest.raises(ArchiveError, match="image="):
        publish(tmp_path / "missing", tmp_path / "archive", "x")
    assert not (tmp_path / "archive").exists()
