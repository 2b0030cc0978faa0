"""A pipeline DAG on an Airflow whose database has no `pclean_heavy` pool: its first task makes it.

The run is a quick one (a `vis` that does not exist fails at ingest), since only the first task
matters here; dag.test() on the project's DAG with the pool deleted from the metadata database.
"""

from __future__ import annotations

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_nightly_dags import DATA_ROOT, project_dags, run_dag, task_states

pytestmark = [pytest.mark.airflow]


def _pool(name: str):
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        pool = Pool.get_pool(name, session=session)
        return None if pool is None else (pool.slots, pool.include_deferred)


def _delete_pool(name: str) -> None:
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Pool).filter(Pool.pool == name).delete()


def test_first_task_creates_the_missing_pool_and_keeps_an_existing_one(casa_runtime):
    from airflow.models.pool import Pool

    dag = project_dags()["nightly_cube_imaging"]
    assert dag.get_task("ingest").upstream_task_ids == {"ensure_pool"}
    assert dag.get_task("ensure_pool").pool == "default_pool"
    _delete_pool("pclean_heavy")
    assert _pool("pclean_heavy") is None

    missing = {"vis": str(DATA_ROOT / "nowhere" / "pool_check.ms")}
    run = run_dag(dag, missing)
    states = task_states(run)
    assert states[("ensure_pool", -1)][0] == "success", states
    assert states[("ingest", -1)][0] == "failed"  # the bad vis, after the pool was made
    assert _pool("pclean_heavy") == (2, True)  # the template's slots; deferred tasks keep theirs

    # An administrator's own setting is left alone.
    Pool.create_or_update_pool(name="pclean_heavy", slots=5, description="site setting", include_deferred=True)
    run = run_dag(dag, missing)
    assert task_states(run)[("ensure_pool", -1)][0] == "success"
    assert _pool("pclean_heavy") == (5, True)
