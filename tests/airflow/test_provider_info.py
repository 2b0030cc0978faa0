"""Airflow discovers the provider: its metadata is valid, the CLI lists it, the connection form exists."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.airflow import provider_env

pytestmark = pytest.mark.airflow


def _airflow_cli(*args: str, tmp_path) -> str:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PATH": f"{provider_env.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(provider_env.VENV_BIN / "airflow"), *args], env=env, cwd=str(home),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_provider_info_matches_airflows_schema():
    import airflow
    import jsonschema

    from pclean_provider.get_provider_info import get_provider_info

    schema_path = os.path.join(os.path.dirname(airflow.__file__), "provider_info.schema.json")
    with open(schema_path) as handle:
        schema = json.load(handle)
    info = get_provider_info()
    jsonschema.validate(info, schema)
    # The schema lets unknown top-level keys through, which Airflow then ignores: only known ones here.
    assert set(info) <= set(schema["properties"]), set(info) - set(schema["properties"])
    for section in ("config", "notifications", "plugins"):
        assert info[section], section
    assert "pclean_provider.triggers.landing" in info["triggers"][0]["python-modules"]
    assert info["package-name"] == "airflow-provider-pclean"
    names = {i["integration-name"] for i in info["integrations"]}
    for section in ("hooks", "operators", "triggers"):
        assert {entry["integration-name"] for entry in info[section]} <= names, section


def test_every_declared_module_and_class_imports():
    import importlib

    from pclean_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    for section in ("hooks", "operators", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for path in [*info["extra-links"], *(c["hook-class-name"] for c in info["connection-types"]),
                 *info["notifications"], *(p["plugin-class"] for p in info["plugins"])]:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    from pclean_provider.plugins.plugin import PcleanPlugin

    # One name for both ways Airflow finds the plugin (entry point, provider metadata): registered once.
    assert [p["name"] for p in info["plugins"]] == [PcleanPlugin.name]


def test_airflow_cli_lists_provider_hook_and_connection_type(tmp_path):
    providers = json.loads(_airflow_cli("providers", "list", "-o", "json", tmp_path=tmp_path))
    ours = [p for p in providers if p["package_name"] == "airflow-provider-pclean"]
    assert ours, [p["package_name"] for p in providers]
    from pclean_provider.version import __version__

    assert ours[0]["version"] == __version__

    hooks = json.loads(_airflow_cli("providers", "hooks", "-o", "json", tmp_path=tmp_path))
    dask = [h for h in hooks if h.get("connection_type") == "pclean_dask"]
    assert dask and dask[0]["class"] == "pclean_provider.hooks.dask.PcleanDaskHook", hooks[:3]

    links = _airflow_cli("providers", "links", "-o", "json", tmp_path=tmp_path)
    assert "pclean_provider.links.dask.DaskDashboardLink" in links
    triggers = _airflow_cli("providers", "triggers", "-o", "json", tmp_path=tmp_path)
    assert "pclean_provider.triggers.dask" in triggers


def test_connection_form_asks_for_cluster_type_address_and_slurm_knobs():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for field in ("cluster_type", "nworkers", "slurm_queue", "slurm_account", "slurm_walltime",
                  "slurm_job_mem", "slurm_job_script_prologue", "address_file"):
        assert f"extra__pclean_dask__{field}" in widgets, field
    cluster_type = widgets["extra__pclean_dask__cluster_type"].field
    assert cluster_type["schema"]["enum"] == ["local", "slurm", "address"]
    behaviour = manager.field_behaviours["pclean_dask"]
    assert "password" in behaviour["hidden_fields"]
    assert "Scheduler host" in behaviour["relabeling"]["host"]


def test_hook_turns_a_connection_into_a_cluster_spec(monkeypatch, tmp_path):
    from pclean_provider.hooks.dask import PcleanDaskHook

    monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_SLURM", json.dumps({
        "conn_type": "pclean_dask",
        "extra": {"cluster_type": "slurm", "nworkers": 4, "slurm_queue": "debug",
                  "extra__pclean_dask__slurm_walltime": "01:00:00",
                  "slurm_job_script_prologue": "module load casa\nsource env.sh\n"}}))
    spec = PcleanDaskHook("pclean_slurm").get_cluster_spec()
    assert (spec.cluster_type, spec.nworkers, spec.slurm_queue, spec.slurm_walltime) == \
        ("slurm", 4, "debug", "01:00:00")
    assert spec.slurm_job_script_prologue == ["module load casa", "source env.sh"]

    monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_ADDR", json.dumps(
        {"conn_type": "pclean_dask", "host": "scheduler.example.org", "port": 8786}))
    spec = PcleanDaskHook("pclean_addr").get_cluster_spec()
    assert (spec.cluster_type, spec.scheduler_address) == ("address", "tcp://scheduler.example.org:8786")

    # An address from XCom or a cluster host wins over the connection's cluster type.
    address_file = tmp_path / "cluster.address"
    address_file.write_text(json.dumps({  # what a running cluster host writes
        "state": "running", "scheduler_address": "tcp://10.0.0.5:8786", "host_pid": 1, "host_started": 0.0,
        "cluster_type": "local", "cluster_id": "abc", "log_file": "x.log", "started_at": "now"}))
    spec = PcleanDaskHook("pclean_slurm", address_file=str(address_file)).get_cluster_spec()
    assert (spec.cluster_type, spec.scheduler_address) == ("address", "tcp://10.0.0.5:8786")
    spec = PcleanDaskHook("pclean_slurm", scheduler_address="tcp://10.0.0.6:8786").get_cluster_spec()
    assert spec.scheduler_address == "tcp://10.0.0.6:8786"


def test_hook_errors_name_the_fix(monkeypatch, tmp_path):
    from pclean_provider.hooks.dask import PcleanDaskHook

    with pytest.raises(ValueError, match="no such Airflow connection.*pclean_dask"):
        PcleanDaskHook("does_not_exist").get_cluster_spec()
    monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_TYPO", json.dumps(
        {"conn_type": "pclean_dask", "extra": {"slurm_queu": "debug"}}))
    with pytest.raises(ValueError, match="unknown field 'slurm_queu'"):
        PcleanDaskHook("pclean_typo").get_cluster_spec()
    with pytest.raises(FileNotFoundError, match="cluster host is not running"):
        PcleanDaskHook(address_file=str(tmp_path / "missing.address")).get_cluster_spec()
    # The default connection may be absent: a local cluster with defaults.
    assert PcleanDaskHook().get_cluster_spec().cluster_type == "local"
