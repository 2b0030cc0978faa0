"""collect_subcubes and gather_subcubes: the fan-out's way from one partition per MS to one flat
mapped sub-cube task (Airflow cannot map inside a mapped group) and back to each MS's concat.

Both tolerate the failure of another MS (trigger rule all_done_min_one_success: every upstream
done, failed or not; skipped when the night had nothing to image): collect_subcubes runs once
every partition is done and leaves out the MSs whose partition failed; gather_subcubes, inside the per-MS task group, waits
for every sub-cube and hands its MS's concatenation only that MS's own results, failing (for this
MS alone) when its partition or one of its sub-cubes did not succeed.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

LAYOUT_XCOM = "layout"  # collect_subcubes pushes, per MS, the flat sub-cube map indexes it got


@task(task_id="collect_subcubes", retries=0, trigger_rule="all_done_min_one_success")
def collect_subcubes(prepared: Any) -> list[dict]:
    """All MSs' sub-cubes as one list, so one mapped task images them all (no nested mapping)."""
    ti = get_current_context()["ti"]
    flat: list[dict] = []
    layout: list[list[int] | None] = []
    for ms_index, item in enumerate(prepared):
        specs = ti.xcom_pull(task_ids="partition", map_indexes=ms_index)
        if not specs:
            # Its partition failed (and notified); this MS's own gather fails, the others go on.
            print(f"{item['name']}: no sub-cube plan (its partition did not succeed); left out")
            layout.append(None)
            continue
        layout.append(list(range(len(flat), len(flat) + len(specs))))
        flat.extend(specs)
    ti.xcom_push(key=LAYOUT_XCOM, value=layout)
    print(f"{len(flat)} sub-cubes from {sum(x is not None for x in layout)} of {len(layout)} MeasurementSet(s)")
    return flat


@task(task_id="gather_subcubes", retries=0, trigger_rule="all_done_min_one_success", multiple_outputs=True,
      map_index_template="{{ task.op_kwargs['item']['name'] }}")
def gather_subcubes(item: dict) -> dict:
    """This MS's plan, concat options and sub-cube results (in cube order) for its concat."""
    ti = get_current_context()["ti"]
    ms_index = ti.map_index
    layout = ti.xcom_pull(task_ids="collect_subcubes", key=LAYOUT_XCOM) or []
    indexes = layout[ms_index] if ms_index < len(layout) else None
    plan = ti.xcom_pull(task_ids="partition", key="plan", map_indexes=ms_index)
    if indexes is None or plan is None:
        raise AirflowFailException(f"{item['name']}: its partition did not succeed; see the partition task "
                                   f"of this MS (map index {ms_index}) for why")
    results = [ti.xcom_pull(task_ids="image_subcube", map_indexes=i) for i in indexes]
    missing = [i for i, r in zip(indexes, results, strict=True) if not r]
    if missing:
        raise AirflowFailException(f"{item['name']}: sub-cube task(s) image_subcube {missing} did not succeed; "
                                   "clear the failed sub-cube to redo it and this MS's concatenation")
    # The config's concat mode and restoring beam travel with the plan to this MS's concat.
    options = ti.xcom_pull(task_ids="partition", key="concat_options", map_indexes=ms_index)
    return {"plan": plan, "results": results, "concat_options": options}
