"""The project's own SLURM scripts: idempotent start, a stop that touches only what it started."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slurm


def test_start_again_finds_it_running(local_slurm):
    proc = subprocess.run(["bash", str(HERE / "start-local-slurm.sh")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "PCLEAN_SLURM=running"
    assert f"SLURM_CONF={local_slurm['conf']}" in proc.stdout
    sinfo = subprocess.run(["sinfo", "-h", "-p", local_slurm["partition"], "-o", "%a %D"], capture_output=True,
                           text=True)
    assert sinfo.stdout.split() == ["up", "1"]


def test_node_has_the_machines_cpus(local_slurm):
    # Not fewer: a config written from a process with OMP_NUM_THREADS=1 once booked one CPU only.
    detected = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    cpus = int(detected.split("CPUs=")[1].split()[0])
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True).stdout.split()
    assert node and int(node[0]) == cpus


def test_stop_with_nothing_started_here_touches_nothing(tmp_path, local_slurm):
    proc = subprocess.run(["bash", str(HERE / "stop-local-slurm.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PCLEAN_SLURM_DIR": str(tmp_path)}, timeout=60)
    assert proc.returncode == 0 and "nothing to stop" in proc.stderr
    # The session's SLURM is still there.
    assert subprocess.run(["sinfo", "-h"], capture_output=True, text=True).returncode == 0
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).returncode == 0


def test_client_role_joins_the_running_cluster(local_slurm):
    # The docker deployment's dask-host runs this script as a "client": no daemons of its own,
    # just munge and the shared slurm.conf. On the one-node SLURM it must find the cluster answering.
    env = dict(PATH="/usr/sbin:/usr/bin:/sbin:/bin", PCLEAN_SLURM_ROLE="client", PCLEAN_SLURM_PARTITION="debug")
    proc = subprocess.run(["bash", str(HERE / "start-local-slurm.sh")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "PCLEAN_SLURM=running"
    assert "SLURM_CONF=/etc/slurm/slurm.conf" in proc.stdout


def test_unknown_role_is_refused_naming_the_variable():
    proc = subprocess.run(["bash", str(HERE / "start-local-slurm.sh")], capture_output=True, text=True,
                          env=dict(PATH="/usr/sbin:/usr/bin:/sbin:/bin", PCLEAN_SLURM_ROLE="login"), timeout=60)
    assert proc.returncode == 1
    assert "PCLEAN_SLURM_ROLE=login" in proc.stderr
