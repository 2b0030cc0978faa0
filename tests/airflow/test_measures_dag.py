"""The measures upkeep DAG (dags/pclean_measures_refresh.py) under dag.test(), with real `pclean measures`
steps: without a site copy the refresh fails naming the setting, after logging how far CASA's tables
reach; with a site copy but no way out to the network (every request sent to a proxy that refuses),
it fails saying what to do, writes nothing there, and its status says the copy is empty and how to
fill it. Never a download in the suite."""

from __future__ import annotations

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_nightly_dags import project_dags, run_dag, task_states

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = "pclean_measures_refresh"
NO_WAY_OUT = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused


@pytest.fixture(scope="module")
def dag(casa_runtime):
    return project_dags()[DAG_ID]


def refresh(dag, capfd) -> str:
    """One run whose refresh fails (never retried here), as the run's state says too; its output."""
    run = run_dag(dag, {}, no_retries=("measures_refresh",))
    states = task_states(run)
    assert states[("measures_refresh", -1)][0] == "failed" and str(run.state) == "failed", states
    out = capfd.readouterr()
    return out.out + out.err


def test_without_a_site_copy_the_update_names_the_setting(dag, monkeypatch, capfd):
    monkeypatch.delenv("PCLEAN_MEASURES_PATH", raising=False)
    output = refresh(dag, capfd)
    assert "set [pclean] measures_path" in output
    # The log still says which tables CASA uses and how far they reach.
    assert "Earth orientation predicted until" in output


def test_without_network_the_update_says_what_to_do_and_the_copy_stays(dag, monkeypatch, tmp_path, capfd):
    site = tmp_path / "measures"
    monkeypatch.setenv("PCLEAN_MEASURES_PATH", str(site))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, NO_WAY_OUT)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    output = refresh(dag, capfd)
    assert "copy a current measures folder from a host that has one" in output
    assert not (site / "geodetic").exists(), "nothing half-written where imaging hosts read"
    # The status still runs, and says the site copy is empty and how to fill it.
    assert "has no 'geodetic' folder" in output
