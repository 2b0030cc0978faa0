"""The plugin that gives the scheduler the pool listener (registered as the `airflow.plugins` entry point `pclean`).

Airflow loads entry-point plugins in every component, so this module imports nothing heavy: the
listener imports Airflow's models only when a run starts, and that happens in the scheduler. For
the same reason it is where the ``[pclean]`` options become ``PCLEAN_*`` variables in components that
build no DAG (scheduler, triggerer, API server): see pclean_provider/airflow_config.py.
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.plugins import pool_listener

log = logging.getLogger(__name__)


class PcleanPoolPlugin(AirflowPlugin):
    name = "pclean_pools"
    listeners = [pool_listener]

    @classmethod
    def on_load(cls, *args, **kwargs):
        # Airflow calls this once per process when it registers the plugin, in every component. A bad
        # [pclean] value must not cost the scheduler its pool listener: it is logged here, and the DAG
        # factory, reading the same value, fails with it as the DAG file's import error.
        try:
            apply_airflow_config()
        except Exception:
            log.exception("The [pclean] section of Airflow's configuration cannot be read")
