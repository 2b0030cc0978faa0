"""The per-target part of a pipeline DAG: one mapped task group over the night's (MS, target) pairs.

Each imaging target of each MS (prepare's items, from the plan) is one map index of the group
``ms``, which holds its whole path; the map index is named after the MS, and the target when
the MS has several:

cube, exact:  cube -> qa -> qa_gate -> archive | review -> review_decision
continuum:    continuum -> qa -> qa_gate -> archive | review -> review_decision
cube, fanout: partition -> subcubes_1 .. subcubes_K -> gather_subcubes -> concat -> qa -> qa_gate
              -> archive | review -> review_decision

review_decision waits for a person's answer on a product below the gate (tasks/review.py); the
cluster's teardown does not wait for it.

Inside a mapped group Airflow ties each task to the same map index of the task before it, so an
MS that fails imaging or QA fails only its own path (and its failure notification names it); the
others reach their gate and the archive. Clearing one MS's task "with downstream" selects only
that MS's tail.

The fan-out's two granularities: Dask runs every sub-cube as a task of its own (as fine as one
channel), while Airflow sees K batch tasks per MS (the template's ``cube.batch_tasks``), each
imaging one contiguous batch of the MS's sub-cubes and deferring while they run. They are K plain
tasks rather than one task mapped per batch because Airflow 3 refuses to map a task inside a
mapped group ("operator expansion in an expanded task group is not yet supported"), and a flat
map outside the group would make every MS's tail downstream of every batch: clearing one batch
would re-run all MSs' concatenation, QA and archive. Inside the group a cleared batch re-runs its
own sub-cubes and its own MS's gather, concat, QA, gate and archive only. The partition sizes the
batches (``engine.cube.plan.batch_ranges``: the cluster's workers and a target task time, at most K);
the batch tasks the cube does not need have nothing to image (see tasks/subcubes.py for why they are
not skipped). They use no pool that counts deferred tasks,
so the cluster, through Dask's queue, sets how many sub-cubes run at once.

The group's tasks keep their plain task ids (no ``ms.`` prefix), so the grid, the REST API and
the tests name them plainly: cube, qa, qa_gate, archive, review, review_decision.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task_group

from pclean_provider.dags.tasks.subcubes import batch_task_id, gather_subcubes
from pclean_provider.links.qa_report import show_qa_links
from pclean_provider.operators.continuum import ContinuumImagingOperator
from pclean_provider.operators.cube import (
    CONCAT_OPTIONS_XCOM_KEY,
    PLAN_XCOM_KEY,
    CubeConcatOperator,
    CubeImagingOperator,
    CubePartitionOperator,
    SubcubeBatchOperator,
    batch_xcom_key,
)

MS_NAME_FROM_VIS = "{{ task.overrides['vis'].rstrip('/').split('/')[-1] }}"
# The MS, and its target when it has several (prepare's label).
TARGET_LABEL = "{{ task.target_label or task.overrides['vis'].rstrip('/').split('/')[-1] }}"
# "night1.ms ch 0-63 (32 sub-cubes)": the MS first, then the batch's channels.
BATCH_LABEL = "{{ (task.vis_name ~ ' ' ~ task.batch_label) if task.vis_name else task.batch_label }}"
# Where an imaging task's bound comes from, for the error that ends a wait at it.
TIMEOUT_HINT = "the template's imaging_timeout (minutes, or base_minutes and the per-GB terms)"


def ms_group_kwargs(item: dict) -> dict:
    """One map index of the per-target group: the item and, apart, what its imaging operator reads."""
    return {"item": item, "overrides": item["overrides"], "presets": item["presets"],
            "label": item.get("label") or item["name"], "timeout": item.get("imaging_timeout_s")}


def per_ms_paths(t, prepared, cluster_up, address: str, pool: str, qa_tasks, archive_tasks, review_decision):
    """Build the per-MS task group; return it and the tasks the cluster's teardown must wait for.

    Those are the group's tasks up to archive and review, never ``review_decision``: a product
    waiting for a person must not keep the Dask cluster (nor its lease on the machines) alive, and
    nothing a reviewer asks for needs it (publishing copies files; a re-image is a new run with a
    cluster of its own)."""
    from airflow.sdk import XComArg

    qa, qa_gate = qa_tasks
    archive, review = archive_tasks
    fanout = t.kind == "cube" and t.cube_mode == "fanout"

    @task_group(group_id="ms", prefix_group_id=False,
                tooltip="one MeasurementSet's imaging, QA, gate and archive or review")
    def ms(item: Any, overrides: Any, presets: Any, label: Any, timeout: Any) -> None:
        imaging: Any
        if fanout:
            fan = t.cube
            # deferrable=True throughout, whatever [operators] default_deferrable says: a task waiting on
            # the cluster holds no worker slot, and the nightly DAGs' pools are sized on that.
            partition = CubePartitionOperator(
                task_id="partition", scheduler_address=address, deferrable=True, overrides=overrides,
                presets=presets, target_label=label, map_index_template=TARGET_LABEL,
                subcubes_per_task=fan.subcubes_per_task, batch_tasks=fan.batch_tasks,
                target_task_seconds=fan.target_task_seconds, subcube_seconds=fan.subcube_seconds)
            cluster_up >> partition
            # No pool: a deferred batch must not hold a slot; Dask queues its sub-cubes on the cluster.
            # Each task reads only its own batch's specs (a cube of thousands of channels has MBs of them).
            # Each batch, and the concatenation, within the target's bound: no batch can rightly take
            # longer than the whole cube may.
            batch_tasks = [SubcubeBatchOperator(task_id=batch_task_id(n), scheduler_address=address,
                                                deferrable=True,
                                                batch_specs=XComArg(partition, key=batch_xcom_key(n)),
                                                map_index_template=BATCH_LABEL, work_timeout=timeout,
                                                work_timeout_hint=TIMEOUT_HINT)
                           for n in range(1, fan.batch_tasks + 1)]
            gathered = gather_subcubes(item=item, batch_tasks=fan.batch_tasks)
            partition >> batch_tasks >> gathered
            imaging = CubeConcatOperator(
                task_id="concat", scheduler_address=address, deferrable=True, pool=pool,
                plan=gathered[PLAN_XCOM_KEY], results=gathered["results"],
                concat_options=gathered[CONCAT_OPTIONS_XCOM_KEY], work_timeout=timeout,
                work_timeout_hint=TIMEOUT_HINT,
                map_index_template="{{ task.plan['imagename'].rstrip('/').split('/')[-1] }}")
        else:
            operator = CubeImagingOperator if t.kind == "cube" else ContinuumImagingOperator
            # Deferrable whatever [operators] default_deferrable says, as the fan-out tasks above. Bounded by
            # the target's imaging timeout (prepare's, from the template and the cube): a hung coordinator
            # ends the wait, and the cluster's lease, instead of holding both for ever.
            imaging = operator(task_id=t.kind, scheduler_address=address, deferrable=True, pool=pool,
                               overrides=overrides, presets=presets, target_label=label,
                               map_index_template=TARGET_LABEL, work_timeout=timeout,
                               work_timeout_hint=TIMEOUT_HINT)
            cluster_up >> imaging
        checked = qa(item=item, imaging=imaging.output)
        routed = qa_gate(checked=checked)
        show_qa_links(checked, routed)  # "QA report" and "QA night" on the tasks that judge the product
        ends.extend([archive(item=routed), review(item=routed)])
        # After the ticket, and outside the cluster's setup/teardown scope (see the docstring).
        review_decision(item=ends[-1])

    ends: list[Any] = []
    group = ms.expand_kwargs(prepared.map(ms_group_kwargs))
    return group, [end.operator for end in ends]
