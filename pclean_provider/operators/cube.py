"""Spectral cubes on the Dask cluster, two ways.

The exact loop (cleaned cubes), one task per cube:

    cube = CubeImagingOperator(task_id="cube", overrides={...}, scheduler_address=addr)

Its work is the cube loop's coordinator (one iteration controller) on the cluster; the sub-cube
sessions live on the workers; one log line per major cycle while the task waits.

The mapped fan-out (dirty cubes, niter=0, or when asked for), in three steps:
partition -> one mapped task per batch of sub-cubes (each sub-cube a whole tclean run and a Dask
task of its own) -> concatenation.

    partition = CubePartitionOperator(task_id="partition", overrides={...}, scheduler_address=addr,
                                      batched=True)
    subcubes = SubcubeBatchOperator.partial(task_id="subcubes", scheduler_address=addr).expand(
        specs=partition.output)
    concat = CubeConcatOperator(task_id="concat", plan=partition.output["plan"],
                                concat_options=partition.output["concat_options"],
                                results=subcubes.output, scheduler_address=addr)

Every step runs on the Dask cluster; Airflow only validates, submits, waits in the triggerer and
passes small JSON (specs, result summaries) through XCom.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider import products
from pclean_provider.engine import worker_tasks
from pclean_provider.engine.cube import subcube_batch
from pclean_provider.engine.cube.plan import (
    DEFAULT_SUBCUBE_SECONDS,
    DEFAULT_TARGET_TASK_SECONDS,
    PlanError,
    batch_ranges,
)
from pclean_provider.engine.progress import progress_file_for
from pclean_provider.hooks.dask import DaskConnection
from pclean_provider.operators.base import PcleanDaskOperator
from pclean_provider.operators.config_input import ConfiguredImagingOperator, build_config
from pclean_provider.operators.lineage import imaging_lineage

PLAN_XCOM_KEY = "plan"
CONCAT_OPTIONS_XCOM_KEY = "concat_options"
BATCH_RANGES_XCOM_KEY = "batch_ranges"  # [first, stop) sub-cube indexes of every batch, in cube order


def batch_xcom_key(number: int) -> str:
    """The XCom key under which the partition pushes batch `number` (1-based) for a fixed batch task."""
    return f"batch_{number}"


class CubePartitionOperator(PcleanDaskOperator):
    """Plan the sub-cubes of a cube on the cluster; return their specs (a list to ``.expand()`` over).

    The full plan (grid, niter shares, work folder) is also pushed as XCom ``plan`` for the
    concatenation. Planning reads the MeasurementSet (casatools), so it runs on a Dask worker.

    :param overrides: imaging parameters (tclean names, flat), e.g. ``{"vis": ..., "imagename": ...}``.
    :param presets: preset names applied first (packaged, or in ``$PCLEAN_PRESETS_DIR``).
    :param config_files: YAML files applied after the presets.
    :param nworkers: how many sub-cubes to aim for; default: the cluster's worker count.
    :param overwrite: replace products already at ``imagename``. A retry or clear of this task
        (try > 1) may always replace what its own earlier tries made.
    :param allow_cleaned: accept ``niter > 0``. Each sub-cube is then cleaned by its own tclean run
        with its own iteration control, which is not what serial tclean does for the cube; without
        this flag a cleaned cube is refused here, pointing to ``CubeImagingOperator`` (the exact loop).
    :param subcubes_per_task: sub-cubes per ``SubcubeBatchOperator`` task; default: derived from the
        cluster's workers, ``target_task_seconds`` and ``subcube_seconds``. The batches' ranges are
        pushed as XCom ``batch_ranges``.
    :param max_batches: most batches; default Airflow's ``[core] max_map_length``, so that the
        batches can always be mapped. A batch grows past ``subcubes_per_task`` to fit.
    :param target_task_seconds: how long one batch should keep every worker busy (derived sizes).
    :param subcube_seconds: the expected wall time of one sub-cube (derived sizes).
    :param batched: return the batches (lists of specs) instead of the specs, to map
        ``SubcubeBatchOperator`` over (``.expand(specs=partition.output)``); the batches always fit
        in ``max_batches``, so the map stays within Airflow's limit for any channel count.
    :param batch_tasks: for a fixed set of batch tasks (the pipeline DAGs): push batch n under XCom
        ``batch_<n>`` for n = 1 .. batch_tasks (an empty list where the cube needs fewer), so that
        each task loads only its own specs; return the batch ranges. Also the default ``max_batches``.
    """

    template_fields: Sequence[str] = (*PcleanDaskOperator.template_fields, "overrides", "presets",
                                      "config_files", "nworkers", "subcubes_per_task", "max_batches",
                                      "target_label")
    template_fields_renderers = {"overrides": "json"}
    work_kind = "partition"

    def __init__(self, *, overrides: dict[str, Any] | None = None, presets: Sequence[str] | str | None = None,
                 config_files: Sequence[str] | str | None = None, nworkers: int | None = None,
                 overwrite: bool = False, allow_cleaned: bool = False, subcubes_per_task: int | None = None,
                 max_batches: int | None = None, target_task_seconds: float = DEFAULT_TARGET_TASK_SECONDS,
                 subcube_seconds: float = DEFAULT_SUBCUBE_SECONDS, batched: bool = False,
                 batch_tasks: int | None = None, target_label: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_label = target_label  # display only: the MS and its imaging target
        self.overrides = overrides
        self.presets = presets
        self.config_files = config_files
        self.nworkers = nworkers
        self.overwrite = overwrite
        self.allow_cleaned = allow_cleaned
        self.subcubes_per_task = subcubes_per_task
        self.max_batches = max_batches
        self.target_task_seconds = target_task_seconds
        self.subcube_seconds = subcube_seconds
        self.batched = batched
        self.batch_tasks = batch_tasks

    def execute(self, context: Any) -> Any:
        self._check_batching()
        cfg = build_config(self.task_id, self.overrides, self.presets, self.config_files)
        if not cfg.is_cube:
            raise AirflowFailException(
                f"{self.task_id}: specmode={cfg.spectral.specmode!r} is not a cube; CubePartitionOperator "
                "needs specmode='cube' (or 'cubedata'/'cubesource'). Use ContinuumImagingOperator for mfs.")
        niter = int(cfg.tclean_kwargs().get("niter", 0) or 0)
        if niter > 0 and not self.allow_cleaned:
            raise AirflowFailException(
                f"{self.task_id}: niter={niter}: the fan-out images every sub-cube as a whole tclean run with "
                "its own iteration control, so a cleaned cube would not equal serial tclean's. Clean cubes "
                "with CubeImagingOperator (pipeline template cube_mode: exact), set niter=0 for a dirty "
                "cube, or pass allow_cleaned=True to accept independently cleaned sub-cubes.")
        cfg_json = cfg.model_dump_json()
        overwrite = bool(self.overwrite) or int(context["ti"].try_number) > 1

        def make_args(dask: DaskConnection) -> tuple:
            workers, memory = dask.cluster_resources()
            nworkers = int(self.nworkers) if self.nworkers else workers
            self.log.info("Planning for %d sub-cube workers (cluster has %d)", nworkers, workers)
            return (cfg_json, nworkers, memory, overwrite)

        return self.run_on_cluster(context, worker_tasks.plan_cube, make_args,
                                   self.default_state_dir(cfg.image.imagename))

    def _check_batching(self) -> None:
        """Bad batch settings fail before any work is submitted, naming the setting."""
        try:
            batch_ranges(1, 1, max_batches=self._max_batches(), subcubes_per_task=self._per_task(),
                         target_task_seconds=float(self.target_task_seconds),
                         subcube_seconds=float(self.subcube_seconds))
        except (PlanError, TypeError, ValueError) as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc

    def _per_task(self) -> int | None:
        return None if self.subcubes_per_task in (None, "", "None") else int(self.subcubes_per_task)

    def _max_batches(self) -> int:
        if self.max_batches not in (None, "", "None"):
            return int(self.max_batches)
        if self.batch_tasks:
            return int(self.batch_tasks)
        from airflow.sdk.configuration import conf

        return conf.getint("core", "max_map_length")

    def on_result(self, context: Any, result: Any) -> Any:
        plan, specs = result["plan"], result["specs"]
        context["ti"].xcom_push(key=PLAN_XCOM_KEY, value=plan)
        context["ti"].xcom_push(key=CONCAT_OPTIONS_XCOM_KEY, value=result.get("concat_options") or {})
        ranges = batch_ranges(len(specs), int(plan.get("nworkers") or 1), max_batches=self._max_batches(),
                              subcubes_per_task=self._per_task(),
                              target_task_seconds=float(self.target_task_seconds),
                              subcube_seconds=float(self.subcube_seconds))
        batches = [specs[a:b] for a, b in ranges]
        context["ti"].xcom_push(key=BATCH_RANGES_XCOM_KEY, value=[list(r) for r in ranges])
        self.log.info("Cube of %d channels split into %d sub-cubes in %d batches (%s sub-cubes each, %d workers)",
                      plan["nchan"], len(specs), len(ranges), "/".join(sorted({str(b - a) for a, b in ranges})),
                      int(plan.get("nworkers") or 1))
        if len(specs) <= 64:
            self.log.info("Sub-cubes: %s", ", ".join(subcube_label(s) for s in specs))
        if self.batch_tasks:
            for number in range(1, int(self.batch_tasks) + 1):
                context["ti"].xcom_push(key=batch_xcom_key(number),
                                        value=batches[number - 1] if number <= len(batches) else [])
            return [list(r) for r in ranges]
        return batches if self.batched else specs


class SubcubeImagingOperator(PcleanDaskOperator):
    """Image one sub-cube on the cluster; meant to be mapped over the partition's specs.

    Deferrable: it submits and waits in the triggerer, holding no worker slot. A retry or a clear
    re-images only this sub-cube (a new try is new Dask work; a still-running older try is
    cancelled first, so two runs never write the same products).

    :param spec: one element of ``CubePartitionOperator``'s return value.
    """

    # `spec` is deliberately not templated: it is data from the partition (via .expand), and
    # rendering it again (natively, in a DAG with render_template_as_native_obj) could turn strings
    # such as "1" or "True" inside its tclean arguments into numbers and booleans.
    template_fields: Sequence[str] = PcleanDaskOperator.template_fields
    work_kind = "subcube"

    def __init__(self, *, spec: dict[str, Any],
                 map_index_template: str | None = "{{ task.subcube_label }}", **kwargs: Any) -> None:
        super().__init__(map_index_template=map_index_template, **kwargs)
        self.spec = spec

    @property
    def subcube_label(self) -> str:
        """The mapped instance's name in the UI: which channels and frequencies it images."""
        return subcube_label(self.spec) if isinstance(self.spec, dict) else str(self.spec)

    def label(self) -> str:
        return f"sub-cube {self.subcube_label}"

    def execute(self, context: Any) -> Any:
        spec = self.spec
        if not isinstance(spec, dict) or "imagename" not in spec or "chan_start" not in spec:
            raise AirflowFailException(
                f"{self.task_id}: spec must be one sub-cube spec from CubePartitionOperator (a dict with "
                f"imagename, chan_start, ...), got {type(spec).__name__}; map with .expand(spec=partition.output)")
        return self.run_on_cluster(context, worker_tasks.image_one_subcube, lambda dask: (spec,),
                                   self.default_state_dir(spec["imagename"]))

    def on_result(self, context: Any, result: Any) -> Any:
        self.log.info("%s done: %s iterations, stop: %s, %.1f s on %s", self.label(), result.get("iterations"),
                      result.get("stop_reason") or "-", result.get("seconds") or 0.0, result.get("host"))
        return result


class SubcubeBatchOperator(PcleanDaskOperator):
    """Image a batch of sub-cubes on the cluster, each sub-cube a Dask task of its own.

    One Airflow task per batch keeps a cube of any channel count within Airflow's map limit and its
    per-task scheduling cost small, while Dask runs every sub-cube as its own task on every worker
    the cluster has: the cluster sets how many run at once. Deferrable; give it no pool that counts
    deferred tasks, or the pool, not the cluster, caps the sub-cubes in flight. A retry or a clear
    re-images this batch's sub-cubes only (a new try is new Dask work; the older try's queued
    sub-cubes are cancelled).

    Either map it over the batches of a partition made with ``batched=True``::

        SubcubeBatchOperator.partial(task_id="subcubes", ...).expand(specs=partition.output)

    or give a fixed set of batch tasks one batch each (as the pipeline DAGs do inside their per-MS
    task group) from a partition made with ``batch_tasks=K``::

        SubcubeBatchOperator(task_id="subcubes_2", batch_specs=XComArg(partition, key=batch_xcom_key(2)), ...)

    A task given no sub-cubes (the cube needed fewer batches) succeeds at once with nothing to image,
    saying so, named "no batch" (not skipped: a skipped upstream would skip the MS's gather).

    :param specs: the sub-cube specs of this batch (one element of a batched partition's output).
    :param batch_specs: the same, templated, for an unmapped task (an XComArg resolves to its value
        without being rendered).
    """

    # `specs` is not templated, for the reason given at SubcubeImagingOperator; `batch_specs` is, so
    # that an XComArg given to an unmapped task resolves.
    template_fields: Sequence[str] = (*PcleanDaskOperator.template_fields, "batch_specs")
    work_kind = "subcubes"

    def __init__(self, *, specs: list[dict[str, Any]] | None = None, batch_specs: Any = None,
                 map_index_template: str | None = "{{ task.batch_label }}", **kwargs: Any) -> None:
        super().__init__(map_index_template=map_index_template, **kwargs)
        self.specs = specs
        self.batch_specs = batch_specs

    def _specs(self) -> Any:
        return self.specs if self.specs is not None else self.batch_specs

    @property
    def batch_label(self) -> str:
        """The mapped instance's name in the UI: 'ch 0-63 (64 sub-cubes)'."""
        specs = self._specs()
        if not specs or not isinstance(specs, list):
            return "no batch"
        count = f"{len(specs)} sub-cube{'' if len(specs) == 1 else 's'}"
        try:
            return f"ch {specs[0]['chan_start']}-{specs[-1]['chan_stop'] - 1} ({count})"
        except (KeyError, TypeError):
            return count

    @property
    def vis(self) -> str:
        """The batch's MeasurementSet (its first, for several), so a failure notification names it."""
        specs = self._specs() or []
        vis = specs[0].get("vis", "") if specs and isinstance(specs[0], dict) else ""
        return str(vis[0] if isinstance(vis, list) and vis else vis)

    @property
    def vis_name(self) -> str:
        """The MeasurementSet's name, for map names ('' when there is no batch)."""
        return self.vis.rstrip("/").split("/")[-1]

    def label(self) -> str:
        return f"sub-cube batch {self.batch_label}"

    def execute(self, context: Any) -> Any:
        specs = self._specs()
        if specs == []:
            self.log.info("%s: the cube needs fewer batches than there are batch tasks; nothing to image here",
                          self.task_id)
            return {"results": [], "timings": [], "seconds": 0.0}
        if not isinstance(specs, list) or not specs or not all(
                isinstance(s, dict) and "imagename" in s and "chan_start" in s for s in specs):
            raise AirflowFailException(
                f"{self.task_id}: specs (or batch_specs) must be one batch of sub-cube specs from "
                "CubePartitionOperator (an element of its output with batched=True, or its XCom batch_<n> with "
                f"batch_tasks=K); got {type(specs).__name__}")
        return self.run_on_cluster(context, subcube_batch.image_subcube_batch, lambda dask: (specs,),
                                   self.default_state_dir(specs[0]["imagename"]))

    def on_result(self, context: Any, result: Any) -> Any:
        timings = result.get("timings") or []
        workers = len({t.get("worker") for t in timings})
        self.log.info("%s done in %.1f s on %d worker(s)", self.label(), result.get("seconds") or 0.0, workers)
        return result


def subcube_results(results: Any) -> list[dict[str, Any]]:
    """The sub-cube results in mapped outputs of either operator (one per sub-cube, or per batch)."""
    out: list[dict[str, Any]] = []
    for item in results or []:
        if isinstance(item, dict) and isinstance(item.get("results"), list):
            out.extend(item["results"])
        elif item is not None:
            out.append(item)
    return out


class CubeConcatOperator(PcleanDaskOperator):
    """Join the sub-cube products into the full cube, in channel order, on the cluster.

    :param plan: the partition's plan (``partition.output["plan"]``).
    :param results: the mapped sub-cube results (``subcubes.output``), of ``SubcubeImagingOperator``
        or of ``SubcubeBatchOperator`` (each batch's results are taken in).
    :param concat_options: ``{"mode": ..., "keep_subcubes": ...}`` as the config asked
        (``partition.output["concat_options"]``); default: mode 'auto'.
    :param keep_subcubes: keep the sub-cube products after joining them (default True, whatever the
        config says): clearing one sub-cube later re-runs this task, which needs the other sub-cubes'
        products. False frees the disk space; a single sub-cube can then only be redone by clearing
        the whole run.
    """

    template_fields: Sequence[str] = (*PcleanDaskOperator.template_fields, "plan", "results", "concat_options")
    work_kind = "concat"

    def __init__(self, *, plan: Any, results: Any, concat_options: Any = None, keep_subcubes: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.results = results
        self.concat_options = concat_options
        self.keep_subcubes = keep_subcubes

    def execute(self, context: Any) -> Any:
        plan = self.plan
        results = subcube_results(self.results)
        if not isinstance(plan, dict) or "specs" not in plan:
            raise AirflowFailException(f"{self.task_id}: plan must be the partition's plan "
                                       "(partition.output['plan']).")
        expected = {s["index"] for s in plan["specs"]}
        got = {r["index"] for r in results}
        if got != expected:
            missing = sorted(expected - got)
            raise AirflowFailException(
                f"{self.task_id}: results for sub-cubes {missing} are missing; every sub-cube task must "
                "succeed before concatenation (clear the failed ones).")
        results.sort(key=lambda r: r["chan_start"])
        options = dict(self.concat_options or {})
        keep = bool(self.keep_subcubes) or bool(options.get("keep_subcubes", False))
        mode = str(options.get("mode", "auto"))
        if keep and mode == "movevirtual":
            # movevirtual consumes the sub-cubes; kept sub-cubes need a copying concatenation.
            self.log.info("concat_mode='movevirtual' would consume the sub-cubes this task keeps; using 'paged'.")
            mode = "paged"
        return self.run_on_cluster(context, worker_tasks.concat_cube, lambda dask: (plan, results, mode, keep),
                                   self.default_state_dir(plan["imagename"]))

    def on_result(self, context: Any, result: Any) -> Any:
        self.log.info("Cube %s: %s channels, products %s", result.get("imagename"), result.get("nchan"),
                      ", ".join(sorted(result.get("products", {}))))
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Called by Airflow's OpenLineage provider when it is on: the fan-out's cube is whole here,
        so this task reports the MS in and the cube's products out, as the exact mode's cube task does."""
        plan = self.plan if isinstance(self.plan, dict) else {}
        kwargs = plan.get("tclean_kwargs") or {}
        return imaging_lineage({"vis": kwargs.get("vis"), "imagename": plan.get("imagename")})


def subcube_label(spec: dict[str, Any]) -> str:
    """'ch 0-7 1.400000-1.407000 GHz' for a spec (channels inclusive, frequencies of the first/last)."""
    try:
        first, last = spec["chan_start"], spec["chan_stop"] - 1
        freqs = spec.get("frequencies_hz") or []
        text = f"ch {first}-{last}"
        if freqs:
            text += f" {freqs[0] / 1e9:.6f}-{freqs[-1] / 1e9:.6f} GHz"
        return text
    except (KeyError, TypeError):
        return str(spec.get("index", "?")) if isinstance(spec, dict) else "?"


class CubeImagingOperator(ConfiguredImagingOperator):
    """Image (and clean) one cube with the exact loop: equal to serial tclean for every stopping rule.

    Clearing this task reruns the whole cube (its sub-cube sessions share one iteration controller,
    so no part of a cleaned cube can be redone alone).

    :param overrides: imaging parameters (tclean names, flat); specmode must be a cube.
    :param presets: preset names applied first.
    :param config_files: YAML files applied after the presets.
    """

    work_kind = "cube"

    def label(self) -> str:
        return f"cube {self.task_id}"

    def execute(self, context: Any) -> Any:
        cfg = self.config()
        if not cfg.is_cube:
            raise AirflowFailException(
                f"{self.task_id}: specmode={cfg.spectral.specmode!r} is not a cube; CubeImagingOperator needs "
                "specmode='cube' or 'cubedata'. Use ContinuumImagingOperator for 'mfs'.")
        imagename = cfg.image.imagename
        self._imagename = imagename
        cfg_json = cfg.model_dump_json()

        return self.run_on_cluster(context, worker_tasks.image_cube, lambda dask: (cfg_json,),
                                   self.default_state_dir(imagename), progress_file=progress_file_for(imagename))

    def before_submit(self) -> None:
        # A pipeline's output folder belongs to its run; products of an earlier try of this task are
        # replaced (the engine refuses existing products, so they are removed first, with the
        # sub-cube sessions).
        os.makedirs(os.path.dirname(os.path.abspath(self._imagename)), exist_ok=True)
        self.clear_earlier_try(self._imagename, (*products.SINGLE_TERM_PRODUCTS, products.SUBCUBES))

    def on_result(self, context: Any, result: Any) -> Any:
        loop = result.get("cube_loop") or {}
        self.log.info("Cube %s: %s iterations in %s major cycles, stop: %s, %.1f s; stages %s",
                      result.get("imagename"), result.get("iterations"), loop.get("major_cycles"),
                      result.get("stop_reason") or "-", result.get("seconds") or 0.0, loop.get("stage_seconds"))
        return result

