"""A `pclean` step stopped by Airflow (its execution_timeout raises in the task's main thread) takes
its subprocess, and whatever that started, down with it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest


class StepTimeout(Exception):
    """Stands in for Airflow's AirflowTaskTimeout, raised the same way (from a SIGALRM handler)."""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # killed, waiting only for its parent (init for the orphan) to reap it


def test_a_timeout_stops_the_step_and_its_children(tmp_path, monkeypatch):
    from pclean_provider.dags import pclean_subprocess

    pids = tmp_path / "pids"
    # The step starts a child of its own (as CASA may) and both would run for two minutes.
    script = ("import os, subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              f"open({str(pids)!r} + '.tmp', 'w').write(f'{{os.getpid()}} {{c.pid}}'); "
              f"os.rename({str(pids)!r} + '.tmp', {str(pids)!r}); time.sleep(120)")
    monkeypatch.setattr(pclean_subprocess, "pclean_command", lambda: [sys.executable, "-c", script])

    def timeout_once_running(signum, frame):
        if pids.exists():
            raise StepTimeout

    previous = signal.signal(signal.SIGALRM, timeout_once_running)
    signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)
    try:
        with pytest.raises(StepTimeout):
            pclean_subprocess.run_pclean([], tmp_path / "logs")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    step, child = (int(p) for p in pids.read_text().split())
    assert _gone(step), "the step's subprocess outlived its task"
    for _ in range(50):  # the orphaned child is reaped by init asynchronously
        if _gone(child):
            break
        os.sched_yield()
    assert _gone(child), "a process the step started outlived its task"


def test_the_template_sets_the_steps_execution_timeout():
    from datetime import timedelta

    from pclean_provider.dags.pclean_subprocess import step_timeout
    from pclean_provider.pipeline.pipeline_template import load_templates

    for t in load_templates():
        assert step_timeout(t) == timedelta(minutes=t.step_timeout_minutes) > timedelta(0)


def test_a_step_gets_none_of_the_airflow_worker_s_secrets(tmp_path, monkeypatch, capsys):
    """The step reads MSs that came from outside; the worker's database URL and keys stay with it."""
    from pclean_provider.dags import pclean_subprocess

    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:s3cret@db/airflow")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "s3cret")
    monkeypatch.setenv("PCLEAN_DATA_ROOT", str(tmp_path))
    monkeypatch.setattr(pclean_subprocess, "pclean_command",
                        lambda: [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"])
    run = pclean_subprocess.run_pclean([], tmp_path / "logs")
    assert run.returncode == 0
    assert "s3cret" not in run.stdout and f'"PCLEAN_DATA_ROOT": "{tmp_path}"' in run.stdout
