"""ensure_pool: the first task of a pipeline DAG makes sure the heavy-task pool exists.

Why: the scheduler never queues a task whose pool does not exist and only logs a warning, so a
DAG started on an Airflow that ``scripts/airflow-init.sh`` did not prepare would wait forever at
its first heavy task. This task creates the template's pool when it is missing and leaves an
existing one as it is (an administrator may have changed its slots on purpose).

The pool caps the heavy tasks that hold their slot while deferred (the exact cube, continuum,
concatenation) and the QA and archive subprocesses. The fan-out's sub-cube batches do not use it:
a deferred batch would hold a slot while Dask, which queues the sub-cubes on however many workers
the cluster has, is what should set how many run at once.

Where the database is reachable (``dag.test()``, an in-process run) this task creates the pool
itself. Airflow 3 runs supervised tasks without access to the metadata database; there the
provider's scheduler plugin (``pclean_provider.plugins``, the ``airflow.plugins`` entry point
``pclean``) has already created it when the run started, and this task checks that the plugin is
installed. Without it the task fails, naming the pool and the command that creates it: a run that
fails at once is better than one that waits for ever at its first heavy task.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from airflow.sdk import task

from pclean_provider.pipeline.pipeline_template import PipelineTemplate

log = logging.getLogger(__name__)

DESCRIPTION = "pclean heavy tasks (imaging, concatenation, QA, archive)"


def create_command(name: str, slots: int) -> str:
    return f'airflow pools set {name} {slots} "{DESCRIPTION}" --include-deferred'


PLUGIN_ENTRY_POINT = "pclean"
PLUGIN_MODULE = "pclean_provider.plugins.plugin"


def scheduler_plugin_installed() -> bool:
    """Whether Airflow's components load this provider's pool plugin (its entry point is installed)."""
    return any(ep.name == PLUGIN_ENTRY_POINT and ep.value.startswith(PLUGIN_MODULE)
               for ep in entry_points(group="airflow.plugins"))


def ensure_pool(name: str, slots: int) -> str:
    """Create pool ``name`` with ``slots`` if it does not exist; return what was done.

    "exists" or "created" where this process can reach the database; "scheduler" where it cannot
    and the scheduler plugin created any missing pool as the run started. Raises when neither can.
    """
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
        if scheduler_plugin_installed():
            log.info("pool %r: this task cannot read pools (%s); the provider's scheduler plugin "
                     "creates a missing one when the run starts", name, exc)
            return "scheduler"
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"pool {name!r} cannot be checked from this task and the provider's scheduler plugin "
            f"(entry point {PLUGIN_ENTRY_POINT!r} in group 'airflow.plugins') is not installed, so nothing "
            f"creates it if it is missing. Create it with: {create_command(name, slots)} "
            f"(or run scripts/airflow-init.sh), or reinstall the provider package.") from exc


def ensure_pool_task(t: PipelineTemplate):
    name, slots = t.pool.name, t.pool.slots

    # The default pool always exists, so this task itself can never wait for a pool.
    @task(task_id="ensure_pool", pool="default_pool", retries=0)
    def ensure_pool_exists() -> str:
        outcome = ensure_pool(name, slots)
        if outcome == "scheduler":
            print(f"pool {name}: made by the scheduler plugin when this run started, if it was missing")
        else:
            print(f"pool {name}: {outcome}" + (f" ({slots} slots)" if outcome == "created" else ""))
        return outcome

    return ensure_pool_exists
