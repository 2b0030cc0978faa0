"""Progress of long work: a bar on the command line, one log line per finished unit everywhere,
and the run's progress file for whoever waits from afar.

`Progress` is shared by the cube engines (unit: iteration for the exact loop, sub-cube for the
independent one) and the continuum engine (unit: iteration with a bar, else one line per major
cycle). The log line goes through `logging`, so Airflow task logs and Dask-free library use see
it; the bar (tqdm, done/total, elapsed and ETA) only appears when asked for, i.e. on an
interactive CLI.

`ProgressFile` is the one writer of ``<imagename>.progress.jsonl`` and `format_progress_line` its
one reader: one JSON object per line, each with the run's ``run_id``, an ``event`` (``cycle``,
``stopped``, ``finished``, ``failed``) and a readable ``message``; a record may carry more fields
(a cycle's figures, a finished run's result, a failure's error) for programs that read the file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from pclean_provider.atomic_files import write_text

_log = logging.getLogger("pclean_provider.progress")

# Files a run keeps next to the products that are not CASA images.
_PROGRESS_SUFFIX = ".progress.jsonl"


def progress_file_for(imagename: str) -> str:
    """Where a cube or continuum run appends its progress (JSON lines) - next to the products."""
    return os.path.abspath(imagename) + _PROGRESS_SUFFIX


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "sub-cube", bar: bool = False,
                 logger: logging.Logger | None = None, file=None):
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.done = 0
        self.logger = logger or _log
        self._t0 = time.monotonic()
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total or None, desc=desc, unit=unit, file=file or sys.stderr,
                             dynamic_ncols=True, leave=True)

    def eta_seconds(self) -> float | None:
        if self.done == 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self._t0
        return elapsed / self.done * (self.total - self.done)

    def advance(self, message: str = "", n: int = 1) -> None:
        """One (or n) more unit finished; logs one line naming it."""
        self.done += n
        eta = self.eta_seconds()
        eta_text = f", ETA {eta:.0f} s" if eta is not None and self.done < self.total else ""
        # total 0 = not known up front (major cycles): count without a denominator.
        count = f"{self.done}/{self.total}" if self.total > 0 else f"{self.done}"
        line = f"{self.desc}: {self.unit} {count} done{eta_text}"
        if message:
            line += f" - {message}"
        self.logger.info(line)
        if self._bar is not None:
            self._bar.update(n)
            if message:
                self._bar.set_postfix_str(message[:60], refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# What a progress record says happened (its `event`).
CYCLE = "cycle"
STOPPED = "stopped"
FINISHED = "finished"
FAILED = "failed"


class ProgressFile:
    """The one writer of a run's progress file: whole JSON lines appended, one per record."""

    def __init__(self, path: str, run_id: str, imaging: str) -> None:
        self.path = path
        self.run_id = run_id
        self.imaging = imaging
        # A new run starts a new file (a rename: a reader that sees the new file reads it from the top).
        write_text(path, "")

    def _append(self, event: str, message: str, fields: dict[str, Any]) -> None:
        record = {**fields, "run_id": self.run_id, "event": event, "message": message}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def cycle(self, message: str, **figures: Any) -> None:
        """One major cycle done; `figures` (cycle, iterations, ...) are kept beside the message."""
        self._append(CYCLE, message, figures)

    def stopped(self, stopcode: int, reason: str | None) -> None:
        """The iteration control stopped for another reason than the last cycle's record said."""
        self._append(STOPPED, f"{self.imaging} run {self.run_id} stopped: {reason} (stop code {stopcode})",
                     {"stopcode": stopcode, "stop_reason": reason})

    def finished(self, message: str, result: dict[str, Any]) -> None:
        """The last record of a successful run: a tailing reader (an Airflow trigger) can stop there."""
        self._append(FINISHED, message, {"result": result})

    def failed(self, exc: BaseException) -> None:
        """The last record of a run that ended without products, and why."""
        error = f"{type(exc).__name__}: {exc}"
        self._append(FAILED, f"{self.imaging} run {self.run_id} failed: {error}", {"error": error})


def format_progress_line(line: str) -> str:
    """The readable text of one line of a progress file: its record's ``message`` (else the raw
    text). Whoever tails a progress file from afar (the Airflow trigger, a waiting operator) logs
    them through this."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    if isinstance(record, dict) and record.get("message"):
        return str(record["message"])
    return line.strip()
