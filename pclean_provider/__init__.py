"""pclean_provider: parallel CASA CLEAN imaging on Dask, with an Airflow face.

``from pclean_provider import pclean`` gives the tclean-compatible entry point. The import is
lazy so that ``import pclean_provider`` (done by Airflow's provider discovery) never pulls in
casatools or Dask.
"""

from pclean_provider.version import __version__

__all__ = ["__version__", "pclean"]


def __getattr__(name: str):
    if name == "pclean":
        from pclean_provider.engine.api import pclean

        return pclean
    raise AttributeError(f"module 'pclean_provider' has no attribute {name!r}")
