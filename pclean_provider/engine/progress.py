"""Progress of long work: a bar on the command line, one log line per finished unit everywhere.

Shared by the cube engines (unit: iteration for the exact loop, sub-cube for the independent one)
and the continuum engine (unit: iteration with a bar, else one line per major cycle). The
log line goes through `logging`, so Airflow task logs and Dask-free library use see it; the bar
(tqdm, done/total, elapsed and ETA) only appears when asked for, i.e. on an interactive CLI.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

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


def format_progress_line(line: str) -> str:
    """One readable log line from a JSON progress record (falls back to the raw text).

    The records are the engine's own (a ``message``, or a continuum ``CycleReport``); whoever tails
    a progress file from afar (the Airflow trigger, a waiting operator) logs them through this.
    """
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    if not isinstance(record, dict):
        return line.strip()
    if message := record.get("message"):
        return str(message)
    if "cycle" in record and "run_id" in record:
        try:
            from pclean_provider.engine.continuum.models import CycleReport

            return CycleReport.model_validate(record).line()
        except Exception:  # a record of another shape: show its fields
            pass
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
