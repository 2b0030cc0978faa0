"""The imaging part of a pipeline DAG, made of the provider's operators on the run's Dask cluster.

cube, exact:  cube[ms]  (the exact loop: sub-cube sessions, one iteration controller)
cube, fanout: partition[ms] -> collect_subcubes -> image_subcube[sub-cube] -> group_subcubes -> concat[ms]
continuum:    continuum[ms]
"""

from __future__ import annotations

from pclean_provider.dags.tasks.subcubes import collect_subcubes, group_subcubes

MS_NAME_FROM_VIS = "{{ task.overrides['vis'].rstrip('/').split('/')[-1] }}"


def imaging_kwargs(item: dict) -> dict:
    """What a per-MS imaging operator gets from prepare's item (module level: XComArg.map needs it)."""
    return {"overrides": item["overrides"], "presets": item["presets"]}


def cube_imaging(prepared, cluster_up, address: str, pool: str, mode: str = "exact"):
    from pclean_provider.operators.cube import (
        CubeConcatOperator,
        CubeImagingOperator,
        CubePartitionOperator,
        SubcubeImagingOperator,
    )

    if mode == "exact":
        cube = CubeImagingOperator.partial(
            task_id="cube", scheduler_address=address, pool=pool, map_index_template=MS_NAME_FROM_VIS,
        ).expand_kwargs(prepared.map(imaging_kwargs))
        cluster_up >> cube
        return cube.output

    partition = CubePartitionOperator.partial(
        task_id="partition", scheduler_address=address, map_index_template=MS_NAME_FROM_VIS,
    ).expand_kwargs(prepared.map(imaging_kwargs))
    cluster_up >> partition
    specs = collect_subcubes(partition.output)
    subcubes = SubcubeImagingOperator.partial(
        task_id="image_subcube", scheduler_address=address, pool=pool,
    ).expand(spec=specs)
    grouped = group_subcubes(partition.output, subcubes.output)
    concat = CubeConcatOperator.partial(
        task_id="concat", scheduler_address=address, pool=pool,
        map_index_template="{{ task.plan['imagename'].rstrip('/').split('/')[-1] }}",
    ).expand_kwargs(grouped)
    return concat.output


def continuum_imaging(prepared, cluster_up, address: str, pool: str):
    from pclean_provider.operators.continuum import ContinuumImagingOperator

    continuum = ContinuumImagingOperator.partial(
        task_id="continuum", scheduler_address=address, pool=pool, map_index_template=MS_NAME_FROM_VIS,
    ).expand_kwargs(prepared.map(imaging_kwargs))
    cluster_up >> continuum
    return continuum.output
