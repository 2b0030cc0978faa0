"""The measures upkeep DAG: keeps the site copy of CASA's measures data current.

CASA converts times and frequency frames with its Earth-orientation and leap-second tables; a site
whose copy stops being refreshed images new data with extrapolated tables (ingest warns about every
MS observed after them). This DAG runs ``pclean measures update`` weekly into ``[pclean]
measures_path`` (the folder every imaging host reads), then ``pclean measures status`` to log the
dates the tables reach, in one task, so that the run fails when the refresh does. Both run as `pclean` subprocesses in the CASA environment (``[pclean]
casa_python``), like the pipelines' steps.

A refresh needs the network. Where it fails (no network, a full disk) the task still logs how far the
tables reach, then fails with what to do and is retried later in the week.
Without ``measures_path`` there is no site copy to refresh, and the update fails at once naming the
setting. The DAG is created paused (Airflow's default) for a site to switch on where it applies.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.casa.runtime import MEASURES_ENV
from pclean_provider.dags.pclean_subprocess import run_pclean
from pclean_provider.exit_codes import MeasuresExit

MEASURES_DAG_ID = "pclean_measures_refresh"


def build_measures_dag() -> DAG:
    apply_airflow_config()
    with DAG(
        dag_id=MEASURES_DAG_ID,
        dag_display_name="pclean measures refresh",
        description="Refresh the site copy of CASA's measures data ([pclean] measures_path) and log its dates",
        doc_md=__doc__,
        schedule="@weekly",
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        # A site switches it on where its workers reach the network and measures_path is set.
        is_paused_upon_creation=True,
        tags=["pclean", "maintenance"],
    ) as dag:
        @task(task_id="measures_refresh", retries=3, retry_delay=timedelta(hours=12))
        def measures_refresh() -> str:
            path = os.environ.get(MEASURES_ENV, "").strip()
            # CASA writes its log into the steps' working folder; their lines are in the task log, so a
            # scratch folder, removed with what CASA left there.
            with tempfile.TemporaryDirectory(prefix="pclean-measures-") as scratch:
                update = run_pclean(["measures", "update", "--path", path], Path(scratch)) if path else None
                # Whatever the update did, the log says which tables CASA uses now and how far they reach.
                status = run_pclean(["measures", "status"], Path(scratch))
            if update is None:
                raise AirflowFailException(
                    f"no site copy to refresh: set [pclean] measures_path (${MEASURES_ENV}) to a folder every "
                    "imaging host reads, then clear this task")
            if update.returncode == MeasuresExit.BAD_INPUT:
                raise AirflowFailException(f"pclean measures update refused {path}: {update.why()}")
            if update.returncode != MeasuresExit.OK:
                raise RuntimeError(f"pclean measures update exited {update.returncode}: {update.why()}")
            if status.returncode != MeasuresExit.OK:
                raise RuntimeError(f"pclean measures status exited {status.returncode}: {status.why()}")
            return path

        measures_refresh()
    return dag
