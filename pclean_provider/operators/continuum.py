"""Continuum (mfs / mtmfs) imaging driven on the Dask cluster, with one log line per major cycle."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.engine import worker_tasks
from pclean_provider.operators.config_input import ConfiguredImagingOperator


class ContinuumImagingOperator(ConfiguredImagingOperator):
    """Run the major/minor loop on the cluster: the loop's driver is itself a Dask task.

    The major cycles (gridding) fan out from the driver to the other workers; the driver appends
    one JSON line per major cycle to a progress file, which the trigger turns into task log lines
    while the task is deferred.

    :param overrides: imaging parameters (tclean names, flat); specmode must be 'mfs'.
    :param presets: preset names applied first.
    :param config_files: YAML files applied after the presets.
    """

    work_kind = "continuum"

    def label(self) -> str:
        return f"continuum {self.task_id}"

    def execute(self, context: Any) -> Any:
        cfg = self.config()
        if cfg.is_cube:
            raise AirflowFailException(
                f"{self.task_id}: specmode={cfg.spectral.specmode!r} is a cube; ContinuumImagingOperator needs "
                "specmode='mfs'. Use CubeImagingOperator (or the fan-out operators) for cubes.")
        cfg_json = cfg.model_dump_json()
        from pclean_provider.engine.continuum import progress_file_for

        return self.run_on_cluster(context, worker_tasks.image_continuum, lambda client: (cfg_json,),
                                   self.default_state_dir(cfg.image.imagename),
                                   progress_file=progress_file_for(cfg.image.imagename))

    def on_result(self, context: Any, result: Any) -> Any:
        self.log.info("Continuum %s: %s iterations in %s major cycles, stop: %s, %.1f s",
                      result.get("imagename"), result.get("iterations"), result.get("major_cycles"),
                      result.get("stop_reason") or "-", result.get("elapsed_s") or 0.0)
        return result
