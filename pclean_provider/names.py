"""Names made from outside text (run ids, MeasurementSet names) for folders, ids and Dask keys.

Sanitising alone maps many texts to one name (``T02:00:00+00:00`` and ``T02_00_00_00_00``, or
``a b.ms`` and ``a_b.ms``), and two runs or two MSs sharing a folder, a key or an archive id
adopt each other's results. So a name keeps its text when sanitising leaves it unchanged, and
otherwise becomes the readable sanitised text plus ``+`` and a short hash of the exact text:
sanitising never produces ``+``, so a hashed name cannot equal an unchanged one, and two texts
that sanitise alike differ in their hashes. Standard library only, so every layer can use it.
"""

from __future__ import annotations

import hashlib
import re

# Characters a folder name, an archive id and a Dask key may all keep as they are.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
HASH_SEPARATOR = "+"
# Long enough to read, short enough that a name with its hash stays far below NAME_MAX (255).
MAX_READABLE = 100
# Airflow's own limit on a run id (the dag_run.run_id column).
MAX_RUN_ID = 250


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def injective_name(text: str, unsafe: re.Pattern[str] = _UNSAFE, max_len: int = MAX_READABLE) -> str:
    """`text` itself when it is already a safe name, else its sanitised prefix + ``+`` + a hash of it."""
    cleaned = unsafe.sub("_", text)
    if cleaned == text and 0 < len(text) <= max_len and text not in (".", ".."):
        return text
    return f"{cleaned[:max_len]}{HASH_SEPARATOR}{short_hash(text)}"


def check_run_id(run_id: str) -> str:
    """Refuse a run id that cannot name a folder of its own; ValueError names run_id and the fix."""
    problem = None
    if not isinstance(run_id, str) or not run_id:
        problem = "it is empty"
    elif run_id in (".", ".."):
        problem = f"{run_id!r} names a folder that already exists (the current or the parent one)"
    elif "/" in run_id or "\\" in run_id:
        problem = "it contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in run_id):
        problem = "it contains control characters"
    elif len(run_id) > MAX_RUN_ID:
        problem = f"it is {len(run_id)} characters long (at most {MAX_RUN_ID})"
    if problem:
        raise ValueError(f"run_id={run_id[:40]!r} cannot name the run's folder: {problem}. Trigger the run "
                         "again with a run id of letters, digits and -_.:+ (or let Airflow choose one)")
    return run_id


def run_folder_name(run_id: str) -> str:
    """The folder (and file-name stem) of one DAG run: a different one for every run id."""
    return injective_name(check_run_id(run_id))
