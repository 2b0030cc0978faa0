"""Continuum (mfs / mtmfs) imaging driven on the Dask cluster, with one log line per major cycle."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider import products
from pclean_provider.engine import worker_tasks
from pclean_provider.engine.continuum.models import ContinuumResult
from pclean_provider.engine.progress import progress_file_for
from pclean_provider.operators.config_input import ConfiguredImagingOperator


class ContinuumImagingOperator(ConfiguredImagingOperator):
    """Run the major/minor loop on the cluster: the loop's driver is itself a Dask task.

    The major cycles (gridding) fan out from the driver to the other workers; the driver appends
    one JSON line per major cycle to a progress file, which the trigger turns into task log lines
    while the task is deferred. The task returns (as its XCom) what pclean() returns for the same
    run, a PcleanResult, as CubeImagingOperator does for a cube; the run's own record
    (ContinuumResult: cycles, stages, parts) is its ``continuum``.

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
        self._cfg = cfg
        self._retry = int(context["ti"].try_number) > 1
        cfg_json = cfg.model_dump_json()

        return self.run_on_cluster(context, worker_tasks.image_continuum, lambda dask: (cfg_json,),
                                   self.default_state_dir(cfg.image.imagename),
                                   progress_file=progress_file_for(cfg.image.imagename))

    def before_submit(self) -> None:
        # The engine continues a clean from images under its name (tclean's restart=True): a first
        # try keeps them; a retry starts afresh, not from what its failed try left half-way. A killed
        # try's staging folder (a copy of every product) goes either way.
        self.clear_earlier_try(self._cfg.image.imagename, continuum_products(self._cfg) if self._retry else ())

    def on_result(self, context: Any, result: Any) -> Any:
        run = ContinuumResult.model_validate(result)
        self.log.info("Continuum %s: %s iterations in %s major cycles, stop: %s, %.1f s",
                      run.imagename, run.iterations, run.major_cycles, run.stop_reason or "-", run.elapsed_s)
        # A task resumed after deferring is a new instance: its config is built again.
        cfg = getattr(self, "_cfg", None) or self.config()
        kwargs = cfg.tclean_kwargs()
        out = run.pclean_result(specmode=kwargs["specmode"], niter=int(kwargs.get("niter", 0) or 0), parallel=True,
                                seconds=run.elapsed_s)
        return json.loads(out.model_dump_json())


def continuum_products(cfg: Any) -> tuple[str, ...]:
    """The suffixes of every image (and the part images' folder) a continuum run of `cfg` can leave."""
    kw = cfg.tclean_kwargs()
    suffixes = products.products_for(kw.get("deconvolver", "hogbom"), kw.get("nterms", 2),
                                      kw.get("gridder", "standard"), pbcor=True, niter=1)
    return (*suffixes, products.WORKDIRECTORY)
