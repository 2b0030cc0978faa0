"""Spectral cubes on the Dask cluster, two ways.

The exact loop (cleaned cubes), one task per cube:

    cube = CubeImagingOperator(task_id="cube", overrides={...}, scheduler_address=addr)

Its work is the cube loop's coordinator (one iteration controller) on the cluster; the sub-cube
sessions live on the workers; one log line per major cycle while the task waits.

The mapped fan-out (dirty cubes, niter=0, or when asked for), in three steps:
partition -> one mapped task per sub-cube (a whole tclean run each) -> concatenation.

    partition = CubePartitionOperator(task_id="partition", overrides={...}, scheduler_address=addr)
    subcubes = SubcubeImagingOperator.partial(task_id="subcube", scheduler_address=addr).expand(
        spec=partition.output)
    concat = CubeConcatOperator(task_id="concat", plan=partition.output["plan"],
                                concat_options=partition.output["concat_options"],
                                results=subcubes.output, scheduler_address=addr)

Every step runs on the Dask cluster; Airflow only validates, submits, waits in the triggerer and
passes small JSON (specs, result summaries) through XCom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.engine import worker_tasks
from pclean_provider.operators.base import PcleanDaskOperator
from pclean_provider.operators.config_input import ConfiguredImagingOperator, build_config

PLAN_XCOM_KEY = "plan"
CONCAT_OPTIONS_XCOM_KEY = "concat_options"


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
    """

    template_fields: Sequence[str] = (*PcleanDaskOperator.template_fields, "overrides", "presets",
                                      "config_files", "nworkers")
    template_fields_renderers = {"overrides": "json"}
    work_kind = "partition"

    def __init__(self, *, overrides: dict[str, Any] | None = None, presets: Sequence[str] | str | None = None,
                 config_files: Sequence[str] | str | None = None, nworkers: int | None = None,
                 overwrite: bool = False, allow_cleaned: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.overrides = overrides
        self.presets = presets
        self.config_files = config_files
        self.nworkers = nworkers
        self.overwrite = overwrite
        self.allow_cleaned = allow_cleaned

    def execute(self, context: Any) -> Any:
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

        def make_args(client: Any) -> tuple:
            workers, memory = self.hook().cluster_resources(client)
            nworkers = int(self.nworkers) if self.nworkers else workers
            self.log.info("Planning for %d sub-cube workers (cluster has %d)", nworkers, workers)
            return (cfg_json, nworkers, memory, overwrite)

        return self.run_on_cluster(context, worker_tasks.plan_cube, make_args,
                                   self.default_state_dir(cfg.image.imagename))

    def on_result(self, context: Any, result: Any) -> Any:
        plan, specs = result["plan"], result["specs"]
        context["ti"].xcom_push(key=PLAN_XCOM_KEY, value=plan)
        context["ti"].xcom_push(key=CONCAT_OPTIONS_XCOM_KEY, value=result.get("concat_options") or {})
        self.log.info("Cube of %d channels split into %d sub-cubes: %s", plan["nchan"], len(specs),
                      ", ".join(subcube_label(s) for s in specs))
        return specs


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
        return self.run_on_cluster(context, worker_tasks.image_one_subcube, lambda client: (spec,),
                                   self.default_state_dir(spec["imagename"]))

    def on_result(self, context: Any, result: Any) -> Any:
        self.log.info("%s done: %s iterations, stop: %s, %.1f s on %s", self.label(), result.get("iterations"),
                      result.get("stop_reason") or "-", result.get("seconds") or 0.0, result.get("host"))
        return result


class CubeConcatOperator(PcleanDaskOperator):
    """Join the sub-cube products into the full cube, in channel order, on the cluster.

    :param plan: the partition's plan (``partition.output["plan"]``).
    :param results: the mapped sub-cube results (``subcubes.output``).
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
        results = [r for r in (self.results or []) if r is not None]
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
        return self.run_on_cluster(context, worker_tasks.concat_cube, lambda client: (plan, results, mode, keep),
                                   self.default_state_dir(plan["imagename"]))

    def on_result(self, context: Any, result: Any) -> Any:
        self.log.info("Cube %s: %s channels, products %s", result.get("imagename"), result.get("nchan"),
                      ", ".join(sorted(result.get("products", {}))))
        return result


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
        # A pipeline's output folder belongs to its run; products of an earlier try of this task are
        # replaced (the engine refuses existing products, so they are moved out of the way first).
        _clear_earlier_try(imagename)
        cfg_json = cfg.model_dump_json()
        from pclean_provider.engine.continuum import progress_file_for

        return self.run_on_cluster(context, worker_tasks.image_cube, lambda client: (cfg_json,),
                                   self.default_state_dir(imagename), progress_file=progress_file_for(imagename))

    def on_result(self, context: Any, result: Any) -> Any:
        loop = result.get("cube_loop") or {}
        self.log.info("Cube %s: %s iterations in %s major cycles, stop: %s, %.1f s; stages %s",
                      result.get("imagename"), result.get("iterations"), loop.get("major_cycles"),
                      result.get("stop_reason") or "-", result.get("seconds") or 0.0, loop.get("stage_seconds"))
        return result


def _clear_earlier_try(imagename: str) -> None:
    """Remove the cube products an earlier try left at `imagename` (only those: never a folder that
    merely shares the name's prefix, such as the MeasurementSet `<imagename>.ms`)."""
    import os
    import shutil

    from pclean_provider import products

    os.makedirs(os.path.dirname(os.path.abspath(imagename)), exist_ok=True)
    for suffix in (*products.SINGLE_TERM_PRODUCTS, ".subcubes"):
        if os.path.isdir(imagename + suffix):
            shutil.rmtree(imagename + suffix, ignore_errors=True)
