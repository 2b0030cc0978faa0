"""One real SLURM for the whole test session, started by the project's own script.

The session fixture runs start-local-slurm.sh (idempotent; it says whether it started the daemons
or found them running) and stops SLURM at the end only if it started it and PCLEAN_SLURM_KEEP is
unset. In CI a SLURM that does not come up fails the tests; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require

HERE = Path(__file__).resolve().parent
PARTITION = "debug"


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory):
    env = dict(os.environ, PCLEAN_SLURM_PARTITION=PARTITION)
    if os.geteuid() != 0 and not IN_CI:
        require("a local SLURM", False, "tests/slurm/start-local-slurm.sh needs root")
    proc = subprocess.run(["bash", str(HERE / "start-local-slurm.sh")], capture_output=True, text=True,
                          env=env, timeout=600)
    require("a local SLURM", proc.returncode == 0,
            f"tests/slurm/start-local-slurm.sh failed: {proc.stderr.strip()[-800:]}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    conf = values["SLURM_CONF"]
    previous = os.environ.get("SLURM_CONF")
    # Every sbatch/squeue of the code under test (and its child processes) must find this SLURM.
    os.environ["SLURM_CONF"] = conf
    yield {"conf": conf, "partition": PARTITION, "started": values.get("PCLEAN_SLURM") == "started"}
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if values.get("PCLEAN_SLURM") == "started" and not os.environ.get("PCLEAN_SLURM_KEEP"):
        subprocess.run(["bash", str(HERE / "stop-local-slurm.sh")], capture_output=True, text=True, timeout=300)


@pytest.fixture
def job_name():
    """A job name unique to one test, so orphan checks see only that test's jobs."""
    return f"pclean-test-{uuid.uuid4().hex[:8]}"


def live_jobs(name: str) -> list[dict[str, str]]:
    from pclean_provider.compute.slurm import LIVE_STATES, list_jobs

    return [j for j in list_jobs(name) if j["state"] in LIVE_STATES]


def slurm_spec(tmp_path, **overrides):
    from pclean_provider.config.cluster import ClusterSpec

    fields = dict(cluster_type="slurm", nworkers=2, slurm_queue=PARTITION, slurm_job_mem="2GB",
                  slurm_walltime="00:15:00", slurm_log_directory=str(tmp_path / "slurm-logs"),
                  worker_start_timeout=90)
    fields.update(overrides)
    return ClusterSpec(**fields)
