"""collect_subcubes and group_subcubes: the flat list of every MS's sub-cubes for one mapped
imaging task (Airflow cannot map inside a mapped group), and its split back per MS for concat."""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task


@task(task_id="collect_subcubes", retries=0)
def collect_subcubes(specs_per_ms: Any) -> list[dict]:
    """All MSs' sub-cubes as one list, so one mapped task images them all (no nested mapping)."""
    flat = [spec for specs in specs_per_ms for spec in specs]
    print(f"{len(flat)} sub-cubes from {len(list(specs_per_ms))} MeasurementSet(s)")
    return flat


@task(task_id="group_subcubes", retries=0)
def group_subcubes(specs_per_ms: Any, results: Any) -> list[dict]:
    """Hand each MS's concatenation its plan and its own sub-cube results, in map-index order."""
    ti = get_current_context()["ti"]
    results = list(results)
    grouped, offset = [], 0
    for ms_index, specs in enumerate(specs_per_ms):
        n = len(specs)
        plan = ti.xcom_pull(task_ids="partition", key="plan", map_indexes=ms_index)
        # The config's concat mode and restoring beam travel with the plan to that MS's concat.
        options = ti.xcom_pull(task_ids="partition", key="concat_options", map_indexes=ms_index)
        grouped.append({"plan": plan, "results": results[offset:offset + n], "concat_options": options})
        offset += n
    return grouped
