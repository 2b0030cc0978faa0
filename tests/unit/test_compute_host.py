"""The cluster host on this machine (LocalCluster): up/status/down, idempotence, crash clean-up."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from pclean_provider.cli import cluster as cluster_cli
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.host import host_status, start_host, stop_host
from pclean_provider.config.cluster import ClusterSpec
from tests.conftest import casa_available, require
from tests.unit.host_helpers import session_members

pytestmark = pytest.mark.casa


@pytest.fixture(autouse=True)
def _casa():
    require("casatools", casa_available(), "run `make setup`")


def test_cli_up_twice_is_one_cluster_and_down_twice_is_fine(tmp_path, capsys):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("cluster_type: local\nnworkers: 2\n")
    afile = tmp_path / "run" / "cluster.json"
    try:
        assert cluster_cli.main(["up", "--spec", str(spec_file), "--address-file", str(afile)]) == 0
        first = capsys.readouterr().out.strip()
        info = json.loads(afile.read_text())
        assert info["scheduler_address"] == first and info["state"] == "running"
        assert info["cluster_type"] == "local" and info["dashboard_link"].startswith("http")
        assert psutil.pid_exists(info["host_pid"])
        # The host is detached: its own session, so the caller's terminal or task can end.
        assert os.getsid(info["host_pid"]) == info["host_pid"] != os.getsid(0)

        assert cluster_cli.main(["up", "--spec", str(spec_file), "--address-file", str(afile)]) == 0
        assert capsys.readouterr().out.strip() == first
        assert json.loads(afile.read_text())["host_pid"] == info["host_pid"]

        assert cluster_cli.main(["status", "--address-file", str(afile)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["state"] == "running" and status["workers"] == 2
    finally:
        assert cluster_cli.main(["down", "--address-file", str(afile)]) == 0
    assert not afile.exists()
    assert not session_members(info["host_pid"])
    assert cluster_cli.main(["down", "--address-file", str(afile)]) == 0
    assert cluster_cli.main(["status", "--address-file", str(afile)]) == 3


def test_down_after_host_crash_removes_its_workers(tmp_path):
    afile = tmp_path / "c.json"
    start_host(ClusterSpec(nworkers=1), afile)
    pid = json.loads(afile.read_text())["host_pid"]
    workers_before = [p for p in session_members(pid) if p != pid]
    assert workers_before, "the LocalCluster's worker processes should live in the host's session"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while host_status(afile).state != "crashed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert host_status(afile).state == "crashed"
    before = stop_host(afile)
    assert before.state == "crashed"
    assert not session_members(pid)
    assert host_status(afile).state == "stopped"


def test_a_host_that_cannot_start_reports_why(tmp_path):
    dead = "tcp://127.0.0.1:9"  # discard port: nothing answers Dask there
    with pytest.raises(ClusterError) as err:
        start_host(ClusterSpec(scheduler_address=dead, worker_start_timeout=2), tmp_path / "x.json")
    assert dead in str(err.value)
    assert host_status(tmp_path / "x.json").state == "stopped"


def test_foreground_up_stops_the_host_on_sigterm(tmp_path):
    # The docker deployment's dask-host runs `pclean cluster up --foreground` as its main process:
    # a container stop (SIGTERM) must take the host and its workers down, not orphan them.
    import subprocess
    import sys

    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("cluster_type: local\nnworkers: 1\n")
    afile = tmp_path / "cluster.json"
    proc = subprocess.Popen([sys.executable, "-m", "pclean_provider", "cluster", "up", "--foreground",
                             "--spec", str(spec_file), "--address-file", str(afile)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while host_status(afile).state != "running" and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.5)
        host_pid = json.loads(afile.read_text())["host_pid"]
        time.sleep(1.0)
        assert proc.poll() is None, "--foreground must not return while the host runs"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_host(afile)
    assert host_status(afile).state != "running"
    assert not session_members(host_pid)
