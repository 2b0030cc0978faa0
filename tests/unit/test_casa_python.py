"""[pclean] casa_python: the interpreter of the CASA environment that steps and cluster hosts start with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pclean_provider import casa_python as cp
from tests.conftest import casa_available, require


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No setting, and nothing checked yet in this process."""
    monkeypatch.delenv(cp.ENV, raising=False)
    monkeypatch.setattr(cp, "_checked", set())
    return monkeypatch


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_unset_or_empty_is_this_interpreter(fresh):
    assert cp.casa_python() == sys.executable
    fresh.setenv(cp.ENV, "  ")
    assert cp.casa_python() == sys.executable


def test_a_casa_python_is_checked_once_per_process(fresh):
    # A skip on a developer machine without CASA, a failure in CI (CI=true).
    require("casatools", casa_available(), "run `make setup`")
    fresh.setenv(cp.ENV, sys.executable)
    calls = []
    real = subprocess.run

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    fresh.setattr(cp.subprocess, "run", counting)
    assert cp.casa_python() == sys.executable
    assert cp.casa_python() == sys.executable
    assert len(calls) == 1 and calls[0][0] == sys.executable


@pytest.mark.parametrize("case", ["relative", "missing", "folder", "not executable", "no casatools", "broken"])
def test_a_wrong_setting_is_refused_naming_it_and_the_fix(fresh, tmp_path, case):
    value = {
        "relative": "bin/python",
        "missing": str(tmp_path / "nowhere" / "python"),
        "folder": str(tmp_path),
        "not executable": str(tmp_path / "python"),
        # No site-packages (-S): this very Python without casatools.
        "no casatools": _script(tmp_path / "bare-python", f'exec "{sys.executable}" -S "$@"'),
        "broken": _script(tmp_path / "broken-python", "echo 'no such module: encodings' >&2; exit 3"),
    }[case]
    if case == "not executable":
        Path(value).write_text("not a program")
    fresh.setenv(cp.ENV, value)
    with pytest.raises(cp.CasaPythonError) as err:
        cp.casa_python()
    message = str(err.value)
    assert "[pclean] casa_python" in message and "AIRFLOW__PCLEAN__CASA_PYTHON" in message
    assert value in message and "casa extra" in message
    expected = {"relative": "not an absolute path", "missing": "does not exist", "folder": "not an executable",
                "not executable": "not an executable", "no casatools": "cannot import casatools",
                "broken": "no such module: encodings"}[case]
    assert expected in message
    # Not remembered as good: fixing the setting is seen by the next task of this process.
    assert value not in cp._checked


def test_the_steps_run_with_the_casa_python(fresh, tmp_path):
    """The `pclean` subprocess of a task starts with the configured interpreter, a bad one fails the task
    without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.dags import pclean_subprocess

    seen = tmp_path / "argv0"
    # A CASA python that says it has casatools and records what it was asked to run.
    fake = _script(tmp_path / "casa-python",
                   f'case "$2" in *find_spec*) exit 0;; esac; echo "$0 $*" > "{seen}"')
    fresh.setenv(cp.ENV, fake)
    assert pclean_subprocess.pclean_command() == [fake, "-m", "pclean_provider.cli.main"]
    assert pclean_subprocess.run_pclean(["presets"], tmp_path / "logs").returncode == 0
    assert seen.read_text().split() == [fake, "-m", "pclean_provider.cli.main", "presets"]

    fresh.setenv(cp.ENV, str(tmp_path / "missing"))
    with pytest.raises(AirflowFailException, match=r"\[pclean\] casa_python"):
        pclean_subprocess.run_pclean(["presets"], tmp_path / "logs")


def test_a_cluster_host_is_not_started_with_a_bad_casa_python(fresh, tmp_path):
    from pclean_provider.compute.errors import ClusterError
    from pclean_provider.compute.host import host_status, start_host
    from pclean_provider.config.cluster import ClusterSpec

    fresh.setenv(cp.ENV, str(tmp_path / "missing"))
    folder = tmp_path / "cluster"
    folder.mkdir(mode=0o700)
    address_file = folder / "cluster.address"
    with pytest.raises(ClusterError, match=r"\[pclean\] casa_python .* does not exist"):
        start_host(ClusterSpec(cluster_type="local", nworkers=1), address_file)
    assert host_status(address_file).state == "stopped"
    assert not os.path.exists(f"{address_file}.host.json")
