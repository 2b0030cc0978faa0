"""The trigger form shows the template's values, declares every conf key, and its untouched defaults
pass the conf policy (even where the template holds what a run's conf may not set itself)."""

from __future__ import annotations

import pytest

from pclean_provider.dags.params import trigger_form
from pclean_provider.pipeline.conf_policy import CONF_KEYS, RunConfRefused, check_run_conf
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, load_templates
from pclean_provider.pipeline.run_settings import settings_for_run


def defaults(t: PipelineTemplate) -> dict:
    return {name: param.value for name, param in trigger_form(t).items()}


@pytest.fixture
def root(tmp_path):
    return tmp_path.resolve()


@pytest.mark.parametrize("t", load_templates(), ids=lambda t: t.dag_id)
def test_the_shipped_forms_show_the_templates_values_and_pass(t, root):
    form = defaults(t)
    assert set(form) == set(CONF_KEYS)  # every conf key the DAG reads is a declared field
    assert form["overrides"] == t.overrides and form["overrides"]  # no longer an empty box
    assert form["cluster_options"] == t.cluster.options
    assert form["cluster_connection_id"] == t.cluster.connection_id
    assert form["qa_thresholds"] == t.qa.thresholds
    s = settings_for_run(t, form, "manual__1", data_root=root)
    assert s.overrides == t.overrides and s.qa_min_score == t.qa.gate_min_score


def test_template_values_a_run_may_not_set_pass_as_defaults_but_not_as_changes(root, tmp_path_factory):
    site = tmp_path_factory.mktemp("site-masks").resolve()  # outside the data roots
    t = PipelineTemplate.model_validate({
        "dag_id": "p", "kind": "cube", "title": "P",
        "overrides": {"specmode": "cube", "mask": str(site / "m.mask")},
        "cluster": {"connection_id": "pclean_site", "options": {"slurm_queue": "night", "nworkers": 40}},
        "qa": {"thresholds": {"rms_jy": 0.01}},
    })
    form = defaults(t)
    s = settings_for_run(t, form, "manual__1", data_root=root)
    assert s.cluster_options == {"slurm_queue": "night", "nworkers": 40}
    assert s.cluster_connection_id == "pclean_site" and s.qa_thresholds == {"rms_jy": 0.01}

    changed = {**form, "overrides": {**form["overrides"], "nchan": 8}, "cluster_options": {
        **form["cluster_options"], "nworkers": 2}}
    s = settings_for_run(t, changed, "manual__2", data_root=root)
    assert s.overrides["nchan"] == 8 and s.cluster_options["nworkers"] == 2
    for key, value, parameter in [
        ("overrides", {**form["overrides"], "mask": str(site / "other.mask")}, "overrides.mask"),
        ("cluster_options", {"slurm_queue": "day"}, "cluster_options.slurm_queue"),
        ("cluster_options", {"nworkers": 41}, "cluster_options.nworkers"),
        ("qa_thresholds", {"rms_jy": 1.0}, "qa_thresholds"),
        ("cluster_connection_id", "someone_elses", "cluster_connection_id"),
    ]:
        with pytest.raises(RunConfRefused) as info:
            check_run_conf(t, {**form, key: value}, root)
        assert info.value.parameter == parameter


def test_the_connection_decides_the_cluster_unless_the_template_pins_it(root, monkeypatch):
    import json

    from pclean_provider.hooks.dask import PcleanDaskHook

    # A site whose default connection is a SLURM cluster: the shipped templates follow it ...
    monkeypatch.setenv("AIRFLOW_CONN_PCLEAN_DASK_DEFAULT", json.dumps(
        {"conn_type": "pclean_dask", "extra": {"cluster_type": "slurm", "slurm_queue": "night"}}))
    (t,) = [t for t in load_templates() if t.dag_id == "nightly_cube_imaging"]
    assert t.cluster.type is None and t.cluster.connection_id == "pclean_dask_default"
    form = defaults(t)
    assert form["cluster"] == "connection" and form["cluster_connection_id"] == "pclean_dask_default"
    s = settings_for_run(t, form, "manual__1", data_root=root)
    spec = PcleanDaskHook(t.cluster.connection_id, cluster_overrides=s.cluster_overrides()).get_cluster_spec()
    assert (spec.cluster_type, spec.slurm_queue) == ("slurm", "night")
    # ... and a template that pins local says so, and wins.
    pinned = t.model_copy(update={"cluster": t.cluster.model_copy(update={"type": "local"})})
    s = settings_for_run(pinned, defaults(pinned), "manual__2", data_root=root)
    spec = PcleanDaskHook(t.cluster.connection_id, cluster_overrides=s.cluster_overrides()).get_cluster_spec()
    assert spec.cluster_type == "local"
