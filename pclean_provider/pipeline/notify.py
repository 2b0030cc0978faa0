"""Notifications for operations staff: a failed task, a product sent to review, a night with
nothing to image, a missed nightly deadline.

Each notification goes to the task log and is written as one JSON file into a notifications
directory (temporary name, then rename), which a mail or chat relay can watch. The functions
take Airflow's callback context as a plain mapping and never import Airflow, so they are easy to
test and cheap to import in any process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pclean_provider.atomic_files import write_text
from pclean_provider.pipeline.safe_names import safe_name

log = logging.getLogger("pclean.notify")

NOTIFICATIONS_DIR_ENV = "PCLEAN_NOTIFICATIONS_DIR"


class NotifierEvent(StrEnum):
    """What a pipeline template's Airflow notifiers can be called for (``NotifierSpec.on``); each is
    also the ``kind`` of the file notification written for it."""

    TASK_FAILED = "task_failed"
    QA_REVIEW = "qa_review"
    REVIEW_WAITING = "review_waiting"
    NOTHING_ARRIVED = "nothing_arrived"
    NOT_IMAGED = "not_imaged"
    DEADLINE_MISSED = "deadline_missed"


class NotifierSpec(BaseModel):
    """One Airflow notifier a pipeline template adds to the file notifications (always written):
    ``notifier`` is the import path of a ``BaseNotifier`` subclass (SMTP, Slack, ...), built with
    ``kwargs`` and called for the events in ``on``. The DAG layer builds it; here it is only data."""

    model_config = ConfigDict(extra="forbid")

    notifier: str = Field(description="Import path of an Airflow BaseNotifier subclass, e.g. "
                          "'airflow.providers.smtp.notifications.smtp.SmtpNotifier'.")
    on: list[NotifierEvent] = Field(min_length=1, description="The events it is called for.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Its constructor's keyword arguments.")


class Notification(BaseModel):
    # A quarantined MS is reported in a file notification only: no template notifier is called for it.
    kind: NotifierEvent | Literal["ms_quarantined"]
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    ms: str | None = None
    reason: str
    try_number: int | None = None
    log_url: str | None = None
    # review_waiting: where the reviewer answers, and the product's QA report (both URLs of the Airflow UI).
    review_url: str | None = None
    qa_report: str | None = None
    created_at: str


def write_notification(note: Notification, directory: str | os.PathLike[str] | None) -> Path | None:
    if not directory:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{note.kind}-{note.dag_id}-{note.task_id}-{note.map_index}")
    path = directory / f"{stamp}-{safe}.json"
    return write_text(path, note.model_dump_json(indent=2) + "\n")


def read_notifications(directory: str | os.PathLike[str]) -> list[Notification]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return [Notification.model_validate_json(p.read_text()) for p in sorted(d.glob("*.json"))]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _ms_from_value(value: Any, depth: int = 0) -> str | None:
    """The MS a task works on, found in its (rendered) arguments: a 'vis' anywhere inside."""
    if depth > 4 or value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, Mapping):
        for key in ("ms_name", "vis", "ms", "name"):
            v = value.get(key)
            if isinstance(v, str) and v.rstrip("/").endswith(".ms"):
                return Path(v.rstrip("/")).name
            if isinstance(v, list) and v and isinstance(v[0], str) and v[0].endswith(".ms"):
                return ", ".join(Path(x).name for x in v)
        for v in value.values():
            found = _ms_from_value(v, depth + 1)
            if found:
                return found
    elif isinstance(value, (list, tuple)) and len(value) == 1:
        return _ms_from_value(value[0], depth + 1)
    elif isinstance(value, str) and value.rstrip("/").endswith(".ms"):
        return Path(value.rstrip("/")).name
    return None


def ms_of(context: Mapping[str, Any]) -> str | None:
    """Best effort: the rendered map index (our tasks name the MS there), the task's arguments,
    then the run's `vis` parameter."""
    ti = context.get("ti") or context.get("task_instance")
    rendered = _get(ti, "rendered_map_index")
    if isinstance(rendered, str) and ".ms" in rendered:
        # A sub-cube batch is named "<ms> ch a-b (n sub-cubes)": the notification names the MS.
        first = rendered.split()[0]
        return first if first.endswith(".ms") else rendered
    task = context.get("task")
    for attr in ("op_kwargs", "op_args", "spec", "overrides", "plan", "config", "product", "ms", "vis"):
        found = _ms_from_value(_get(task, attr))
        if found:
            return found
    params = context.get("params") or {}
    vis = _get(params, "vis")
    if vis:
        # Straight from the run conf, possibly refused for what it holds: logged only cut short and
        # reduced to file-name characters, so a conf value cannot forge log lines.
        return safe_name(Path(str(vis).rstrip("/")).name[:80])
    return None


def describe_exception(exc: Any) -> str:
    if exc is None:
        return "unknown (no exception was passed to the callback)"
    if isinstance(exc, BaseException):
        text = str(exc).strip() or type(exc).__name__
        return f"{type(exc).__name__}: {text}"
    return str(exc)


def notify_task_failure(context: Mapping[str, Any], directory: str | os.PathLike[str] | None = None) -> Notification:
    """on_failure_callback body: name the MS, the task and the reason."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    note = Notification(
        kind=NotifierEvent.TASK_FAILED,
        dag_id=_get(ti, "dag_id") or _get(context.get("dag"), "dag_id"),
        run_id=_get(ti, "run_id") or _get(dag_run, "run_id"),
        task_id=_get(ti, "task_id"),
        map_index=_get(ti, "map_index"),
        try_number=_get(ti, "try_number"),
        ms=ms_of(context),
        reason=describe_exception(context.get("exception")),
        log_url=_get(ti, "log_url"),
        created_at=datetime.now(UTC).isoformat(),
    )
    directory = directory or os.environ.get(NOTIFICATIONS_DIR_ENV)
    path = write_notification(note, directory)
    log.error("pclean: task %s%s of %s (run %s) failed for MS %s: %s%s", note.task_id,
              f"[{note.map_index}]" if note.map_index not in (None, -1) else "", note.dag_id, note.run_id,
              note.ms or "(none)", note.reason, f" [notification {path}]" if path else "")
    return note


def notify_quarantined(dag_id: str | None, run_id: str | None, ms_path: str, reason: str, reason_path: str,
                       directory: str | os.PathLike[str] | None = None) -> Notification:
    """Ingest set an MS aside: staff should know tonight, not when someone misses the product."""
    note = Notification(kind="ms_quarantined", dag_id=dag_id, run_id=run_id, task_id="ingest",
                        ms=Path(ms_path.rstrip("/")).name, reason=f"{reason} (see {reason_path})",
                        created_at=datetime.now(UTC).isoformat())
    path = write_notification(note, directory or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.error("pclean: %s quarantined by %s run %s: %s [notification %s]", note.ms, dag_id, run_id, reason, path)
    return note


def notify_nothing_arrived(dag_id: str | None, run_id: str | None, reason: str,
                           directory: str | os.PathLike[str] | None = None) -> Notification:
    """A scheduled night found nothing to image: a silent green run would hide a stopped transfer."""
    note = Notification(kind=NotifierEvent.NOTHING_ARRIVED, dag_id=dag_id, run_id=run_id,
                        task_id="nothing_arrived", reason=reason, created_at=datetime.now(UTC).isoformat())
    path = write_notification(note, directory or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.warning("pclean: %s run %s imaged nothing: %s [notification %s]", dag_id, run_id, reason, path)
    return note


def notify_not_imaged(dag_id: str | None, run_id: str | None, ms: str, reason: str,
                      directory: str | os.PathLike[str] | None = None) -> Notification:
    """An MS (or one of its targets) the plan found nothing to image in: said before any cluster time."""
    note = Notification(kind=NotifierEvent.NOT_IMAGED, dag_id=dag_id, run_id=run_id, task_id="prepare", ms=ms,
                        reason=reason, created_at=datetime.now(UTC).isoformat())
    path = write_notification(note, directory or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.warning("pclean: %s of %s run %s is not imaged: %s [notification %s]", ms, dag_id, run_id, reason, path)
    return note


def notify_qa_review(dag_id: str | None, run_id: str | None, ms: str, reason: str,
                     directory: str | os.PathLike[str] | None = None) -> Notification:
    """A product stayed below the QA gate: someone has to look at it before it is published."""
    note = Notification(kind=NotifierEvent.QA_REVIEW, dag_id=dag_id, run_id=run_id, task_id="qa_gate", ms=ms,
                        reason=reason, created_at=datetime.now(UTC).isoformat())
    path = write_notification(note, directory or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.warning("pclean: %s of %s run %s goes to review: %s [notification %s]", ms, dag_id, run_id, reason, path)
    return note


def notify_review_waiting(dag_id: str | None, run_id: str | None, ms: str, reason: str, *, map_index: int | None,
                          review_url: str | None, qa_report: str | None,
                          directory: str | os.PathLike[str] | None = None) -> Notification:
    """A product below the QA gate waits for a person's answer (approve, reject, re-image) in the UI."""
    note = Notification(kind=NotifierEvent.REVIEW_WAITING, dag_id=dag_id, run_id=run_id,
                        task_id="review_decision", map_index=map_index, ms=ms, reason=reason,
                        review_url=review_url, qa_report=qa_report, created_at=datetime.now(UTC).isoformat())
    path = write_notification(note, directory or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.warning("pclean: %s of %s run %s waits for review at %s [notification %s]", ms, dag_id, run_id,
                review_url, path)
    return note


async def notify_deadline_missed(context: Mapping[str, Any] | None = None, *, notifications_dir: str | None = None,
                                 dag_id: str | None = None, deadline_hours: float | None = None) -> None:
    """Deadline-alert callback (runs in the triggerer): the nightly run is late."""
    context = context or {}
    dag_run = context.get("dag_run") or {}
    conf = _get(dag_run, "conf") or {}
    note = Notification(
        kind=NotifierEvent.DEADLINE_MISSED,
        dag_id=dag_id or _get(dag_run, "dag_id"),
        run_id=_get(dag_run, "run_id"),
        ms=Path(str(conf["vis"])).name if isinstance(conf, Mapping) and conf.get("vis") else None,
        reason=f"the run has not finished {deadline_hours} h after its logical date",
        created_at=datetime.now(UTC).isoformat(),
    )
    path = write_notification(note, notifications_dir or os.environ.get(NOTIFICATIONS_DIR_ENV))
    log.error("pclean: %s run %s missed its deadline (%s h) [notification %s]", note.dag_id, note.run_id,
              deadline_hours, path)

