"""The per-MS part of a pipeline DAG: one mapped task group over the night's MeasurementSets.

Each MS of the night is one map index of the group ``ms``, which holds its whole path:

cube, exact:  cube -> qa -> qa_gate -> archive | review
continuum:    continuum -> qa -> qa_gate -> archive | review
cube, fanout: partition[ms] -> collect_subcubes -> image_subcube[sub-cube]
              -> (group) gather_subcubes -> concat -> qa -> qa_gate -> archive | review

Inside a mapped group Airflow ties each task to the same map index of the task before it, so an
MS that fails imaging or QA fails only its own path (and its failure notification names it); the
others reach their gate and the archive. Clearing one MS's cube "with downstream" selects only
that MS's QA, gate and archive. The fan-out's sub-cubes cannot live in the group (Airflow does not
map inside a mapped group), so they are one flat mapped task between the partition and the group;
``collect_subcubes`` and ``gather_subcubes`` run whatever the other MSs did (trigger rule
``all_done_min_one_success``) and each MS's gather fails only for its own missing plan or sub-cube.

The group's tasks keep their plain task ids (no ``ms.`` prefix), so the grid, the REST API and
the tests name them as before: cube, qa, qa_gate, archive, review.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task_group

from pclean_provider.dags.tasks.subcubes import collect_subcubes, gather_subcubes

MS_NAME_FROM_VIS = "{{ task.overrides['vis'].rstrip('/').split('/')[-1] }}"
# "night1.ms ch 0-3 1.400000-1.403000 GHz": the MS first, then the operator's channel label.
SUBCUBE_LABEL = ("{{ ((task.spec['vis'] if task.spec['vis'] is string else task.spec['vis'][0])"
                 ".rstrip('/').split('/')[-1]) ~ ' ' ~ task.subcube_label }}")


def imaging_kwargs(item: dict) -> dict:
    """What a per-MS imaging operator gets from prepare's item (module level: XComArg.map needs it)."""
    return {"overrides": item["overrides"], "presets": item["presets"]}


def ms_group_kwargs(item: dict) -> dict:
    """One map index of the per-MS group: the item and, apart, what its imaging operator reads."""
    return {"item": item, "overrides": item["overrides"], "presets": item["presets"]}


def per_ms_paths(t, prepared, cluster_up, address: str, pool: str, qa_tasks, archive_tasks):
    """Build the per-MS task group (and, for the fan-out, the flat sub-cube map before it) and
    return the group, so that the caller can put the cluster's teardown after it."""
    from pclean_provider.operators.cube import (
        CubeConcatOperator,
        CubeImagingOperator,
        CubePartitionOperator,
        SubcubeImagingOperator,
    )

    qa, qa_gate = qa_tasks
    archive, review = archive_tasks
    subcubes = None
    if t.kind == "cube" and t.cube_mode == "fanout":
        partition = CubePartitionOperator.partial(
            task_id="partition", scheduler_address=address, map_index_template=MS_NAME_FROM_VIS,
        ).expand_kwargs(prepared.map(imaging_kwargs))
        cluster_up >> partition
        specs = collect_subcubes(prepared)
        partition >> specs
        subcubes = SubcubeImagingOperator.partial(
            task_id="image_subcube", scheduler_address=address, pool=pool, map_index_template=SUBCUBE_LABEL,
        ).expand(spec=specs)

    @task_group(group_id="ms", prefix_group_id=False,
                tooltip="one MeasurementSet's imaging, QA, gate and archive or review")
    def ms(item: Any, overrides: Any, presets: Any) -> None:
        imaging: Any
        if subcubes is not None:
            gathered = gather_subcubes(item=item)
            subcubes >> gathered
            imaging = CubeConcatOperator(
                task_id="concat", scheduler_address=address, pool=pool, plan=gathered["plan"],
                results=gathered["results"], concat_options=gathered["concat_options"],
                map_index_template="{{ task.plan['imagename'].rstrip('/').split('/')[-1] }}")
        else:
            from pclean_provider.operators.continuum import ContinuumImagingOperator

            operator = CubeImagingOperator if t.kind == "cube" else ContinuumImagingOperator
            imaging = operator(task_id=t.kind, scheduler_address=address, pool=pool, overrides=overrides,
                               presets=presets, map_index_template=MS_NAME_FROM_VIS)
            cluster_up >> imaging
        checked = qa(item=item, imaging=imaging.output)
        routed = qa_gate(checked=checked)
        archive(item=routed)
        review(item=routed)

    return ms.expand_kwargs(prepared.map(ms_group_kwargs))
