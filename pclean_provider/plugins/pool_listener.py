"""Create a pipeline's heavy-task pool when one of its runs starts, in the scheduler.

Why here: a pool that does not exist leaves every task that names it 'scheduled' for ever (the
scheduler only logs a warning), and a task run by Airflow 3's task runner cannot reach the
metadata database to create it. The scheduler can: it calls `on_dag_run_running` when it moves a
queued run to running, before any of the run's tasks is queued, in the session that starts the
run. So a run of a pipeline DAG on an Airflow that nobody prepared makes its own pool, with the
slots its template names; an existing pool is left as it is (an administrator may have resized
it on purpose). DAGs that are not pclean pipelines are not touched.
"""

from __future__ import annotations

import contextlib
import logging

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def pools_for(dag_id: str) -> dict[str, int]:
    """The pool(s) and slots the pipeline template of ``dag_id`` names ({} if it is no pipeline)."""
    # Imported on a pipeline run's start, not when every Airflow component loads its plugins: the
    # templates bring pydantic models, numpy and the packaged YAML.
    from pclean_provider.pipeline.pipeline_template import load_templates

    return {t.pool.name: t.pool.slots for t in load_templates() if t.dag_id == dag_id}


def create_missing_pools(dag_id: str, session) -> list[str]:
    """Add the pipeline's pools that do not exist to ``session``; return their names."""
    from airflow.models.pool import Pool

    # Imported here for the reason pools_for gives (the DAG tasks also bring the Airflow task SDK).
    from pclean_provider.dags.tasks.pool import DESCRIPTION

    created = []
    for name, slots in pools_for(dag_id).items():
        if Pool.get_pool(name, session=session) is not None:
            continue
        # A savepoint, where the database has them in Airflow's set-up: another scheduler creating
        # the same pool at the same moment then fails only this insert, not the scheduler's
        # transaction. (SQLite runs one scheduler, so nothing races there.)
        nested = (contextlib.nullcontext() if session.get_bind().dialect.name == "sqlite"
                  else session.begin_nested())
        with nested:
            # include_deferred: a deferred imaging task still has its work running on Dask.
            session.add(Pool(pool=name, slots=slots, description=DESCRIPTION, include_deferred=True))
            session.flush()
        log.info("pclean: created pool %r (%d slots) for the pipeline %s", name, slots, dag_id)
        created.append(name)
    return created


@hookimpl
def on_dag_run_running(dag_run, msg: str) -> None:
    from sqlalchemy import inspect

    try:
        state = inspect(dag_run, raiseerr=False)
        session = state.session if state is not None else None
        if session is not None:
            # The scheduler's own session: it commits with the run's start, and a second writer
            # on a SQLite database would wait for this one's lock.
            create_missing_pools(dag_run.dag_id, session)
            return
        from airflow.utils.session import create_session

        with create_session() as own:
            create_missing_pools(dag_run.dag_id, own)
    except Exception:
        # A broken template must not stop the scheduler; the run's first task names the fix.
        log.exception("pclean: could not check the pools of %s", dag_run.dag_id)
