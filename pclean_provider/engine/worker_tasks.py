"""What the provider's operators run on Dask workers: one function per kind of task.

No Airflow import here: these functions execute on Dask workers, which need only ``casa/``,
``config/`` and ``engine/``. Arguments and results are JSON text or plain dicts (pydantic models
dumped), never image data. Every import of the engine is inside the function so that the Airflow
process, which only names these functions when it submits them, never loads the engine and what
it needs (distributed, numpy, psutil, CASA's modules).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pclean_provider.config import PcleanConfig


def _dump(model: Any) -> Any:
    return json.loads(model.model_dump_json()) if hasattr(model, "model_dump_json") else model


def _config(cfg_json: str):
    return PcleanConfig.model_validate_json(cfg_json)


def plan_cube(cfg_json: str, nworkers: int, worker_memory_bytes: int | None, overwrite: bool = False) -> dict:
    """Partition on a worker: reading the MS's frequency grid needs casatools, which Airflow must not load."""
    from pclean_provider.engine.cube.plan import plan_subcubes
    from pclean_provider.engine.cube.preflight import check_cube_inputs
    from pclean_provider.engine.imaging_errors import PreflightError

    cfg = _config(cfg_json)
    # A pipeline's output folder belongs to its run: create it rather than refuse it.
    os.makedirs(os.path.dirname(os.path.abspath(cfg.image.imagename)), exist_ok=True)
    try:
        check_cube_inputs(cfg)
    except PreflightError as err:
        # Products of an earlier try of this same run are not a reason to refuse a re-plan (a clear
        # of the whole run); the concatenation replaces them atomically.
        if not (overwrite and "already exists" in str(err)):
            raise
    plan = plan_subcubes(cfg, nworkers, worker_memory_bytes=worker_memory_bytes)
    return {"plan": _dump(plan), "specs": [_dump(spec) for spec in plan.specs],
            "concat_options": {"mode": cfg.extras.concat_mode, "keep_subcubes": cfg.extras.keep_subcubes}}


def image_one_subcube(spec: dict) -> dict:
    from pclean_provider.engine.cube.subcube import image_subcube
    from pclean_provider.engine.models import SubcubeSpec

    return _dump(image_subcube(SubcubeSpec.model_validate(spec)))


def concat_cube(plan: dict, results: list[dict], mode: str = "auto", keep_subcubes: bool = False) -> dict:
    from pclean_provider.engine.cube.concat import concat_products
    from pclean_provider.engine.models import CubePlan, SubcubeResult

    return _dump(concat_products(CubePlan.model_validate(plan), [SubcubeResult.model_validate(r) for r in results],
                                 mode=mode, keep_subcubes=keep_subcubes))


def image_continuum(cfg_json: str) -> dict:
    """Run the continuum loop from a worker; its coordinator fans the major cycles out to the cluster."""
    from distributed import get_worker

    from pclean_provider.engine.coordinator import coordinator_task

    # coordinator_task secedes from this worker's thread pool while it waits, so the worker's one
    # thread stays free for the major-cycle parts the coordinator sends back to the cluster.
    return json.loads(coordinator_task(cfg_json, get_worker().scheduler.address))


def image_cube(cfg_json: str) -> dict:
    """Run the exact cube loop from a worker: its coordinator (one iteration controller) runs in a
    subprocess of this task, the sub-cube sessions on the cluster's workers (as `image_continuum`)."""
    from distributed import get_worker

    from pclean_provider.engine.coordinator import coordinator_task

    return json.loads(coordinator_task(cfg_json, get_worker().scheduler.address))
