"""What a pipeline DAG tells its operators when something goes wrong: failed tasks, late runs.

Both go to the file notifications always, and to the Airflow notifiers the template configures
for ``task_failed`` and ``deadline_missed`` (see notifiers.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from pclean_provider.dags.notifiers import FileTaskFailureNotifier, configured, notifier_class
from pclean_provider.pipeline.notify import NotifierEvent
from pclean_provider.pipeline.pipeline_template import PipelineTemplate


def failure_callback(t: PipelineTemplate) -> list[Any]:
    """Every task's on_failure_callback: the file notification, then the template's notifiers."""
    return [FileTaskFailureNotifier(str(t.paths()["notifications_dir"])),
            *configured(t, NotifierEvent.TASK_FAILED)]


# The deadline counts from the run's logical date (the night it images), not from when it was
# queued: in Airflow 3.3.2, clearing any task of a failed run whose DAG has a queued-at deadline
# fails in the API (clear_task_instances re-times queued-at deadlines with timedelta(seconds=<the
# stored interval>), and the interval is stored as a serialized dict: TypeError, HTTP 500), so an
# operator could not re-run a failed night from the UI. Runs without a logical date (asset-triggered
# arrivals, REST triggers with logical_date null) have no deadline.
DEADLINE_REFERENCE = DeadlineReference.DAGRUN_LOGICAL_DATE


def deadline_alert(t: PipelineTemplate) -> DeadlineAlert | list[DeadlineAlert]:
    """Alert when a run has not finished deadline_hours after its logical date: the file
    notification, and one more alert per notifier the template configures for ``deadline_missed``."""
    file_alert = DeadlineAlert(
        reference=DEADLINE_REFERENCE,
        interval=timedelta(hours=t.deadline_hours),
        callback=AsyncCallback("pclean_provider.pipeline.notify.notify_deadline_missed",
                               kwargs={"notifications_dir": str(t.paths()["notifications_dir"]),
                                       "dag_id": t.dag_id, "deadline_hours": t.deadline_hours}),
    )
    extra = [DeadlineAlert(reference=DEADLINE_REFERENCE, interval=timedelta(hours=t.deadline_hours),
                           callback=AsyncCallback(notifier_class(t, i), kwargs=spec.kwargs))
             for i, spec in enumerate(t.notifiers) if NotifierEvent.DEADLINE_MISSED in spec.on]
    return [file_alert, *extra] if extra else file_alert
