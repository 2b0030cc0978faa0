"""Shared test fixtures.

In CI (``CI=true``) every component is installed, so a missing one is a failure, never a skip:
``require()`` is the only place that decides between the two.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]


def require(component: str, available: bool, how_to_get_it: str) -> None:
    """Skip a test whose component is missing on a developer machine; fail it in CI."""
    if available:
        return
    message = f"{component} is not available ({how_to_get_it})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def casa_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("casatools") is not None


@pytest.fixture(scope="session")
def casa_runtime(tmp_path_factory):
    """CASA set up offline, with its log in the test session's temp folder, not the repo."""
    require("casatools", casa_available(), "run `make setup`")
    from pclean_provider.casa.runtime import ensure_casa_runtime

    logdir = tmp_path_factory.mktemp("casa-logs")
    return ensure_casa_runtime(log_dir=logdir)


@pytest.fixture(scope="session")
def small_ms(casa_runtime, tmp_path_factory):
    """The simulator's default MeasurementSet (one spw, small, images in seconds), made once."""
    from pclean_provider.casa.simulator import simulate_ms

    out = tmp_path_factory.mktemp("ms") / "small.ms"
    return simulate_ms(out, seed=7)


@pytest.fixture(scope="session")
def two_spw_ms(casa_runtime, tmp_path_factory):
    """Two spectral windows, as the continuum tests need."""
    from pclean_provider.casa.simulator import simulate_ms

    out = tmp_path_factory.mktemp("ms2") / "two_spw.ms"
    return simulate_ms(out, nspw=2, nchan=8, seed=11)


def which_or_none(name: str) -> str | None:
    return shutil.which(name)
