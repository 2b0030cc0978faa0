"""Operators follow Airflow's [operators] default_deferrable; the shipped DAGs defer whatever it says."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

pytestmark = [pytest.mark.airflow]


def test_the_default_is_airflows_default_deferrable():
    from airflow.sdk.configuration import conf

    from pclean_provider.operators.base import PcleanDaskOperator
    from pclean_provider.operators.cube import SubcubeBatchOperator

    default = inspect.signature(PcleanDaskOperator.__init__).parameters["deferrable"].default
    assert default is conf.getboolean("operators", "default_deferrable", fallback=True)
    assert SubcubeBatchOperator(task_id="b", batch_specs=[]).deferrable is default


@pytest.mark.parametrize("setting", ["True", "False"])
def test_a_site_setting_reaches_operators_built_without_deferrable(setting):
    # A fresh process: Airflow's operators read the setting once, when their module is imported.
    code = ("from pclean_provider.operators.continuum import ContinuumImagingOperator as O; "
            "print(O(task_id='c', scheduler_address='tcp://x:1', overrides={}).deferrable)")
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == setting


@pytest.mark.parametrize("cube_mode", ["exact", "fanout"])
def test_the_shipped_dags_defer_even_when_airflow_defaults_to_not(cube_mode, monkeypatch, tmp_path):
    from airflow.sdk.configuration import conf

    from pclean_provider.dags import build_dag
    from pclean_provider.operators.base import PcleanDaskOperator
    from pclean_provider.pipeline.pipeline_template import load_templates

    monkeypatch.setenv("PCLEAN_DATA_ROOT", str(tmp_path))
    # Airflow's own default; the point is that the pipelines do not depend on it.
    assert conf.getboolean("operators", "default_deferrable", fallback=True) is False
    seen = 0
    for t in load_templates():
        if t.kind == "cube":
            t = t.model_copy(update={"cube_mode": cube_mode})
        dag = build_dag(t)
        for task in dag.tasks:
            if isinstance(task, PcleanDaskOperator):
                assert task.deferrable is True, (t.dag_id, task.task_id)
                seen += 1
    assert seen >= (5 if cube_mode == "fanout" else 2)
