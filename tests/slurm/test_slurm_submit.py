"""`pclean submit`: a whole pclean run as a SLURM batch job, end to end."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from pclean_provider.cli import submit as submit_cli
from tests.slurm.conftest import PARTITION

pytestmark = [pytest.mark.slurm, pytest.mark.casa]


def _wait_for_job(job_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        if out.strip() in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return
        time.sleep(1)
    raise AssertionError(f"SLURM job {job_id} still running after {timeout} s")


def test_submitted_coordinator_makes_the_cube(local_slurm, small_ms, tmp_path, capsys, monkeypatch):
    (tmp_path / "out").mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "vis": str(small_ms.ms), "imagename": "out/cube", "specmode": "cube", "nchan": 4, "imsize": [64, 64],
        "cell": "10arcsec", "niter": 0, "slurm_queue": PARTITION, "slurm_job_mem": "2GB",
        "slurm_walltime": "00:10:00", "slurm_log_directory": "jobs"}))
    monkeypatch.chdir(tmp_path)  # relative imagename: the job runs in the submitting directory
    assert submit_cli.main([str(config), "--time=00:05:00"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.isdigit()
    _wait_for_job(job_id)
    log = (tmp_path / "jobs" / f"pclean-cube-{job_id}.out").read_text()
    assert f"pclean coordinator {job_id}" in log
    for product in ("image", "psf", "residual", "pb", "sumwt"):
        assert (tmp_path / "out" / f"cube.{product}").is_dir(), f"cube.{product} missing; job log:\n{log[-2000:]}"
    # The config the job ran is the frozen copy next to the script, not the editable original.
    (frozen,) = (tmp_path / "jobs").glob("pclean-cube-*.config.yaml")
    assert yaml.safe_load(frozen.read_text())
    assert not list(tmp_path.glob("casa-*.log")) and os.path.isdir(tmp_path / "jobs")
