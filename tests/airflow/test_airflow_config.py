"""The [pclean] section of Airflow's configuration becomes the PCLEAN_* variables the lower layers read."""

from __future__ import annotations

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from pclean_provider import airflow_config
from pclean_provider.airflow_config import OPTIONS, SECTION, apply_airflow_config

pytestmark = [pytest.mark.airflow]

ENV_OF = {o.name: o.env for o in OPTIONS}


@pytest.fixture()
def clean_env(monkeypatch):
    """No PCLEAN_* nor AIRFLOW__PCLEAN__* variable, and whatever apply_airflow_config exports is undone."""
    import os

    # Set first, so that monkeypatch records each name and undoes a variable the code under test exports
    # (deleting an absent variable records nothing, and a leaked PCLEAN_PIPELINES_DIR would empty the
    # later tests' pipelines).
    for option in OPTIONS:
        for name in (option.env, f"AIRFLOW__{SECTION.upper()}__{option.name.upper()}"):
            monkeypatch.setenv(name, os.environ.get(name, ""))
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_documented_variable_is_read_below_the_airflow_layer():
    import pathlib

    import pclean_provider

    root = pathlib.Path(pclean_provider.__file__).parent
    sources = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "airflow_config.py")
    for option in OPTIONS:
        assert f'"{option.env}"' in sources, option.env
    # Test-only hooks stay out of the operators' documented configuration.
    assert not {o.env for o in OPTIONS} & {"PCLEAN_ARCHIVE_PAUSE_AT", "PCLEAN_ARCHIVE_PAUSE_SECONDS",
                                           "PCLEAN_SUBCUBE_PAUSE_FIFO", "PCLEAN_CASA_LOGFILE"}


def test_options_set_through_airflow_env_variables_are_exported(clean_env, tmp_path):
    import os

    clean_env.setenv("AIRFLOW__PCLEAN__DATA_ROOT", str(tmp_path / "data"))
    clean_env.setenv("AIRFLOW__PCLEAN__PRESETS_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    clean_env.setenv("AIRFLOW__PCLEAN__PIPELINES_UNSCHEDULED", "True")

    exported = apply_airflow_config()

    assert exported == {"PCLEAN_DATA_ROOT": str(tmp_path / "data"),
                        "PCLEAN_PRESETS_DIR": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}",
                        "PCLEAN_PIPELINES_UNSCHEDULED": "1"}
    assert os.environ["PCLEAN_DATA_ROOT"] == str(tmp_path / "data")
    # The lower layer now sees the Airflow setting without importing Airflow.
    from pclean_provider.pipeline.pipeline_template import data_root_dir

    assert data_root_dir() == (tmp_path / "data").resolve()


def test_options_set_in_airflow_cfg_are_exported(clean_env, tmp_path):
    import os

    from airflow.sdk.configuration import conf

    conf.set(SECTION, "casa_home", str(tmp_path / "casa"))
    try:
        exported = apply_airflow_config()
    finally:
        conf.remove_option(SECTION, "casa_home")
    assert exported == {"PCLEAN_CASA_HOME": str(tmp_path / "casa")}
    assert os.environ["PCLEAN_CASA_HOME"] == str(tmp_path / "casa")


def test_a_variable_already_set_wins(clean_env):
    import os

    clean_env.setenv("PCLEAN_DATA_ROOT", "/from/env")
    clean_env.setenv("AIRFLOW__PCLEAN__DATA_ROOT", "/from/airflow")
    clean_env.setenv("AIRFLOW__PCLEAN__PIPELINES_DIR", "/site/pipelines")

    assert apply_airflow_config() == {"PCLEAN_PIPELINES_DIR": "/site/pipelines"}
    assert os.environ["PCLEAN_DATA_ROOT"] == "/from/env"


@pytest.mark.parametrize("value", ["", "   "])
def test_unset_or_empty_options_stay_unset(clean_env, value):
    import os

    clean_env.setenv("AIRFLOW__PCLEAN__SBATCH_TEMPLATE", value)
    clean_env.setenv("AIRFLOW__PCLEAN__PIPELINES_UNSCHEDULED", "False")

    assert apply_airflow_config() == {}
    for option in OPTIONS:
        assert option.env not in os.environ, option.env


def test_a_given_conf_and_environment_are_used_instead_of_the_process_ones():
    class Conf:
        values = {"casa_log_dir": "/logs", "pipelines_unscheduled": "false"}

        def get(self, section, key, fallback=None):
            assert section == SECTION
            return self.values.get(key, fallback)

        def getboolean(self, section, key, fallback=False):
            value = self.values.get(key)
            return fallback if value is None else value.lower() == "true"

    environ: dict[str, str] = {}
    assert apply_airflow_config(Conf(), environ) == {"PCLEAN_CASA_LOG_DIR": "/logs"}
    assert environ == {"PCLEAN_CASA_LOG_DIR": "/logs"}
    # Again: nothing changes, the variable now set wins over the option.
    Conf.values["casa_log_dir"] = "/other"
    assert apply_airflow_config(Conf(), environ) == {}
    assert environ == {"PCLEAN_CASA_LOG_DIR": "/logs"}


def test_the_dag_factory_and_the_plugin_apply_it(clean_env, tmp_path):
    import os

    from pclean_provider.dags import build_dags
    from pclean_provider.plugins.plugin import PcleanPlugin

    clean_env.setenv("AIRFLOW__PCLEAN__NOTIFICATIONS_DIR", str(tmp_path / "notes"))
    PcleanPlugin.on_load()
    assert os.environ["PCLEAN_NOTIFICATIONS_DIR"] == str(tmp_path / "notes")

    # An empty pipelines folder from [pclean]: the factory applies the option before loading templates.
    (tmp_path / "pipelines").mkdir()
    clean_env.setenv("AIRFLOW__PCLEAN__PIPELINES_DIR", str(tmp_path / "pipelines"))
    assert build_dags() == {}
    assert os.environ["PCLEAN_PIPELINES_DIR"] == str(tmp_path / "pipelines")


def test_a_bad_boolean_does_not_cost_the_plugin_its_listener(clean_env, caplog):
    from pclean_provider.plugins.plugin import PcleanPlugin

    clean_env.setenv("AIRFLOW__PCLEAN__PIPELINES_UNSCHEDULED", "maybe")
    PcleanPlugin.on_load()
    assert "[pclean]" in caplog.text
    with pytest.raises(Exception):  # noqa: B017 - Airflow's config exception type moves between versions
        airflow_config.apply_airflow_config()


def test_provider_metadata_documents_every_option():
    from pclean_provider.get_provider_info import get_provider_info

    options = get_provider_info()["config"][SECTION]["options"]
    assert set(options) == set(ENV_OF)
    for name, spec in options.items():
        assert f"${ENV_OF[name]}" in spec["description"]
        assert spec["type"] in ("string", "boolean")
