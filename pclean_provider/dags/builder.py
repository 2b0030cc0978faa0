"""Nightly imaging DAGs, one per pipeline template (the packaged ones, or $PCLEAN_PIPELINES_DIR).

Shape of a cube night (continuum has a `continuum` task where the cube has `cube`):

    ensure_pool -> ingest -> arrivals -> plan -> prepare -> cluster_up -> [ms: cube -> qa -> qa_gate
                                                                     -> archive | review] -> cluster_down
                                                                        [ms: review -> review_decision]
                          -> arrivals -> nothing_arrived   (no MS to image: reason + notification)

`plan` derives each MS's imaging targets and their parameters from the data (`pclean plan`);
`ms` is a task group mapped over the night's (MS, target) pairs (see imaging.py): each target's
imaging, QA, gate and archive or review depend only on its own tasks, so one failing never holds
back another, and clearing one target's cube re-runs only its tail. With `cube_mode: fanout` the imaging
is partition -> subcubes_1 .. subcubes_K (sub-cube batches) -> gather_subcubes -> concat, all
inside the group. The cluster comes back for a cleared task because it is the
setup of everything between cluster_up and cluster_down.

A product below the gate then waits in its ``review_decision`` task (tasks/review.py) for a person
to approve, reject or re-image it, within the template's ``qa.review_timeout_minutes``. That task
is downstream of the cluster's setup but not upstream of its teardown, so the cluster goes down
while it waits, and clearing it does not bring the cluster back.

Runs start on the template's cron schedule OR when a complete MS lands (``arrivals.watch``): the
landing area is an asset whose watcher (triggers/landing.py, in the triggerer) fires once per new
MS, and the DAG is scheduled on ``AssetOrTimeSchedule(cron, landing asset)``.

The Airflow worker never loads casatools: ingest, QA and archive run ``pclean <subcommand>`` in a
subprocess; imaging runs on the Dask cluster through the provider's operators.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.dags.callbacks import deadline_alert, failure_callback
from pclean_provider.dags.imaging import per_ms_paths
from pclean_provider.dags.notifiers import check_notifiers
from pclean_provider.dags.params import trigger_form
from pclean_provider.dags.report import products_alias
from pclean_provider.dags.tasks.archive import archive_tasks
from pclean_provider.dags.tasks.ingest import arrival_tasks, ingest_task
from pclean_provider.dags.tasks.plan import plan_task
from pclean_provider.dags.tasks.pool import ensure_pool_task
from pclean_provider.dags.tasks.prepare import prepare_task, run_setting
from pclean_provider.dags.tasks.qa import qa_tasks
from pclean_provider.dags.tasks.review import review_decision_task
from pclean_provider.operators.cluster import ClusterDownOperator, ClusterUpOperator
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, load_templates
from pclean_provider.triggers.landing import LandingAreaTrigger, state_dir_for

# Set: no cron schedule, so only runs someone triggers or, where the template watches its landing
# area, runs that data start (tests, demos).
UNSCHEDULED_ENV = "PCLEAN_PIPELINES_UNSCHEDULED"


def landing_asset(t: PipelineTemplate) -> Asset:
    """The landing area as an asset, watched in the triggerer: a complete MS arriving is an event."""
    paths = t.paths()
    landing = paths["landing_dir"]
    trigger = LandingAreaTrigger(
        landing_dir=str(landing), state_dir=str(state_dir_for(paths["work_dir"], t.dag_id)),
        ledger_dir=str(paths["work_dir"] / t.dag_id / "ledger"), pattern=t.ingest.pattern,
        completion=t.ingest.completion, marker_suffix=t.ingest.marker_suffix,
        quiet_period_s=t.ingest.quiet_period_s, poll_interval=t.arrivals.poll_interval_s)
    # Airflow keeps one active asset per URI, and pipelines may share a landing area (the shipped two
    # do), each with a watcher of its own: the query names the pipeline so that every one stays active.
    return Asset(name=f"{t.dag_id}.landing", uri=f"{landing.resolve().as_uri()}?pipeline={t.dag_id}",
                 group="pclean-landing", watchers=[AssetWatcher(name=f"{t.dag_id}_landing", trigger=trigger)])


def schedule_for(t: PipelineTemplate):
    """The template's cron, OR a complete MS arriving in the landing area (``arrivals.watch``)."""
    cron = None if os.environ.get(UNSCHEDULED_ENV) else t.schedule
    if not t.arrivals.watch:
        return cron
    landing = landing_asset(t)
    if cron is None:
        return landing
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=landing)


def build_dag(t: PipelineTemplate) -> DAG:
    check_notifiers(t)
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
        schedule=schedule_for(t),
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
        arrivals, nothing_arrived = arrival_tasks(t)
        branch = arrivals(accepted)
        planned = plan_task(t)(accepted)
        prepared = prepare_task(t)(accepted, planned)
        branch >> [planned, nothing_arrived()]
        address = "{{ ti.xcom_pull(task_ids='cluster_up') }}"
        cluster_up = ClusterUpOperator(
            task_id="cluster_up",
            address_file=run_setting("address_file"),
            cluster_overrides=run_setting("cluster_overrides"),
            pclean_conn_id=t.cluster.connection_id,
        )
        prepared >> cluster_up
        _, before_teardown = per_ms_paths(t, prepared, cluster_up, address, pool, qa_tasks(t, pool),
                                          archive_tasks(t, pool, asset), review_decision_task(t, asset, pool))
        # Once the cluster is down no writer of the run is left: what a killed or failed writer staged is
        # removed (a fan-out run keeps its sub-cubes, which clearing one batch task reuses).
        fanout = t.kind == "cube" and t.cube_mode == "fanout"
        cluster_down = ClusterDownOperator(
            task_id="cluster_down", address_file=run_setting("address_file"),
            run_folder=None if fanout else run_setting("run_dir"),
            image_suffix="cube" if t.kind == "cube" else "cont", sweep_subcubes=t.kind == "cube")
        # Not the whole group: its review_decision (a person's answer, for hours) must not hold the cluster.
        before_teardown >> cluster_down
        cluster_up >> cluster_down.as_teardown(setups=cluster_up)
    return dag


def build_dags() -> dict[str, DAG]:
    """dag_id -> DAG for every pipeline template; a DAG file puts these into its globals()."""
    # Before the templates load: [pclean] pipelines_dir and data_root decide which templates and paths.
    apply_airflow_config()
    return {t.dag_id: build_dag(t) for t in load_templates()}
