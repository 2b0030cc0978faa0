"""`pclean cluster up|status|down` with SLURM workers, including `down` after the host was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from pclean_provider.cli import cluster as cluster_cli
from pclean_provider.compute.host import host_status
from tests.conftest import casa_available, require
from tests.slurm.conftest import PARTITION, live_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.casa]


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")


def test_host_survives_nothing_but_down_and_down_cleans_up_after_kill_9(tmp_path, capsys, job_name, monkeypatch):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump({
        "cluster_type": "slurm", "nworkers": 2, "slurm_queue": PARTITION, "slurm_job_mem": "2GB",
        "slurm_walltime": "00:15:00", "slurm_job_name": job_name, "slurm_log_directory": "logs",
        "worker_start_timeout": 90}))
    afile = tmp_path / "cluster.json"
    monkeypatch.chdir(tmp_path)  # the spec's relative log folder is resolved against the caller's cwd
    up = ["up", "--spec", str(spec_file), "--address-file", str(afile)]
    try:
        assert cluster_cli.main(up) == 0
        address = capsys.readouterr().out.strip()
        info = json.loads(afile.read_text())
        assert info["scheduler_address"] == address and info["cluster_type"] == "slurm"
        assert info["slurm_job_name"] == job_name and info["dashboard_link"]
        assert [j["state"] for j in live_jobs(job_name)] == ["RUNNING", "RUNNING"]
        assert (tmp_path / "logs").is_dir()

        assert cluster_cli.main(up) == 0  # idempotent: same host, same jobs
        assert capsys.readouterr().out.strip() == address
        assert len(live_jobs(job_name)) == 2

        os.kill(info["host_pid"], signal.SIGKILL)  # the host crashes
        # Running workers notice the lost scheduler and end their jobs by themselves, sometimes
        # within a second; what outlives a crash is a job that had not started yet (pending in a
        # busy queue). Stand one in with the workers' name, as the host would have left it.
        stray = subprocess.run(["sbatch", "--parsable", f"--job-name={job_name}", f"--partition={PARTITION}",
                                "--begin=now+3600", "--wrap", "sleep 600"], capture_output=True, text=True)
        assert stray.returncode == 0, stray.stderr
        deadline = time.monotonic() + 10
        while host_status(afile).state != "crashed" and time.monotonic() < deadline:
            time.sleep(0.2)
        status = host_status(afile)
        assert status.state == "crashed" and status.slurm_jobs, status
        assert cluster_cli.main(["status", "--address-file", str(afile)]) == 3
    finally:
        assert cluster_cli.main(["down", "--address-file", str(afile)]) == 0
    assert live_jobs(job_name) == []
    assert not afile.exists()
    assert cluster_cli.main(["down", "--address-file", str(afile)]) == 0
