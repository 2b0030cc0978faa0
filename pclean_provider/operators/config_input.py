"""Turning an operator's (templated) imaging arguments into a validated PcleanConfig, in the worker.

Validation is plain pydantic (no casatools), so bad input fails here, with the parameter named,
before anything is submitted to the cluster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider import products
from pclean_provider.config import ConfigError, PcleanConfig, load_config
from pclean_provider.operators.base import PcleanDaskOperator
from pclean_provider.operators.lineage import imaging_lineage
from pclean_provider.pipeline.staging_leftovers import sweep_staging_leftovers


def build_config(task_id: str, overrides: dict[str, Any] | None, presets: Sequence[str] | str | None,
                 config_files: Sequence[str] | str | None) -> PcleanConfig:
    """Layer presets < files < overrides; an error fails the task without retries (bad input)."""
    try:
        cfg = load_config(presets=_as_list(presets), files=_as_list(config_files), overrides=overrides or {})
        cfg.require_runnable()
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # Retrying bad input only delays the message: fail for good.
        raise AirflowFailException(f"{task_id}: {exc}") from exc
    for name, value in (("vis", cfg.selection.vis), ("imagename", cfg.image.imagename)):
        paths = value if isinstance(value, list) else [value]
        relative = [p for p in paths if p and not os.path.isabs(p)]
        if relative:
            # The Dask workers do not share this process's working directory.
            raise AirflowFailException(
                f"{task_id}: {name}={relative[0]!r} is relative; give an absolute path on the filesystem "
                "the Dask workers share (e.g. '/data/night/target.ms').")
    return cfg


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class ConfiguredImagingOperator(PcleanDaskOperator):
    """An operator whose work is one imaging config: a preset, config files, then flat overrides.

    :param overrides: imaging parameters (tclean names, flat).
    :param presets: preset names applied first (packaged, or in ``$PCLEAN_PRESETS_DIR``).
    :param config_files: YAML files applied after the presets.
    :param target_label: what to call the product in the UI (the MS and its target); display only.
    """

    template_fields: Sequence[str] = (*PcleanDaskOperator.template_fields, "overrides", "presets",
                                      "config_files", "target_label")
    template_fields_renderers = {"overrides": "json"}

    def __init__(self, *, overrides: dict[str, Any] | None = None, presets: Sequence[str] | str | None = None,
                 config_files: Sequence[str] | str | None = None, target_label: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Display only: what the grid names this task's map index (the MS and its imaging target).
        self.target_label = target_label
        self.overrides = overrides
        self.presets = presets
        self.config_files = config_files

    def config(self):
        return build_config(self.task_id, self.overrides, self.presets, self.config_files)

    def clear_earlier_try(self, imagename: str, suffixes: Sequence[str]) -> None:
        """Before a new try's work is submitted: remove the products of `suffixes` an earlier try of
        this task left at `imagename` (products.remove_products: folders named exactly so) and the
        stagings a killed or failed writer left beside them, which nothing reads again and which
        every retry would otherwise add to."""
        products.remove_products(imagename, tuple(suffixes))
        for path in sweep_staging_leftovers(imagename):
            self.log.info("Removed %s, left by an earlier writer of this image", path)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Called by Airflow's OpenLineage provider when it is on: the MS in, the image products out."""
        return imaging_lineage(self.overrides if isinstance(self.overrides, dict) else None)
