"""Notifications through Airflow's notifier interface.

The file notifier (one JSON file per event under the template's notifications folder, see
pipeline/notify.py) is always there: a relay can watch the folder and tests can read it. A
pipeline template adds any Airflow ``BaseNotifier`` (SMTP, Slack, ...) under ``notifiers``, each
for the events it names: ``task_failed`` (every task's failure callback), ``qa_review`` (the QA
gate sends a product to review), ``review_waiting`` (that product's review task starts waiting for an
answer in the UI; the file notification carries the Required Actions and QA report links),
``nothing_arrived`` (a night with nothing to image) and ``deadline_missed`` (its own deadline alert, run by the triggerer, so that notifier needs
``async_notify``).

A template names a notifier it cannot build: the DAG does not load, and the import error names the
template's entry, so the mistake shows in the UI at once rather than on the first failure at night.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from airflow.sdk import BaseNotifier

from pclean_provider.pipeline.notify import NotifierEvent, notify_task_failure
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, TemplateError

log = logging.getLogger(__name__)


class FileTaskFailureNotifier(BaseNotifier):
    """The default failure notification: a JSON file naming the MS, the task and the reason."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def notify(self, context: Any) -> None:
        notify_task_failure(context, directory=self.directory)


def notifier_class(t: PipelineTemplate, index: int) -> type[BaseNotifier]:
    spec = t.notifiers[index]
    where = f"pipeline template {t.dag_id}: notifiers[{index}].notifier {spec.notifier!r}"
    module, _, name = spec.notifier.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise TemplateError(f"{where} cannot be imported ({exc}); give the import path of a BaseNotifier "
                            "subclass, e.g. airflow.providers.smtp.notifications.smtp.SmtpNotifier") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
        raise TemplateError(f"{where} is not a subclass of airflow.sdk.BaseNotifier")
    return cls


def check_notifiers(t: PipelineTemplate) -> None:
    """Build every configured notifier once, so a wrong entry fails the DAG's import, not a night."""
    for event in NotifierEvent:
        configured(t, event)


def configured(t: PipelineTemplate, event: NotifierEvent) -> list[BaseNotifier]:
    """The template's notifiers for one event, built now (at parse time, as Airflow's are)."""
    built = []
    for index, spec in enumerate(t.notifiers):
        if event in spec.on:
            cls = notifier_class(t, index)
            try:
                built.append(cls(**spec.kwargs))
            except TypeError as exc:
                raise TemplateError(f"pipeline template {t.dag_id}: notifiers[{index}].kwargs do not fit "
                                    f"{spec.notifier}: {exc}") from exc
    return built


def send(t: PipelineTemplate, event: NotifierEvent, context: Any) -> None:
    """Call the template's notifiers for an event from inside a task. A relay that fails is logged,
    never raised: a broken mail server must not fail (or retry) the imaging it reports on."""
    for notifier in configured(t, event):
        try:
            notifier(context)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("pclean: notifier %s for %s failed: %s", type(notifier).__name__, event, exc)
