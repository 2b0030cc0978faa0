"""The sessions a process holds, and the calls a coordinator makes on them (Dask tasks or in-process).

Setting a session up (data selection, image definition, weighting) costs as much as a major cycle
on small data, and the weight density it was given must survive until the last cycle, so each
session is built once and kept in a registry of the process (a Dask worker, or the caller when
running serially), keyed by run id and part number. Every later step is a small call that names
the run, the part and the operation (`session_protocol`); a call that finds no session (the worker
was restarted, or the task landed on another worker) fails with an error naming the part instead
of silently imaging nothing.

Each step's CASA log goes to the part's own log file, and its process's standard error is kept
beside it, so that a process CASA ends leaves CASA's last words (`abort_reason`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pclean_provider.casa.runtime import ensure_casa_runtime, set_casa_log
from pclean_provider.casa.session_protocol import PartFailure, PartReply, Session, SessionSpec

_REGISTRY: dict[tuple[str, int], Session] = {}
_LOCK = threading.Lock()


def part_log_path(spec: SessionSpec) -> Path:
    """The CASA log of a part (or cube session)."""
    return Path(spec.log_dir or spec.workdir) / f"casa-part{spec.part + 1}.log"


def part_output_path(spec: SessionSpec) -> Path:
    """What the part's process wrote to its standard error during the part's steps.

    When CASA's C++ code meets an error it does not catch, it writes the reason there
    ("terminate called after throwing ... what(): ...") and the process ends; the CASA log has
    nothing of it, and to the coordinator the worker merely vanished.
    """
    return part_log_path(spec).with_suffix(".stderr")


def _part_log(spec: SessionSpec) -> None:
    ensure_casa_runtime()
    set_casa_log(part_log_path(spec))


@contextlib.contextmanager
def _stderr_kept(path: Path):
    """The process's standard error (file descriptor 2) also goes to `path` while a step runs.

    It goes there, and after the step it is written to the real standard error as well, so nothing
    disappears from the worker's own output; if the process dies in the step, `path` holds its last
    words. A folder that cannot be written leaves standard error alone.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "ab")
    except OSError:
        yield
        return
    with out:
        start = out.tell()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    with open(path, "rb") as captured:
        captured.seek(start)
        written = captured.read()
    if written:
        os.write(2, written)


# What a process that CASA ended writes last: the C++ runtime's reason for terminating an uncaught
# exception, or Python's own fatal error. Nothing that a process killed from outside (a lost node)
# could have written in passing, such as CASA's non-fatal SEVERE log lines, counts.
_ABORT_LINE = re.compile(r"terminate called|what\(\):|Fatal Python error")


def abort_lines(lines: Iterable[str]) -> list[str]:
    """The lines of a process's output in which CASA (or Python) says why it ended the process."""
    return [line.strip() for line in lines if _ABORT_LINE.search(line)]


def abort_reason(spec: SessionSpec, since: int = 0, max_lines: int = 6) -> str:
    """CASA's own account of why the part's process ended ('' when it left none since byte `since`
    of its output file), with where to read more."""
    path = part_output_path(spec)
    try:
        with open(path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = abort_lines(text.splitlines())
    if not lines:
        return ""
    return (f"CASA ended the process: {' | '.join(lines[-max_lines:])} (its output: {path}; "
            f"CASA log: {part_log_path(spec)})")


def output_size(spec: SessionSpec) -> int:
    """How far the part's output file goes now (`abort_reason` reads only what comes after)."""
    try:
        return part_output_path(spec).stat().st_size
    except OSError:
        return 0


def _reply(key: tuple[str, int], operation: str, t0: float, value: str | None) -> PartReply:
    return PartReply(run_id=key[0], part=key[1], operation=operation,
                     seconds=time.perf_counter() - t0, value=value, host=socket.gethostname(),
                     pid=os.getpid())


def warm_up(log_path: str) -> float:
    """Point this process's CASA log at a part's log file ahead of its first step; returns seconds.

    On a worker that did not load CASA at start-up (one this project did not start), the first
    call imports casatools, a second or more; a coordinator sends this before it partitions the
    rows and defines the image, so that any such import runs meanwhile, not inside the first
    part step.
    """
    t0 = time.perf_counter()
    ensure_casa_runtime()
    set_casa_log(log_path)
    return time.perf_counter() - t0


def register(spec: SessionSpec, build: Callable[[], Session]) -> str:
    """Build a session and keep it under (spec.run_id, spec.part), replacing an older one of that key;
    returns a PartReply as JSON."""
    key = (spec.run_id, spec.part)
    t0 = time.perf_counter()
    _part_log(spec)
    with _LOCK:
        old = _REGISTRY.pop(key, None)
    if old is not None:
        old.close()
    try:
        with _stderr_kept(part_output_path(spec)):
            session = build()
    except Exception as exc:
        raise PartFailure(f"{spec.label}: setting up the imager failed: {exc}") from exc
    with _LOCK:
        _REGISTRY[key] = session
    return _reply(key, "open", t0, None).model_dump_json()


def run_part(run_id: str, part: int, operation: str, **kwargs: Any) -> str:
    """Run one operation on a registered session; returns a PartReply as JSON."""
    key = (run_id, part)
    with _LOCK:
        session = _REGISTRY.get(key)
    if session is None:
        raise PartFailure(
            f"part {part + 1}: no imager for run {run_id} in process {os.getpid()} (the worker holding "
            f"it was restarted or lost); the run cannot continue without that part's rows")
    t0 = time.perf_counter()
    _part_log(session.spec)
    try:
        with _stderr_kept(part_output_path(session.spec)):
            value = session.run(operation, **kwargs)
    except PartFailure:
        raise
    except Exception as exc:
        raise PartFailure(f"{session.spec.label}: {operation} failed: {exc}") from exc
    return _reply(key, operation, t0, value).model_dump_json()


def close_part(run_id: str, part: int) -> bool:
    """Release the part's session (and its locks on its images). True if there was one."""
    with _LOCK:
        session = _REGISTRY.pop((run_id, part), None)
    if session is None:
        return False
    session.close()
    return True


def close_run(run_id: str) -> int:
    """Release every session of a run held by this process (clean-up after a failure)."""
    with _LOCK:
        keys = [k for k in _REGISTRY if k[0] == run_id]
        sessions = [_REGISTRY.pop(k) for k in keys]
    for session in sessions:
        session.close()
    return len(sessions)
