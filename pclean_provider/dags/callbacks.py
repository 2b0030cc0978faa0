"""What a pipeline DAG tells its operators when something goes wrong: failed tasks, late runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from pclean_provider.pipeline.notify import notify_task_failure
from pclean_provider.pipeline.pipeline_template import PipelineTemplate


def failure_callback(t: PipelineTemplate):
    notifications_dir = t.paths()["notifications_dir"]

    def on_failure(context: Any) -> None:
        notify_task_failure(context, directory=notifications_dir)

    return on_failure


def deadline_alert(t: PipelineTemplate) -> DeadlineAlert:
    """Alert when a run has not finished deadline_hours after it was queued."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=t.deadline_hours),
        callback=AsyncCallback("pclean_provider.pipeline.notify.notify_deadline_missed",
                               kwargs={"notifications_dir": str(t.paths()["notifications_dir"]),
                                       "dag_id": t.dag_id, "deadline_hours": t.deadline_hours}),
    )
