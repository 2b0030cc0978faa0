"""Nightly imaging DAGs, one per pipeline template (the packaged ones, or $PCLEAN_PIPELINES_DIR).

Shape of a cube night (continuum has a `continuum[ms]` task where the cube has `cube[ms]`):

    ingest -> prepare -> cluster_up -> cube[ms] -> qa[ms] -> qa_gate -> archive[ms] | review[ms]
           -> cluster_down (teardown of cluster_up)

Every MS of the night gets its own map index in each per-MS task. `cube[ms]` is the exact loop
(template `cube_mode: exact`): its sub-cube sessions share one iteration controller, so clearing
it re-images the whole cube, then QA and archive. With `cube_mode: fanout` the imaging is
partition[ms] -> collect_subcubes -> image_subcube[sub-cube] -> group_subcubes -> concat[ms]; the
sub-cubes of all MSs are one flat mapped task (Airflow cannot map inside a mapped group), so
clearing one sub-cube re-runs just it and the concatenation, QA and archive after it. Either way
the cluster comes back because it is the setup of what was cleared.

The Airflow worker never loads casatools: ingest, QA and archive run ``pclean <subcommand>`` in a
subprocess; imaging runs on the Dask cluster through the provider's operators.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowSkipException

from pclean_provider.dags.callbacks import deadline_alert, failure_callback
from pclean_provider.dags.imaging import continuum_imaging, cube_imaging
from pclean_provider.dags.params import trigger_form
from pclean_provider.dags.report import products_alias
from pclean_provider.dags.tasks.archive import archive_tasks
from pclean_provider.dags.tasks.ingest import ingest_task
from pclean_provider.dags.tasks.pool import ensure_pool_task
from pclean_provider.dags.tasks.prepare import prepare_task, run_setting
from pclean_provider.dags.tasks.qa import qa_tasks
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, load_templates

UNSCHEDULED_ENV = "PCLEAN_PIPELINES_UNSCHEDULED"  # set: only runs someone triggers (tests, demos)


def _routed_to_archive(item: dict) -> dict:
    if item["route"] != "archive":
        raise AirflowSkipException(f"{item['name']} goes to review (QA score {item['qa_score']:.2f})")
    return item


def _routed_to_review(item: dict) -> dict:
    if item["route"] != "review":
        raise AirflowSkipException(f"{item['name']} passed the QA gate (score {item['qa_score']:.2f})")
    return item


def _qa_pair(pair: Any) -> dict:
    item, imaging = pair
    return {"item": item, "imaging": imaging}


def build_dag(t: PipelineTemplate) -> DAG:
    from pclean_provider.operators.cluster import ClusterDownOperator, ClusterUpOperator

    pool = t.pool.name
    # An alias: each archived product becomes an asset of its own, the version folder it was published to.
    asset = products_alias(t.dag_id)
    default_args = {
        "retries": t.retries,
        "retry_delay": timedelta(seconds=t.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=t.max_retry_delay_s),
        "on_failure_callback": failure_callback(t),
    }
    with DAG(
        dag_id=t.dag_id,
        dag_display_name=t.title,
        description=" ".join(t.description.split()) or t.title,
        doc_md=__doc__,
        schedule=None if os.environ.get(UNSCHEDULED_ENV) else t.schedule,
        start_date=pendulum.parse(t.start_date),
        catchup=False,
        max_active_runs=1,
        tags=t.tags,
        params=trigger_form(t),
        default_args=default_args,
        deadline=deadline_alert(t),
        render_template_as_native_obj=True,
    ) as dag:
        # First, so that a fresh Airflow never leaves the heavy tasks waiting for a missing pool.
        pool_ready = ensure_pool_task(t)()
        accepted = ingest_task(t)()
        pool_ready >> accepted
        prepared = prepare_task(t)(accepted)
        address = "{{ ti.xcom_pull(task_ids='cluster_up') }}"
        cluster_up = ClusterUpOperator(
            task_id="cluster_up",
            address_file=run_setting("address_file"),
            cluster_overrides=run_setting("cluster_overrides"),
            pclean_conn_id=t.cluster.connection_id or "pclean_dask_default",
        )
        prepared >> cluster_up
        if t.kind == "cube":
            imaging_results = cube_imaging(prepared, cluster_up, address, pool, t.cube_mode)
        else:
            imaging_results = continuum_imaging(prepared, cluster_up, address, pool)
        qa, qa_gate = qa_tasks(t, pool)
        archive, review = archive_tasks(t, pool, asset)
        checked = qa.expand_kwargs(prepared.zip(imaging_results).map(_qa_pair))
        routes = qa_gate(checked)
        # The gate's other way is skipped per MS, so the grid shows which way each product went.
        archived = archive.expand(item=routes.map(_routed_to_archive))
        reviewed = review.expand(item=routes.map(_routed_to_review))
        cluster_down = ClusterDownOperator(task_id="cluster_down", address_file=run_setting("address_file"))
        [archived, reviewed] >> cluster_down
        cluster_up >> cluster_down.as_teardown(setups=cluster_up)
    return dag


def build_dags() -> dict[str, DAG]:
    """dag_id -> DAG for every pipeline template; a DAG file puts these into its globals()."""
    return {t.dag_id: build_dag(t) for t in load_templates()}
