"""The run conf policy (pipeline/conf_policy.py): what the trigger form may set, and how it is refused."""

from __future__ import annotations

import pytest

from pclean_provider.config.cluster import memory_bytes
from pclean_provider.errors import PcleanInputError
from pclean_provider.pipeline.conf_policy import RunConfRefused, allowed_roots, check_run_conf, shown
from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from pclean_provider.pipeline.run_settings import settings_for_run


def template(**extra) -> PipelineTemplate:
    return PipelineTemplate.model_validate({"dag_id": "p", "kind": "cube", "title": "P", **extra})


def refused(t: PipelineTemplate, conf: dict, root) -> RunConfRefused:
    with pytest.raises(RunConfRefused) as info:
        check_run_conf(t, conf, root)
    assert isinstance(info.value, PcleanInputError)
    return info.value


@pytest.fixture
def root(tmp_path):
    return tmp_path.resolve()


def test_the_forms_defaults_pass(root):
    t = template()
    conf = {"vis": None, "preset": "none", "overrides": {}, "work_dir": None, "archive_dir": None,
            "cluster": "connection", "cluster_options": {}, "redo": False, "qa_min_score": 0.66}
    checked = check_run_conf(t, conf, root)
    assert (checked.vis, checked.work_dir, checked.preset, checked.cluster_type, checked.qa_min_score) == (
        None, None, None, None, 0.66)


@pytest.mark.parametrize("field", ["slurm_job_script_prologue", "slurm_python", "slurm_job_extra_directives",
                                   "cluster_type", "scheduler_address", "local_directory", "slurm_log_directory"])
def test_cluster_internals_are_refused_naming_the_field(root, field):
    err = refused(template(), {"cluster_options": {field: ["touch /tmp/owned"]}}, root)
    assert err.parameter == f"cluster_options.{field}"
    assert "Airflow connection or the pipeline template" in str(err) and "nworkers" in str(err)
    assert "touch" not in str(err)  # the value is not echoed


def test_cluster_size_within_the_templates_limits(root):
    t = template(cluster={"conf_limits": {"max_nworkers": 4, "max_worker_memory": "8GB"}})
    ok = check_run_conf(t, {"cluster_options": {"nworkers": 4, "slurm_job_mem": "8GB", "memory_limit": "0"}}, root)
    assert ok.cluster_options == {"nworkers": 4, "slurm_job_mem": "8GB", "memory_limit": "0"}
    assert refused(t, {"cluster_options": {"nworkers": 5}}, root).parameter == "cluster_options.nworkers"
    assert refused(t, {"cluster_options": {"nworkers": True}}, root).parameter == "cluster_options.nworkers"
    assert refused(t, {"cluster_options": {"threads_per_worker": 2}}, root).parameter == \
        "cluster_options.threads_per_worker"
    err = refused(t, {"cluster_options": {"slurm_job_mem": "9GB"}}, root)
    assert err.parameter == "cluster_options.slurm_job_mem" and "8GB" in str(err)
    assert refused(t, {"cluster_options": {"memory_limit": "1e99GB"}}, root).parameter == \
        "cluster_options.memory_limit"


def test_cluster_type_only_among_the_templates_choices(root):
    assert "allowed: none (the connection pclean_dask_default decides)" in str(
        refused(template(), {"cluster": "slurm"}, root))
    assert "allowed: local" in str(refused(template(cluster={"type": "local"}), {"cluster": "slurm"}, root))
    t = template(cluster={"type": "local", "conf_types": ["slurm"]})
    assert check_run_conf(t, {"cluster": "slurm"}, root).cluster_type == "slurm"
    assert refused(t, {"cluster": "address"}, root).parameter == "cluster"
    assert refused(template(), {"cluster_connection_id": "someone_elses"}, root).parameter == "cluster_connection_id"


def test_cluster_fields_cannot_come_in_through_the_imaging_overrides(root):
    for overrides in ({"slurm_job_script_prologue": ["id"]}, {"cluster": {"slurm_python": "/bin/sh"}}):
        assert refused(template(), {"overrides": overrides}, root).parameter.startswith("overrides.slurm_")
    assert refused(template(), {"overrides": {"imagename": "x"}}, root).parameter == "overrides.imagename"


@pytest.mark.parametrize("key", ["vis", "work_dir", "archive_dir"])
def test_paths_are_never_expanded(root, key, monkeypatch):
    monkeypatch.setenv("PCLEAN_TEST_SECRET", "s3cr3t-value")
    for value in ("$PCLEAN_TEST_SECRET/x", "work/${PCLEAN_TEST_SECRET}", "~/x", "~root/x"):
        err = refused(template(), {key: value}, root)
        assert err.parameter == key and "never expanded" in str(err)
        assert "s3cr3t" not in str(err) and "$" not in str(err).split(":", 1)[1].split("never")[0]


def test_paths_must_lie_in_the_data_roots(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside").resolve()
    (root / "inside").mkdir()
    (root / "inside" / "escape").symlink_to(outside)
    t = template()
    assert check_run_conf(t, {"work_dir": "work/w", "vis": str(root / "inside" / "a.ms")}, root).work_dir == \
        root / "work" / "w"
    for key, value in (("archive_dir", str(outside)), ("vis", "../x.ms"), ("work_dir", "inside/escape/w"),
                       ("archive_dir", "/")):
        err = refused(t, {key: value}, root)
        assert err.parameter == key and str(root) in str(err) and " roots (" in str(err)
    # A path-valued imaging parameter too; region text in mask is not a path.
    assert refused(t, {"overrides": {"startmodel": str(outside / "m.image")}}, root).parameter == \
        "overrides.startmodel"
    assert check_run_conf(t, {"overrides": {"mask": "circle[[32pix,32pix],4pix]"}}, root).overrides


def test_the_data_roots_come_from_the_template(root, tmp_path_factory):
    site = tmp_path_factory.mktemp("site").resolve()
    t = template(archive_dir=str(site / "arch"))
    assert allowed_roots(t, root) == [root, site / "arch"]
    narrow = template(data_roots=["work"])
    assert allowed_roots(narrow, root) == [root / "work"]
    assert refused(narrow, {"vis": "landing/a.ms"}, root).parameter == "vis"


def test_refusals_show_values_cut_short_and_harmless(root):
    err = refused(template(), {"vis": "/x\n2026-01-01 INFO forged line" + "a" * 500}, root)
    assert "\n" not in str(err) and len(str(err)) < 200
    assert shown("a" * 100) == "'" + "a" * 32 + "...'"
    assert shown("rm -rf /; $(x)") == "'rm?-rf?/????x?'"
    err = refused(template(), {"bogus\nkey": 1, "qa_thresholds": {}}, root)
    assert "\n" not in str(err) and "qa_thresholds" in str(err)


def test_the_qa_gate_has_a_floor(root):
    t = template(qa={"gate_min_score": 0.66})
    assert check_run_conf(t, {"qa_min_score": 0.9}, root).qa_min_score == 0.9
    assert "floor 0.66" in str(refused(t, {"qa_min_score": 0.0}, root))
    opened = template(qa={"gate_min_score": 0.66, "gate_floor": 0.5})
    assert check_run_conf(opened, {"qa_min_score": 0.5}, root).qa_min_score == 0.5
    assert refused(opened, {"qa_min_score": 0.49}, root).parameter == "qa_min_score"
    assert refused(opened, {"qa_min_score": float("nan")}, root).parameter == "qa_min_score"
    assert refused(opened, {"qa_min_score": "0.9"}, root).parameter == "qa_min_score"


def test_presets_only_among_the_installed_ones(root):
    assert check_run_conf(template(), {"preset": "spectral_line_cube"}, root).preset == "spectral_line_cube"
    err = refused(template(), {"preset": "../../../etc/passwd"}, root)
    assert err.parameter == "preset" and "spectral_line_cube" in str(err)


def test_settings_for_run_uses_the_checked_values(root):
    t = template(cluster={"options": {"slurm_queue": "night"}})
    s = settings_for_run(t, {"vis": "landing/../landing/a.ms", "cluster_options": {"nworkers": 2}}, "r1", data_root=root)
    assert s.vis == str(root / "landing" / "a.ms")
    assert s.cluster_overrides() == {"slurm_queue": "night", "nworkers": 2}  # the connection's type
    with pytest.raises(RunConfRefused):
        settings_for_run(t, {"qa_thresholds": {"rms": 1e9}}, "r1", data_root=root)


def test_memory_sizes_are_read_strictly():
    assert memory_bytes("20GB") == 20 * 1000**3 and memory_bytes("512MiB") == 512 * 1024**2
    for bad in ("inf", "nan", "-1GB", "1e3GB", "auto", True):
        with pytest.raises(ValueError):
            memory_bytes(bad)


def test_a_failed_runs_notification_names_the_conf_vis_only_sanitised():
    from pclean_provider.pipeline.notify import ms_of

    assert ms_of({"params": {"vis": "/data/lost.ms"}}) == "lost.ms"
    forged = ms_of({"params": {"vis": "/d/a.ms\n2026-01-01 ERROR forged" + "x" * 200}})
    assert "\n" not in forged and " " not in forged and len(forged) <= 80


def test_a_failed_batchs_notification_names_its_ms():
    from pclean_provider.pipeline.notify import ms_of

    assert ms_of({"ti": {"rendered_map_index": "night1.ms ch 0-3 (2 sub-cubes)"}}) == "night1.ms"
    assert ms_of({"ti": {"rendered_map_index": "night1.ms"}}) == "night1.ms"
