"""The plugin that gives the scheduler the pool listener (registered as the `airflow.plugins` entry point `pclean`).

Airflow loads entry-point plugins in every component, so this module imports nothing heavy: the
listener imports Airflow's models only when a run starts, and that happens in the scheduler.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pclean_provider.plugins import pool_listener


class PcleanPoolPlugin(AirflowPlugin):
    name = "pclean_pools"
    listeners = [pool_listener]
