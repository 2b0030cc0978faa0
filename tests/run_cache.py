"""What the suite makes once per run and every test process shares: simulated MSs.

`make test` runs several pytest processes (pytest-xdist). A session fixture is made once per process,
so each process would simulate the same MSs again. Here each thing is
made once per run in a run-wide folder (RUN_DIR_ENV, created by tests/conftest.py before the
processes start), the first process to need it making it under a file lock while the others wait.
The things are read, never changed: a test that changes an MS copies it first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUN_DIR_ENV = "PCLEAN_TEST_RUN_DIR"
DONE = "done.json"


def run_dir() -> Path:
    """The run-wide folder; a process started without tests/conftest.py (a helper script) makes its own."""
    if RUN_DIR_ENV not in os.environ:
        os.environ[RUN_DIR_ENV] = tempfile.mkdtemp(prefix="pclean-test-run-")
    return Path(os.environ[RUN_DIR_ENV])


def key_of(**parts: Any) -> str:
    """A short stable name for a set of parameters (JSON with sorted keys, hashed)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def made_once(folder: Path, make: Callable[[Path], dict]) -> dict:
    """`make(folder)` once per run; its JSON-able answer is kept beside what it wrote and returned
    to every later caller. A folder without its answer (a process died making it) is made again."""
    done = folder / DONE
    with _locked(folder):
        if done.exists():
            return json.loads(done.read_text())
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        answer = make(folder)
        staged = done.with_name(DONE + ".partial")
        staged.write_text(json.dumps(answer))
        os.replace(staged, done)
        return answer


def simulated(name: str, **kwargs: Any):
    """The simulator's MS `name` with these parameters, made once per run."""
    from pclean_provider.casa.simulator import SimulationResult, simulate_ms

    folder = run_dir() / "ms" / f"{name}-{key_of(**kwargs)}"
    answer = made_once(folder, lambda out: simulate_ms(out / f"{name}.ms", **kwargs).model_dump(mode="json"))
    return SimulationResult.model_validate(answer)

