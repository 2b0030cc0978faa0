"""Shared test fixtures.

In CI (``CI=true``) every component is installed, so a missing one is a failure, never a skip:
``require()`` is the only place that decides between the two.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.run_cache import RUN_DIR_ENV, simulated

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite on several pytest-xdist workers. Tests that share one
# real component run in one worker, one after the other: the live Airflow (one standalone for the
# whole session), the local SLURM. A module whose fixtures make something costly per module (a
# cluster, an MS, a serial tclean reference) is one group too, so they are made once; the modules
# listed in SPREAD are cheap to set up per worker and long to run, so their tests spread.
LIVE_AIRFLOW_FILES = {
    "tests/airflow/test_standalone_e2e.py",
    "tests/airflow/test_standalone_night.py",
    "tests/airflow/test_operators_clear_and_kill.py",
    "tests/browser/test_trigger_form.py",
}
SPREAD = {"tests/casa/test_cube_sessions.py", "tests/unit"}
# Groups in the order they start: the longest first, so that the short ones fill in beside them.
FIRST = ("live-airflow", "slurm")


def xdist_group_of(relpath: str) -> str | None:
    if relpath in LIVE_AIRFLOW_FILES:
        return "live-airflow"
    if relpath.startswith("tests/slurm/"):
        return "slurm"
    if relpath in SPREAD or relpath.rsplit("/", 1)[0] in SPREAD:
        return None
    return relpath


_made_run_dir: str | None = None


def pytest_configure(config):
    """One run-wide folder (tests/run_cache.py), made before pytest-xdist starts its processes so
    that they all inherit its name; removed by the process that made it."""
    global _made_run_dir
    if RUN_DIR_ENV not in os.environ:
        _made_run_dir = os.environ[RUN_DIR_ENV] = tempfile.mkdtemp(prefix="pclean-test-run-")


def pytest_unconfigure(config):
    if _made_run_dir:
        shutil.rmtree(_made_run_dir, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The groups in FIRST start first; every process sorts alike, as pytest-xdist requires."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(xdist_group_of(item.nodeid.split("::", 1)[0]), len(FIRST)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each group above is one unit of work for one process; every other test is a unit of its own.

    A scheduler of our own rather than xdist's `loadgroup`: that one marks the group in the item's
    node id, which pytest 9 no longer reads back, so its groups fall apart."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid.split("::", 1)[0]) or nodeid

    return GroupScheduling(config, log)


def require(component: str, available: bool, how_to_get_it: str) -> None:
    """Skip a test whose component is missing on a developer machine; fail it in CI."""
    if available:
        return
    message = f"{component} is not available ({how_to_get_it})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def plaintext_dask_allowed(monkeypatch):
    """For a test about something other than Dask's transport, on a plaintext cluster: the site
    allows plaintext Dask, as an administrator may ([pclean] allow_plaintext_dask). Never autouse:
    without it a tcp:// scheduler is refused, as on a site that has not chosen otherwise."""
    from pclean_provider.compute.tls import ALLOW_PLAINTEXT_ENV

    monkeypatch.setenv(ALLOW_PLAINTEXT_ENV, "1")


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
def small_ms(casa_runtime):
    """The simulator's default MeasurementSet (one spw, small, images in seconds), made once per run."""
    return simulated("small", seed=7)


@pytest.fixture(scope="session")
def two_spw_ms(casa_runtime):
    """Two spectral windows, as the continuum tests need; made once per run."""
    return simulated("two_spw", nspw=2, nchan=8, seed=11)


def which_or_none(name: str) -> str | None:
    return shutil.which(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """The live Airflow tests run one after another in one process (xdist_group_of); after the last
    of them the standalone is stopped, not at the end of the session: its scheduler, API server,
    DAG processor and triggerer would otherwise idle on beside every test that process runs next
    (measured: those four took 111 CPU-seconds in a 16-minute suite whose live tests ended halfway)."""
    yield
    standalone = sys.modules.get("tests.airflow.standalone")  # a process that never imported it started none
    following = nextitem.nodeid.split("::", 1)[0] if nextitem is not None else None
    if standalone is not None and (following is None or xdist_group_of(following) != "live-airflow"):
        standalone.stop_shared()


@pytest.fixture(scope="session")
def airflow_standalone():
    """The test session's one live `airflow standalone` (tests/airflow/standalone.py), serving the
    project's DAGs and the test DAGs; stopped, with every process it started, after the last live
    test (pytest_runtest_teardown above), so only tests in LIVE_AIRFLOW_FILES may use it."""
    from tests.airflow import standalone

    require("airflow", (standalone.VENV_BIN / "airflow").exists(), "run `make setup`")
    server = standalone.shared()
    yield server
    server.stop()
    assert not server.group_members(), "airflow standalone left processes behind"

