"""OpenLineage for the imaging and archive steps: which MeasurementSet went in, what came out.

Airflow's OpenLineage provider (``apache-airflow-providers-openlineage``) is optional: its listener
calls these only when it is installed and configured (``[openlineage] transport``), so nothing here
is imported otherwise. Datasets are files, named the way the provider names ``file://`` assets
(namespace ``file``, the absolute path), so an MS read by imaging and the same MS read by archive
are one dataset in a lineage graph, and so are the version folder of the archive event and the
asset event Airflow records for it.

- Imaging operators (``get_openlineage_facets_on_complete``): input the MS (``overrides.vis``),
  outputs the image products that exist under ``overrides.imagename``.
- The archive task (a TaskFlow task, which has no such method): it tells Airflow's hook-lineage
  collector the MS and the published version folder, and the provider reads them from there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pclean_provider.products import products_for

FILE_NAMESPACE = "file"


class _ArchiveStep:
    """The collector keys what it collects by the object that reported it; one per process."""


_ARCHIVE_STEP = _ArchiveStep()


def _paths(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [os.path.abspath(os.fspath(v)) for v in items if v not in (None, "")]


def image_products(imagename: str) -> list[str]:
    """Every image a one-term or mtmfs run may write under ``imagename`` that is there now."""
    suffixes = sorted(set(products_for("hogbom", niter=1, pbcor=True))
                      | set(products_for("mtmfs", nterms=3, niter=1, pbcor=True)))
    return [imagename + s for s in suffixes if os.path.isdir(imagename + s)]


def imaging_lineage(overrides: dict[str, Any] | None) -> Any:
    """The OperatorLineage of an imaging task from its (rendered) imaging parameters."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    overrides = overrides or {}
    inputs = [Dataset(namespace=FILE_NAMESPACE, name=p) for p in _paths(overrides.get("vis"))]
    outputs = [Dataset(namespace=FILE_NAMESPACE, name=p)
               for name in _paths(overrides.get("imagename")) for p in image_products(name)]
    return OperatorLineage(inputs=inputs, outputs=outputs)


def report_archive_lineage(vis: str, version_dir: str | None) -> None:
    """Tell Airflow's hook-lineage collector what the archive task read and published.

    With nothing collecting (no OpenLineage provider) Airflow hands out a collector that drops it."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    for path in _paths(vis):
        collector.add_input_asset(context=_ARCHIVE_STEP, uri=Path(path).as_uri())
    for path in _paths(version_dir):
        collector.add_output_asset(context=_ARCHIVE_STEP, uri=Path(path).as_uri())
