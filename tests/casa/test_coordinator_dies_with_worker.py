"""The coordinator subprocess (continuum, and the exact cube loop) dies with the Dask worker process
that started it: a lost worker must not leave a coordinator driving the parts beside the retry's."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.casa

# Stands in for the Dask worker: starts the coordinator the way coordinator_task does, says its pid,
# then waits to be killed.
_PARENT = r"""
import os, subprocess, sys, time
cmd = [sys.executable, "-m", "pclean_provider.engine.coordinator", "--config", sys.argv[1],
       "--scheduler", sys.argv[2], "--result", sys.argv[3], "--parent-pid", str(os.getpid())]
child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_the_coordinator_dies_when_its_worker_is_killed(tmp_path, small_ms):
    from pclean_provider.config import PcleanConfig

    config = tmp_path / "config.json"
    config.write_text(PcleanConfig.from_flat(vis=str(small_ms.ms), imagename=str(tmp_path / "img"),
                                             specmode="mfs").model_dump_json())
    # A "scheduler" that accepts and never answers: the coordinator waits in its connect (60 s), so
    # only its parent's death can end it within the test's bound.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(config), address, str(tmp_path / "r.json")],
                                  stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
        coordinator = psutil.Process(int(parent.stdout.readline()))
        try:
            # Connected (or still starting): alive, and a child of the stand-in worker.
            assert coordinator.is_running() and coordinator.ppid() == parent.pid
            parent.kill()
            parent.wait(timeout=30)
            coordinator.wait(timeout=20)  # SIGTERM from the kernel, long before the connect gives up
        finally:
            if coordinator.is_running():
                coordinator.kill()
    assert not (tmp_path / "r.json").exists(), "it stopped, it did not finish"
