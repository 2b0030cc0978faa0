"""gather_subcubes: the fan-out's way from an MS's sub-cube batch tasks to its concatenation.

Inside the per-MS task group the fan-out is partition -> subcubes_1 .. subcubes_K (a fixed set of
batch tasks, each imaging one batch of the MS's sub-cubes; the ones the cube does not need skip)
-> gather_subcubes -> concat. gather_subcubes hands the concatenation this MS's plan, concat
options and every sub-cube result in cube order. It runs once its upstreams are done, failed or
not (trigger rule all_done_min_one_success: prepare succeeded; skipped when the night had nothing
to image), and fails, for this MS alone, naming the batch tasks or the partition that did not
succeed. Why the batch tasks a cube does not need succeed with nothing to image instead of being
skipped: this rule skips on any skipped upstream, and the rules that accept skipped upstreams
(none_failed_min_one_success and the other "fast" rules) judge a not-yet-expanded task of a
mapped group against every MS's upstreams, so one MS's failed batch would fail every MS's gather.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.operators.cube import BATCH_RANGES_XCOM_KEY, CONCAT_OPTIONS_XCOM_KEY, PLAN_XCOM_KEY


def batch_task_id(number: int) -> str:
    """The task id of an MS's batch task `number` (1-based, as shown in the grid)."""
    return f"subcubes_{number}"


@task(task_id="gather_subcubes", retries=0, trigger_rule="all_done_min_one_success", multiple_outputs=True,
      map_index_template="{{ task.op_kwargs['item']['name'] }}")
def gather_subcubes(item: dict, batch_tasks: int) -> dict:
    """This MS's plan, concat options and sub-cube results (in cube order) for its concat."""
    ti = get_current_context()["ti"]
    ms_index = ti.map_index
    plan = ti.xcom_pull(task_ids="partition", key=PLAN_XCOM_KEY, map_indexes=ms_index)
    batches = ti.xcom_pull(task_ids="partition", key=BATCH_RANGES_XCOM_KEY, map_indexes=ms_index)
    if plan is None or batches is None:
        raise AirflowFailException(f"{item['name']}: its partition did not succeed; see the partition task "
                                   f"of this MS (map index {ms_index}) for why")
    if len(batches) > batch_tasks:
        raise AirflowFailException(f"{item['name']}: the partition made {len(batches)} batches for "
                                   f"{batch_tasks} batch tasks; re-run the partition (with downstream)")
    results: list[dict] = []
    missing = []
    for number in range(1, len(batches) + 1):
        done = ti.xcom_pull(task_ids=batch_task_id(number), map_indexes=ms_index)
        if not done or not isinstance(done.get("results"), list):
            missing.append(batch_task_id(number))
            continue
        results.extend(done["results"])
    if missing:
        raise AirflowFailException(f"{item['name']}: sub-cube batch task(s) {', '.join(missing)} did not "
                                   "succeed; clear the failed one to redo its sub-cubes and this MS's concatenation")
    results.sort(key=lambda r: r["chan_start"])
    # The config's concat mode and restoring beam travel with the plan to this MS's concat.
    options = ti.xcom_pull(task_ids="partition", key=CONCAT_OPTIONS_XCOM_KEY, map_indexes=ms_index)
    return {PLAN_XCOM_KEY: plan, "results": results, CONCAT_OPTIONS_XCOM_KEY: options}
