"""What a ``pclean <step>`` hands back to the Airflow task that ran it: one typed result file.

The DAG tasks run ``pclean ingest|plan|qa|archive publish`` in a subprocess (so that no Airflow
process loads CASA) and need more back than an exit code: the accepted MSs, the plans, the QA
score, the published version. Each such step, given ``--result-file PATH``, writes one JSON file
there as it ends, through ``write_step_result``; the task reads it through ``read_step_result``.
Nothing else of the step's is parsed by the task: not its stdout, not the files it writes for
people (``qa.json``, ``qa.html``, the logs, which stay what they are).

A result names its step (``kind``), the schema version of this file, the exit code and its name
in the step's enum (``exit_codes``), a message saying why when the step did not succeed, and the
step's payload:

- ``ingest``: the ingest report (``accepted``, ``quarantined``, ``incomplete``, ``already_imaged``,
  ``unreadable``, ``taken_elsewhere``, ``refused``);
  ``REJECTED``: ``{"vis", "rejected"}``.
- ``plan``: ``{"plans": [...], "errors": [{"vis", "error"}]}`` (also with ``UNPLANNED``).
- ``qa``: ``{"overall_score", "overall_band", "not_judged_reason", "gate", "files"}``, ``files``
  naming the reports written (``qa.json``, ``qa.schema.json``, ``qa.html``).
- ``archive``: the ``PublishResult`` of ``pipeline.archive`` (``product_id``, ``version``, ``path``,
  ``manifest``, ``already_published``, ...).

The file is written to a temporary name and renamed (``atomic_files``), last of the step's
outputs: a task reading it sees a finished step's result or none. A step that dies before writing
it (killed, an uncaught error, argparse refusing the arguments) leaves none, and the reader then
builds the result from the exit code and the step's stderr, so the task has one thing to read
whatever happened.

Standard library only (with this package's bottom layer): the CLI writes it, the DAG tasks read it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pclean_provider.atomic_files import write_json
from pclean_provider.exit_codes import FAILED, exit_name

# Raised when the fields or their meaning change; a reader refuses a version it does not know
# rather than misread it.
SCHEMA_VERSION = 1
KINDS = ("ingest", "plan", "qa", "archive")


class StepResultError(ValueError):
    """A result file that is not a result of the expected step (another step's, a newer schema)."""


@dataclass(frozen=True)
class StepResult:
    kind: str  # the step: one of KINDS
    exit: str  # the exit code's name in the step's enum (exit_codes), e.g. "OK", "REJECTED"
    code: int  # the exit code itself
    payload: dict[str, Any] = field(default_factory=dict)
    message: str = ""  # why, when the step did not succeed
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(cls, kind: str, code: int, payload: dict[str, Any] | None = None, message: str = "") -> StepResult:
        if kind not in KINDS:
            raise ValueError(f"unknown step {kind!r}; the steps with a result file are {', '.join(KINDS)}")
        return cls(kind=kind, exit=exit_name(kind, int(code)), code=int(code), payload=dict(payload or {}),
                   message=message)

    @property
    def ok(self) -> bool:
        return self.code == 0


def write_step_result(path: str | os.PathLike, result: StepResult) -> Path:
    return write_json(path, asdict(result), indent=2, default=str)


def finish(path: str | os.PathLike | None, kind: str, code: int, payload: dict[str, Any] | None = None,
           message: str = "", unwritable: int = FAILED) -> int:
    """End a step: write its result file when the caller asked for one, and return the exit code.

    A result file that cannot be written (a full disk) leaves the caller without the step's answer,
    so the step then exits with ``unwritable`` (the step's code for "a retry may succeed") instead.
    """
    if path:
        try:
            write_step_result(path, StepResult.of(kind, code, payload, message))
        except OSError as exc:
            print(f"pclean {kind}: the result file {path} could not be written ({exc.strerror or exc}); "
                  "free space there and rerun", file=sys.stderr)
            return int(unwritable)
    return int(code)


def read_step_result(path: str | os.PathLike, kind: str, returncode: int, why: str = "") -> StepResult:
    """The result of the `kind` step that exited with `returncode`, from its result file.

    Without a file (the step died first, or argparse refused it) the result is built from the exit
    code and `why` (the step's last words on stderr). When the file disagrees with the exit code,
    the exit code wins: the process ended after writing it, and how it ended is what happened.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return StepResult.of(kind, returncode, message=why)
    except ValueError as exc:
        raise StepResultError(f"{p}: not a step result ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise StepResultError(f"{p}: result schema version {version!r}, this reader knows {SCHEMA_VERSION}; "
                              "the pclean command and the DAGs come from different installs")
    if data.get("kind") != kind:
        raise StepResultError(f"{p}: a result of 'pclean {data.get('kind')}', expected 'pclean {kind}'")
    if data.get("code") != returncode:
        said = data.get("exit")
        return StepResult.of(kind, returncode, message=f"{why} (its result file said {said})".strip())
    return StepResult.of(kind, returncode, data.get("payload") or {}, data.get("message") or "")
