"""An Airflow notifier for the tests: appends one JSON line per call to a file, as a mail or chat
notifier would send one message, so a test can see that the pipeline called it and with what."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier


class RecordingNotifier(BaseNotifier):
    template_fields = ("subject",)

    def __init__(self, path: str, subject: str = "pclean {{ dag.dag_id }}"):
        super().__init__()
        self.path = path
        self.subject = subject

    def _record(self, context: Any) -> None:
        ti = context.get("ti") or context.get("task_instance")
        line = {"subject": self.subject, "task_id": getattr(ti, "task_id", None),
                "run_id": context.get("run_id") or getattr(ti, "run_id", None)}
        with Path(self.path).open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    def notify(self, context: Any) -> None:
        self._record(context)

    async def async_notify(self, context: Any) -> None:
        self._record(context)
