"""The scheduler plugin's listener creates a pipeline's missing pool when a run starts.

Called here as the scheduler calls it (`on_dag_run_running`), against the test metadata database;
the live night test (test_standalone_night.py) deletes the pool and sees a run make it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_pool_fresh_airflow import _delete_pool, _pool

pytestmark = [pytest.mark.airflow]


@pytest.fixture(scope="module", autouse=True)
def _database():
    provider_env.migrate_db()


def test_listener_creates_the_pipeline_pool_and_leaves_others_alone():
    from airflow.models.pool import Pool

    from pclean_provider.plugins import pool_listener

    _delete_pool("pclean_heavy")
    # A DAG that is not a pipeline: nothing happens.
    pool_listener.on_dag_run_running(dag_run=SimpleNamespace(dag_id="someone_elses_dag"), msg="started")
    assert _pool("pclean_heavy") is None
    pool_listener.on_dag_run_running(dag_run=SimpleNamespace(dag_id="nightly_cube_imaging"), msg="started")
    assert _pool("pclean_heavy") == (2, True)
    # An administrator's setting survives the next run.
    Pool.create_or_update_pool(name="pclean_heavy", slots=7, description="site", include_deferred=True)
    pool_listener.on_dag_run_running(dag_run=SimpleNamespace(dag_id="nightly_cube_imaging"), msg="started")
    assert _pool("pclean_heavy") == (7, True)
    Pool.create_or_update_pool(name="pclean_heavy", slots=2, description="site", include_deferred=True)


def test_listener_never_raises_into_the_scheduler(monkeypatch, caplog):
    from pclean_provider.plugins import pool_listener

    def broken(dag_id):
        raise ValueError("template unreadable")

    monkeypatch.setattr(pool_listener, "pools_for", broken)
    pool_listener.on_dag_run_running(dag_run=SimpleNamespace(dag_id="nightly_cube_imaging"), msg="started")
    assert "could not check the pools of nightly_cube_imaging" in caplog.text


def test_plugin_is_registered_for_every_airflow_component():
    from airflow import plugins_manager

    from pclean_provider.dags.tasks.pool import scheduler_plugin_installed

    assert scheduler_plugin_installed()
    plugins, errors = plugins_manager._get_plugins()
    assert "pclean" in [p.name for p in plugins], errors
    listeners = [m.__name__ for p in plugins if p.name == "pclean" for m in p.listeners]
    assert listeners == ["pclean_provider.plugins.pool_listener"]


def test_task_without_database_fails_naming_pool_and_command(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.utils import session as session_module

    from pclean_provider.dags.tasks import pool

    def blocked():
        raise RuntimeError("Database access is disabled from Dags and Triggers")

    monkeypatch.setattr(session_module, "create_session", blocked)
    monkeypatch.setattr(pool, "scheduler_plugin_installed", lambda: True)
    assert pool.ensure_pool("pclean_heavy", 2) == "scheduler"
    monkeypatch.setattr(pool, "scheduler_plugin_installed", lambda: False)
    with pytest.raises(AirflowFailException) as info:
        pool.ensure_pool("pclean_heavy", 2)
    assert "pclean_heavy" in str(info.value)
    assert 'airflow pools set pclean_heavy 2 "' in str(info.value)
