"""The trigger form is data, never code: a real dag.test() of the shipped cube DAG refuses, in its
first task, a conf whose cluster_options carry a job-script prologue and a conf whose path names an
environment variable; nothing downstream runs, and the variable's value reaches no log, no folder
and not Airflow's database."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_nightly_dags import DATA_ROOT, SMALL_CUBE, project_dags, run_dag, task_states

pytestmark = [pytest.mark.airflow]

DAG_ID = "nightly_cube_imaging"
SECRET_VALUE = "pclean-test-secret-4f1d9c"


@pytest.fixture(scope="module")
def cube_dag():
    return project_dags()[DAG_ID]


def task_failure_reason(run) -> str:
    from pclean_provider.pipeline.notify import read_notifications

    return [n for n in read_notifications(DATA_ROOT / "notifications") if n.run_id == run.run_id][-1].reason


def assert_refused_in_first_task(run, expected: str) -> None:
    from pclean_provider.pipeline.notify import read_notifications

    states = task_states(run)
    assert str(run.state) == "failed", states
    # ingest is the first task that reads the conf (only ensure_pool, which reads none, runs before
    # it); bad input is not retried.
    assert states[("ingest", -1)] == ("failed", 1), states
    ran = {k: v for k, v in states.items()
           if k[0] not in ("ingest", "ensure_pool") and v[0] in ("success", "running", "failed")}
    assert not ran, f"tasks after the refusal ran: {ran}"
    assert states[("cluster_up", -1)][0] == "upstream_failed"
    note = [n for n in read_notifications(DATA_ROOT / "notifications") if n.run_id == run.run_id][-1]
    assert note.task_id == "ingest" and expected in note.reason, note.reason


def test_a_prologue_in_cluster_options_is_refused_before_anything_runs(cube_dag, tmp_path):
    marker = tmp_path / "owned"
    run = run_dag(cube_dag, {"overrides": SMALL_CUBE,
                             "cluster_options": {"nworkers": 1, "slurm_job_script_prologue": [f"touch {marker}"]}})
    assert_refused_in_first_task(run, "cluster_options.slurm_job_script_prologue")
    assert not marker.exists()
    assert not (DATA_ROOT / "work" / DAG_ID / "runs" / run.run_id.replace(":", "_").replace("+", "_")).exists()


def test_a_path_naming_an_environment_variable_is_refused_and_never_expanded(cube_dag, monkeypatch, capfd):
    monkeypatch.setenv("PCLEAN_TEST_SECRET", SECRET_VALUE)
    run = run_dag(cube_dag, {"overrides": SMALL_CUBE, "work_dir": "$PCLEAN_TEST_SECRET/work"})
    assert_refused_in_first_task(run, "work_dir: ")
    assert "never expanded" in task_failure_reason(run)
    out, err = capfd.readouterr()
    assert SECRET_VALUE not in out + err
    # Not in any file the run could have written: task logs, the data areas, Airflow's database.
    for folder in (provider_env.HOME, DATA_ROOT):
        for path in Path(folder).rglob("*"):
            assert SECRET_VALUE not in path.name, path
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert SECRET_VALUE.encode() not in path.read_bytes(), path
