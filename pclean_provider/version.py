"""Single source of the provider's version (the package's `__version__`, `pclean --version`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("airflow-provider-pclean")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
