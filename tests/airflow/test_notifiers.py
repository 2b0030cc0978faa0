"""The template's Airflow notifiers: a wrong entry stops the DAG at import with a message naming
it; a notifier that fails to send is logged and never fails the task that reports through it."""

from __future__ import annotations

import json

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

pytestmark = [pytest.mark.airflow]

RECORDING = "tests.airflow.recording_notifier.RecordingNotifier"


def template(**changes):
    from pclean_provider.pipeline.pipeline_template import load_templates

    (cube,) = [t for t in load_templates() if t.kind == "cube"]
    return cube.model_validate({**cube.model_dump(), "dag_id": "notified", **changes})


@pytest.mark.parametrize(("entry", "expected"), [
    ({"notifier": "no_such_module.Notifier", "on": ["qa_review"]}, "cannot be imported"),
    ({"notifier": "os.path", "on": ["task_failed"]}, "is not a subclass of airflow.sdk.BaseNotifier"),
    ({"notifier": RECORDING, "on": ["nothing_arrived"], "kwargs": {"wrong": 1}}, "kwargs do not fit"),
])
def test_a_wrong_notifier_fails_the_dag_import_naming_the_entry(entry, expected):
    from pclean_provider.dags.builder import build_dag
    from pclean_provider.pipeline.pipeline_template import TemplateError

    with pytest.raises(TemplateError, match=expected) as err:
        build_dag(template(notifiers=[entry]))
    assert "notified: notifiers[0]" in str(err.value)


def test_an_unknown_event_is_refused_by_the_template():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="on"):
        template(notifiers=[{"notifier": RECORDING, "on": ["sometimes"]}])


def test_the_file_notifications_kinds_are_the_events_and_a_quarantine(tmp_path):
    """One type names the events: a template's notifiers take them, and each file notification's kind
    is one of them, or a quarantine, which has no notifier of its own."""
    from pydantic import ValidationError

    from pclean_provider.pipeline.notify import (
        NotifierEvent,
        notify_nothing_arrived,
        notify_quarantined,
        read_notifications,
    )

    with pytest.raises(ValidationError, match="on"):
        template(notifiers=[{"notifier": RECORDING, "on": ["ms_quarantined"]}])
    every = template(notifiers=[{"notifier": RECORDING, "on": [str(event) for event in NotifierEvent]}])
    assert every.notifiers[0].on == list(NotifierEvent)
    notify_quarantined("d", "r", "/landing/a.ms", "no SPECTRAL_WINDOW", "/q/a.ms.reason", directory=tmp_path)
    notify_nothing_arrived("d", "r", "no MeasurementSet", directory=tmp_path)
    assert sorted(note.kind for note in read_notifications(tmp_path)) == ["ms_quarantined", "nothing_arrived"]


def test_send_calls_the_events_notifiers_and_survives_a_failing_one(tmp_path, caplog):
    from pclean_provider.dags.notifiers import send

    sent = tmp_path / "sent.jsonl"
    t = template(notifiers=[
        # Its file's folder does not exist: the call fails, as a mail server that refuses would.
        {"notifier": RECORDING, "on": ["qa_review"], "kwargs": {"path": str(tmp_path / "absent" / "x"), "subject": "review"}},
        {"notifier": RECORDING, "on": ["qa_review"], "kwargs": {"path": str(sent), "subject": "review"}},
        {"notifier": RECORDING, "on": ["task_failed"], "kwargs": {"path": str(tmp_path / "other.jsonl")}},
    ])
    send(t, "qa_review", {"run_id": "r1"})
    assert [json.loads(line)["run_id"] for line in sent.read_text().splitlines()] == ["r1"]
    assert not (tmp_path / "other.jsonl").exists()
    assert "notifier RecordingNotifier for qa_review failed" in caplog.text
