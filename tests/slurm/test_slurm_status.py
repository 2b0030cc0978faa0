"""`pclean cluster status` on a SLURM cluster host that runs without a single worker."""

from __future__ import annotations

import json

import pytest
import yaml

from pclean_provider.cli import cluster as cluster_cli
from tests.conftest import casa_available, require
from tests.slurm.conftest import PARTITION, live_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.casa]


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")


def test_status_fails_when_the_host_has_no_workers(tmp_path, capsys, job_name):
    # Adaptive from zero with nothing to do: the host runs, SLURM holds no job, no worker exists.
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump({
        "cluster_type": "slurm", "adaptive": True, "adaptive_minimum": 0, "adaptive_maximum": 1,
        "slurm_queue": PARTITION, "slurm_job_mem": "2GB", "slurm_walltime": "00:15:00",
        "slurm_job_name": job_name, "slurm_log_directory": str(tmp_path / "logs"), "worker_start_timeout": 60}))
    afile = tmp_path / "cluster.json"
    try:
        assert cluster_cli.main(["up", "--spec", str(spec_file), "--address-file", str(afile)]) == 0
        capsys.readouterr()
        assert cluster_cli.main(["status", "--address-file", str(afile)]) == cluster_cli.EXIT_NO_WORKERS == 4
        out, err = capsys.readouterr()
        status = json.loads(out)
        assert status["state"] == "running" and status["workers"] == 0
        assert "runs but has no workers" in err
    finally:
        assert cluster_cli.main(["down", "--address-file", str(afile)]) == 0
    assert cluster_cli.main(["status", "--address-file", str(afile)]) == cluster_cli.EXIT_NOT_RUNNING
    assert live_jobs(job_name) == []
