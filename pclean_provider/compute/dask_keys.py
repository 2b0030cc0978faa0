"""The one place where this project's Dask keys are built and parsed.

Every key starts with ``pclean-``, so that the project's tasks stand out on a shared scheduler
and its dashboard. Three shapes:

- the work of one Airflow task try, ``pclean-<kind>-<dag>-<run>-<task>-m<map index>-try<n>``
  (``work_key``): deterministic, so that a trigger in another process finds the work again by
  name; restart-safety rests on this format, and changing it strands work already running;
- a sub-cube of a batch, ``<batch key>-sc<first channel>`` (``child_key``): known in advance from
  the batch's key, so a newer try of the batch can cancel the sub-cubes of the older ones;
- the engine's own tasks (part steps, the coordinator, independent sub-cubes),
  ``pclean-<word>-...-<word>`` (``engine_key``): a run token among the words keeps two runs apart.

Standard library only: every layer that talks to Dask (the Airflow side and the engine) uses it.
"""

from __future__ import annotations

import re
from typing import Any

from pclean_provider.names import injective_name

KEY_PREFIX = "pclean"
# Between a batch's key and the first channel of one of its sub-cubes.
CHILD_MARK = "-sc"


def work_key(kind: str, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Deterministic key of one task try's Dask work; only the try number separates two tries."""
    return f"{work_key_prefix(kind, dag_id, run_id, task_id, map_index)}try{int(try_number)}"


def work_key_prefix(kind: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    # The run id is free text (a REST trigger chooses it): sanitised alone, two runs could share keys
    # and one adopt the other's work, so it is made injective (names.injective_name).
    run = injective_name(str(run_id), unsafe=_UNSAFE_KEY)
    return "-".join([_safe(KEY_PREFIX), _safe(kind), _safe(dag_id), run, _safe(task_id), f"m{int(map_index)}"]) + "-"


def try_of_key(key: str) -> int | None:
    match = re.search(r"-try(\d+)$", key)
    return int(match.group(1)) if match else None


def prefix_of_key(key: str) -> str:
    """What every try of the same task's work shares (``work_key_prefix`` of the key's task)."""
    return re.sub(r"try\d+$", "", key)


def child_key(batch_key: str, spec: dict) -> str:
    """The Dask key of one sub-cube of a batch: the batch's key (task, map index, try) and the
    sub-cube's first channel, so the keys of a batch's sub-cubes are unique and known in advance."""
    return f"{batch_key}{CHILD_MARK}{int(spec['chan_start']):05d}"


def older_child_keys(batch_key: str, specs: list[dict]) -> list[str]:
    """The sub-cube keys the earlier tries of this batch used (a clear or retry makes a new try)."""
    this_try = try_of_key(batch_key)
    if this_try is None:
        return []
    stem = prefix_of_key(batch_key)
    return [child_key(f"{stem}try{n}", spec) for n in range(1, this_try) for spec in specs]


def engine_key(*words: Any) -> str:
    """Key of one of the engine's own tasks: the prefix and the words, joined by '-'."""
    return "-".join([KEY_PREFIX, *(str(w) for w in words)])


_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.]")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))
