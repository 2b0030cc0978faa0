"""What the provider's operators run on the Dask cluster, and how that work is named and found.

No Airflow import here: these functions execute on Dask workers, which need only ``casa/``,
``config/`` and ``engine/``. Arguments and results are JSON text or plain dicts (pydantic models
dumped), never image data.

Each piece of work carries a deterministic Dask key and is published under that key, so that a
trigger started later in another process (or after a triggerer restart) finds the same work by
name instead of starting it again; its result is also written to a small JSON file next to the
products, so that a finished result survives even a scheduler restart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

KEY_PREFIX = "pclean"
#: Exceptions of the engine that mean "the input is wrong": retrying cannot help.
INPUT_ERRORS = frozenset({"PreflightError", "PlanError", "ConfigError", "ContinuumInputError", "BridgeError",
                          "SelectionError"})
STATE_DIRNAME = ".pclean-airflow"


# -- naming -------------------------------------------------------------------------------------


def work_key(kind: str, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Deterministic key of one task try's Dask work; only the try number separates two tries."""
    return f"{work_key_prefix(kind, dag_id, run_id, task_id, map_index)}try{int(try_number)}"


def work_key_prefix(kind: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    parts = [KEY_PREFIX, kind, dag_id, run_id, task_id, f"m{int(map_index)}"]
    return "-".join(_safe(p) for p in parts) + "-"


def try_of_key(key: str) -> int | None:
    match = re.search(r"-try(\d+)$", key)
    return int(match.group(1)) if match else None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text))


def result_path(state_dir: str, key: str) -> str:
    return os.path.join(state_dir, f"{key}.result.json")


def read_result(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def write_json_atomic(path: str, data: Any) -> None:
    """Readers (the trigger, a retried task) never see half a result file."""
    from pclean_provider.atomic_files import write_json

    write_json(path, data)


# -- running with a recorded result ---------------------------------------------------------------


def run_recorded(result_file: str, func: Callable[..., dict], *args: Any) -> dict:
    """Run ``func(*args)`` on a worker and keep its (small, JSON) result on the shared filesystem."""
    result = func(*args)
    write_json_atomic(result_file, result)
    return result


def _dump(model: Any) -> Any:
    return json.loads(model.model_dump_json()) if hasattr(model, "model_dump_json") else model


def _config(cfg_json: str):
    from pclean_provider.config import PcleanConfig

    return PcleanConfig.model_validate_json(cfg_json)


# -- the work itself --------------------------------------------------------------------------------


def plan_cube(cfg_json: str, nworkers: int, worker_memory_bytes: int | None, overwrite: bool = False) -> dict:
    """Partition on a worker: reading the MS's frequency grid needs casatools, which Airflow must not load."""
    from pclean_provider.engine.plan import plan_subcubes
    from pclean_provider.engine.preflight import PreflightError, check_cube_inputs

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
    from pclean_provider.engine.models import SubcubeSpec
    from pclean_provider.engine.subcube import image_subcube

    return _dump(image_subcube(SubcubeSpec.model_validate(spec)))


def concat_cube(plan: dict, results: list[dict], mode: str = "auto", keep_subcubes: bool = False) -> dict:
    from pclean_provider.engine.concat import concat_products
    from pclean_provider.engine.models import CubePlan, SubcubeResult

    return _dump(concat_products(CubePlan.model_validate(plan), [SubcubeResult.model_validate(r) for r in results],
                                 mode=mode, keep_subcubes=keep_subcubes))


def image_continuum(cfg_json: str) -> dict:
    """Run the continuum loop from a worker; its coordinator fans the major cycles out to the cluster."""
    from distributed import get_worker

    from pclean_provider.engine.continuum_remote import coordinator_task

    # coordinator_task secedes from this worker's thread pool while it waits, so the worker's one
    # thread stays free for the major-cycle parts the coordinator sends back to the cluster.
    return json.loads(coordinator_task(cfg_json, get_worker().scheduler.address))


def cluster_resources(client: Any) -> tuple[int, int | None]:
    """Worker count and the smallest per-worker memory limit (None when unlimited) of a cluster."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _accepts_n_workers(client) \
        else client.scheduler_info().get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    positive = [m for m in limits if m > 0]
    return max(len(workers), 1), (min(positive) if positive else None)


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


# -- progress lines -------------------------------------------------------------------------------


class ProgressTail:
    """Reads the lines a piece of work appended to its JSON-lines progress file since the last call."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None

    def new_lines(self) -> list[str]:
        if not self.path:
            return []
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            # The writer replaced the file (a new run starts it afresh by rename): read from the top.
            self.inode, self.offset = stat.st_ino, 0
        lines = []
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self.offset)
            while True:
                line = handle.readline()
                # A line without its newline is still being written: read it next time.
                if not line or not line.endswith("\n"):
                    break
                self.offset = handle.tell()
                lines.append(format_progress_line(line))
        return lines


def format_progress_line(line: str) -> str:
    """One readable log line from a JSON progress record (falls back to the raw text)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    if not isinstance(record, dict):
        return line.strip()
    if message := record.get("message"):
        return str(message)
    if "cycle" in record and "run_id" in record:
        try:
            from pclean_provider.engine.continuum_models import CycleReport

            return CycleReport.model_validate(record).line()
        except Exception:  # a record of another shape: show its fields
            pass
    return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def scheduler_task_state(key: str, dask_scheduler: Any = None) -> dict[str, Any]:
    """Run on the scheduler: the state of one key and, if it failed, the worker's error text.

    Asked of the scheduler directly because a fresh client's Future only learns its state some
    time after it is created, which would make a single quick poll unreliable.
    """
    task = dask_scheduler.tasks.get(key)
    if task is None:
        return {"state": "forgotten"}
    out: dict[str, Any] = {"state": task.state}
    if task.state == "erred":
        blame = task.exception_blame or task
        out["error"] = blame.exception_text or repr(blame.exception)
        out["error_type"] = out["error"].split("(", 1)[0].strip()
        out["traceback"] = blame.traceback_text or ""
    return out
