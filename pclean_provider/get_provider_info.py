"""Provider metadata for Airflow's provider discovery (entry point ``apache_airflow_provider``).

Kept free of heavy imports: Airflow calls this in every process that lists providers.
"""

from pclean_provider.version import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-pclean",
        "name": "pclean",
        "description": "Parallel CASA CLEAN imaging (cube and continuum) on Dask, locally or on SLURM.",
        "versions": [__version__],
    }
