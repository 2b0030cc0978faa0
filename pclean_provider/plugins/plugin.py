"""The provider's Airflow plugin (registered as the `airflow.plugins` entry point `pclean`).

It gives
* the scheduler the pool listener (pool_listener.py);
* the API server the QA pages at ``/pclean`` (qa_app.py: each night's QA reports and an index per
  night) with an entry in the UI's Browse menu;
* the API server the links it works out each time the UI shows a task (links/): "Dask dashboard"
  only while the task's cluster lives, and "QA report" on the imaging tasks once QA has written it.

Airflow loads entry-point plugins in every component, so this module imports nothing heavy: the
listener imports Airflow's models only when a run starts, the web app is built at its first request,
and the operator classes the links belong to are imported when the API server first asks. For the
same reason it is where the ``[pclean]`` options become ``PCLEAN_*`` variables in components that
build no DAG (scheduler, triggerer, API server): see pclean_provider/airflow_config.py.
"""

from __future__ import annotations

import functools
import logging

from airflow.plugins_manager import AirflowPlugin

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.links.dask import DaskDashboardLink
from pclean_provider.links.qa_report import QaReportLink
from pclean_provider.links.qa_urls import PLUGIN_PREFIX, overview_url
from pclean_provider.plugins import pool_listener

log = logging.getLogger(__name__)


@functools.cache
def _dask_operators() -> tuple[type, ...]:
    """Every provider operator that links to its Dask dashboard."""
    # Imported on the first link worked out, not when every Airflow component loads its plugins:
    # the operators bring the hook, the engine's models and the Airflow task SDK.
    from pclean_provider.operators import continuum, cube  # noqa: F401  (their classes must exist)
    from pclean_provider.operators.base import PcleanDaskOperator
    from pclean_provider.operators.cluster import ClusterUpOperator

    found: list[type] = [ClusterUpOperator]
    pending = [PcleanDaskOperator]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return tuple(c for c in found if c.__module__.startswith("pclean_provider."))


@functools.cache
def _imaging_operators() -> tuple[type, ...]:
    """The provider operators whose result is a whole product (its ``imagename``) that QA judges."""
    # Imported on first use, as in _dask_operators.
    from pclean_provider.operators.continuum import ContinuumImagingOperator
    from pclean_provider.operators.cube import CubeConcatOperator, CubeImagingOperator

    return (CubeImagingOperator, ContinuumImagingOperator, CubeConcatOperator)


class LiveDaskDashboardLink(DaskDashboardLink):
    """The dashboard link, worked out by the API server for the provider's operators (it replaces
    the URL each task stored when it ended, which would outlive the cluster)."""

    @property
    def operators(self):  # type: ignore[override]
        return list(_dask_operators())


class ImagingQaReportLink(QaReportLink):
    """The QA report link on the imaging tasks, worked out by the API server: QA runs after them."""

    @property
    def operators(self):  # type: ignore[override]
        return list(_imaging_operators())


class _QaReportsApp:
    """The ASGI app mounted at ``/pclean``, built at its first request (only the API server serves it)."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            # FastAPI and the API server's auth manager: only the API server, at its first request.
            from pclean_provider.plugins.qa_app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class PcleanPlugin(AirflowPlugin):
    name = "pclean"
    listeners = [pool_listener]
    fastapi_apps = [{"app": _QaReportsApp(), "url_prefix": PLUGIN_PREFIX, "name": "pclean QA reports"}]
    operator_extra_links = [LiveDaskDashboardLink(), ImagingQaReportLink()]
    external_views = [{"name": "pclean QA", "href": overview_url(), "destination": "nav",
                       "category": "browse", "url_route": "pclean-qa"}]

    @classmethod
    def on_load(cls, *args, **kwargs):
        # Airflow calls this once per process when it registers the plugin, in every component. A bad
        # [pclean] value must not cost the scheduler its pool listener: it is logged here, and the DAG
        # factory, reading the same value, fails with it as the DAG file's import error.
        try:
            apply_airflow_config()
        except Exception:
            log.exception("The [pclean] section of Airflow's configuration cannot be read")

