"""ensure_pool: the first task of a pipeline DAG makes sure the heavy-task pool exists.

Why: the scheduler never queues a task whose pool does not exist and only logs a warning, so a
DAG started on an Airflow that ``scripts/airflow-init.sh`` did not prepare would wait forever at
its first heavy task. This task creates the template's pool when it is missing and leaves an
existing one as it is (an administrator may have changed its slots on purpose).

The pool caps the heavy tasks that hold their slot while deferred (the exact cube, continuum,
concatenation) and the QA and archive subprocesses. The fan-out's sub-cube batches do not use it:
a deferred batch would hold a slot while Dask, which queues the sub-cubes on however many workers
the cluster has, is what should set how many run at once.

Airflow 3 runs supervised tasks without access to the metadata database; there the task cannot
see pools, says so in its log with the command that creates the pool, and lets the run go on
(a site that ran the init script has the pool). Where the database is reachable (``dag.test()``,
an in-process run) it creates the pool itself.
"""

from __future__ import annotations

import logging

from airflow.sdk import task

from pclean_provider.pipeline.pipeline_template import PipelineTemplate

log = logging.getLogger(__name__)

DESCRIPTION = "pclean heavy tasks (imaging, concatenation, QA, archive)"


def create_command(name: str, slots: int) -> str:
    return f'airflow pools set {name} {slots} "{DESCRIPTION}" --include-deferred'


def ensure_pool(name: str, slots: int) -> str:
    """Create pool ``name`` with ``slots`` if it does not exist; return what was done."""
    try:
        from airflow.models.pool import Pool
        from airflow.utils.session import create_session

        with create_session() as session:
            if Pool.get_pool(name, session=session) is not None:
                return "exists"
            # include_deferred: a deferred imaging task still has its work running on Dask.
            session.add(Pool(pool=name, slots=slots, description=DESCRIPTION, include_deferred=True))
        return "created"
    except (RuntimeError, AttributeError) as exc:
        # The task SDK blocks the ORM (RuntimeError from its blocked session, AttributeError
        # from the settings it removed): nothing here can read or write pools.
        log.warning("cannot check pool %r from this task (%s); if the run's heavy tasks stay 'scheduled', "
                    "create it with: %s", name, exc, create_command(name, slots))
        return "unchecked"


def ensure_pool_task(t: PipelineTemplate):
    name, slots = t.pool.name, t.pool.slots

    # The default pool always exists, so this task itself can never wait for a pool.
    @task(task_id="ensure_pool", pool="default_pool", retries=0)
    def ensure_pool_exists() -> str:
        outcome = ensure_pool(name, slots)
        print(f"pool {name}: {outcome}" + (f" ({slots} slots)" if outcome == "created" else ""))
        return outcome

    return ensure_pool_exists
