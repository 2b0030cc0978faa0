"""The trigger form's remaining gaps, each tried as a run's conf would try it (issue 30, item 5): the QA
gate's floor, the folders a run writes to, paths passed on resolved, masks that look like regions,
outlier files naming images elsewhere, and selections and sizes with no bound."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from pclean_provider.pipeline.conf_paths import is_inline_region, outlier_snapshot
from pclean_provider.pipeline.conf_policy import (
    RunConfRefused,
    allowed_roots,
    check_run_conf,
    work_roots,
)
from pclean_provider.pipeline.ingest import SelectionNotInMs, _selected_ids, validate_metadata
from pclean_provider.pipeline.pipeline_template import (
    PipelineTemplate,
    TemplateError,
    load_template,
    load_templates,
)
from pclean_provider.pipeline.qa_gate import QA_GATE_MINIMUM_ENV, QaGateSettingError
from pclean_provider.pipeline.run_settings import settings_for_run


def template(**extra) -> PipelineTemplate:
    return PipelineTemplate.model_validate({"dag_id": "p", "kind": "cube", "title": "P", **extra})


def refused(t: PipelineTemplate, conf: dict, root: Path) -> RunConfRefused:
    with pytest.raises(RunConfRefused) as info:
        check_run_conf(t, conf, root)
    return info.value


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv(QA_GATE_MINIMUM_ENV, raising=False)
    for area in ("landing", "work", "archive", "review", "models", "masks"):
        (tmp_path / area).mkdir()
    return tmp_path.resolve()


# The QA gate ---------------------------------------------------------------------------------

def test_the_shipped_templates_never_let_a_run_archive_an_error_band_product(root):
    for t in load_templates():
        err = refused(t, {"qa_min_score": 0.0}, root)
        assert err.parameter == "qa_min_score" and "0.33" in str(err)
        assert t.qa.floor() == 0.33
        assert check_run_conf(t, {"qa_min_score": 0.33}, root).qa_min_score == 0.33


def test_a_template_gate_below_the_sites_minimum_is_refused_with_the_fix(root, tmp_path):
    for qa in ({"gate_floor": 0.0}, {"gate_min_score": 0.1}, {"gate_floor": 0.2, "gate_min_score": 0.66}):
        with pytest.raises(ValueError) as info:
            template(qa=qa)
        message = str(info.value)
        assert "below this site's lowest QA gate 0.33" in message and "qa_gate_minimum" in message
    site = tmp_path / "site.yaml"
    site.write_text("dag_id: p\nkind: cube\ntitle: P\nqa: {gate_floor: 0.0}\n")
    with pytest.raises(TemplateError, match="(?s)site.yaml.*qa.gate_floor=0.0"):
        load_template(site)


def test_only_the_administrators_setting_lowers_the_gate_and_it_is_logged(root, monkeypatch, caplog):
    monkeypatch.setenv(QA_GATE_MINIMUM_ENV, "0.05")
    with caplog.at_level(logging.WARNING, logger="pclean_provider.pipeline.qa_gate"):
        t = template(qa={"gate_floor": 0.05})
    assert check_run_conf(t, {"qa_min_score": 0.05}, root).qa_min_score == 0.05
    assert any("lowered to 0.05" in r.getMessage() for r in caplog.records)
    # The shipped templates follow the site: lowered by the administrator, they let a run lower the gate.
    shipped = load_templates()[0]
    assert check_run_conf(shipped, {"qa_min_score": 0.05}, root).qa_min_score == 0.05
    monkeypatch.setenv(QA_GATE_MINIMUM_ENV, "nope")
    with pytest.raises(QaGateSettingError, match="PCLEAN_QA_GATE_MINIMUM"):
        shipped.qa.floor()


# Where a run may write -----------------------------------------------------------------------

def test_work_and_archive_dirs_stay_in_their_own_roots(root):
    t = template()
    for key, value in (("archive_dir", "landing/arch"), ("archive_dir", "work/arch"), ("work_dir", "archive/w"),
                       ("work_dir", "review/w"), ("work_dir", "."), ("archive_dir", str(root))):
        err = refused(t, {key: value}, root)
        assert err.parameter == key and f"{key.split('_')[0]} roots" in str(err), err
    checked = check_run_conf(t, {"work_dir": "work/mine", "archive_dir": str(root / "archive" / "special")}, root)
    assert (checked.work_dir, checked.archive_dir) == (root / "work" / "mine", root / "archive" / "special")
    wider = template(work_roots=["work", "scratch"], archive_roots=["archive", "/nonexistent/arch"])
    assert check_run_conf(wider, {"work_dir": "scratch/w"}, root).work_dir == root / "scratch" / "w"
    assert work_roots(wider, root) == [root / "work", root / "scratch"]


# Paths passed on resolved --------------------------------------------------------------------

def test_path_parameters_go_on_as_real_absolute_paths(root):
    (root / "models" / "m.image").mkdir()
    (root / "landing" / "link").symlink_to(root / "models")
    t = template(overrides={"specmode": "cube", "cfcache": "models/cache.cf", "mask": "circle[[8pix,8pix],2pix]"})
    s = settings_for_run(t, {"overrides": {"startmodel": "models/m.image", "vptable": "landing/link/vp.tab"}},
                         "manual__1", data_root=root)
    assert s.overrides["startmodel"] == str(root / "models" / "m.image")
    assert s.overrides["vptable"] == str(root / "models" / "vp.tab")  # the link followed, once, here
    # The template's own relative paths are under the data root too, its region text untouched.
    assert s.overrides["cfcache"] == str(root / "models" / "cache.cf")
    assert s.overrides["mask"] == "circle[[8pix,8pix],2pix]"
    listed = settings_for_run(t, {"overrides": {"startmodel": ["models/a.tt0", "models/a.tt1"]}}, "m2", data_root=root)
    assert listed.overrides["startmodel"] == [str(root / "models" / "a.tt0"), str(root / "models" / "a.tt1")]


# Masks: region text or a path ----------------------------------------------------------------

@pytest.mark.parametrize("mask", ["/etc/passwd[0]", "../../etc/x[1]", "circle[[1pix,1pix],1pix]/../../../etc",
                                  "/tmp/circle[[1pix,1pix],1pix]", "../box[[0pix,0pix],[4pix,4pix]]"])
def test_a_mask_with_brackets_that_is_a_path_outside_the_roots_is_refused(root, mask):
    err = refused(template(), {"overrides": {"mask": mask}}, root)
    assert err.parameter == "overrides.mask" and "outside the pipeline's data roots" in str(err)


def test_region_text_passes_as_written_and_a_region_file_is_resolved(root):
    for text in ("circle[[32pix,32pix],4pix]", "#CRTFv0\nbox[[1pix,1pix],[9pix,9pix]] coord=J2000",
                 "+ellipse [[19h59m28.5s, +40d44m01.5s], [2arcsec, 1arcsec], 0deg]\n-circle[[5pix,5pix],1pix]",
                 "global coord=J2000\nCircle[[10pix,10pix],3pix]"):
        assert is_inline_region(text), text
        assert check_run_conf(template(), {"overrides": {"mask": text}}, root).overrides["mask"] == text
    for path in ("masks/a[1].crtf", "circle.crtf", "/data/circle[1]", "masks/m.mask"):
        assert not is_inline_region(path), path
    checked = check_run_conf(template(), {"overrides": {"mask": "masks/a[1].crtf"}}, root)
    assert checked.overrides["mask"] == str(root / "masks" / "a[1].crtf")


# Outlier files --------------------------------------------------------------------------------

def outlier_file(root: Path, imagename: str, extra: str = "") -> Path:
    path = root / "models" / "outliers.txt"
    path.write_text(f"# outliers\nimagename={imagename}\nimsize=[64,64]\ncell=[8arcsec,8arcsec]\n{extra}")
    return path


@pytest.mark.parametrize("imagename", ["{outside}/o1", "{root}/archive/o1", "{root}/landing/o1", "o1",
                                       "{root}/work/../archive/o1"])
def test_an_outlier_fields_image_outside_the_work_roots_is_refused(root, tmp_path_factory, imagename):
    outside = tmp_path_factory.mktemp("outside").resolve()
    path = outlier_file(root, imagename.format(root=root, outside=outside))
    err = refused(template(), {"overrides": {"outlierfile": str(path)}}, root)
    assert err.parameter.startswith("overrides.outlierfile line 2 (imagename)"), err
    assert "work" in str(err)


def test_an_outlier_fields_mask_or_model_outside_the_data_roots_is_refused(root):
    for extra in ("mask=/etc/shadow\n", "startmodel=['/etc/a.tt0', '/etc/a.tt1']\n"):
        path = outlier_file(root, f"{root}/work/o1", extra)
        err = refused(template(), {"overrides": {"outlierfile": str(path)}}, root)
        assert "line 5" in err.parameter and "data roots" in str(err)
    path = outlier_file(root, f"{root}/work/o1", "mask=circle[[40pix,40pix],10pix]\n")
    checked = check_run_conf(template(), {"overrides": {"outlierfile": "models/outliers.txt"}}, root)
    assert checked.overrides["outlierfile"] == str(path)


def test_the_imaging_reads_a_checked_copy_of_the_outlier_file(root):
    path = outlier_file(root, f"{root}/work/o1")
    t = template()
    copy = outlier_snapshot(str(path), allowed_roots(t, root), work_roots(t, root), root, root / "work" / "o.txt")
    path.write_text(f"imagename={root}/archive/o1\nimsize=[64,64]\n")  # changed after the check
    assert Path(copy).read_text() == f"# outliers\nimagename={root}/work/o1\nimsize=[64,64]\ncell=[8arcsec,8arcsec]\n"
    with pytest.raises(RunConfRefused):
        outlier_snapshot(str(path), allowed_roots(t, root), work_roots(t, root), root, root / "work" / "p.txt")
    assert not (root / "work" / "p.txt").exists()


# Selections and sizes -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("spw", "0~99999999999"), ("spw", "0:0~99999999"),
                                             ("field", "1,2,3~" + "9" * 40), ("scan", "1~2000000")])
def test_a_selection_beyond_any_ms_is_refused_before_ingest(root, name, value):
    err = refused(template(), {"overrides": {name: value}}, root)
    assert err.parameter == f"overrides.{name}" and "beyond any MeasurementSet" in str(err)
    assert len(str(err)) < 300


def test_selections_have_a_length_and_a_count(root):
    assert refused(template(), {"overrides": {"antenna": "a" * 2000}}, root).parameter == "overrides.antenna"
    assert refused(template(), {"overrides": {"field": ["0"] * 100}}, root).parameter == "overrides.field"
    assert refused(template(), {"overrides": {"spw": {"x": 1}}}, root).parameter == "overrides.spw"
    ok = check_run_conf(template(), {"overrides": {"spw": "0:5~60;100~200", "field": "0~2", "scan": 7}}, root)
    assert ok.overrides["spw"] == "0:5~60;100~200"
    # Frequencies are no ids: a selection by frequency in Hz passes.
    assert check_run_conf(template(), {"overrides": {"spw": "*:1420000000~1421000000Hz"}}, root).overrides


def test_image_size_and_channels_stay_within_the_templates_budget(root):
    t = template(plan={"max_imsize": 4096, "max_cube_gb": 10})
    err = refused(t, {"overrides": {"imsize": [512, 100000]}}, root)
    assert err.parameter == "overrides.imsize" and "plan.max_imsize" in str(err)
    err = refused(t, {"overrides": {"imsize": 1024, "nchan": 10_000}}, root)
    assert err.parameter == "overrides.nchan" and "plan.max_cube_gb" in str(err) and "2,384" in str(err)
    # Left to the plan, the image is at least 64 pixels a side: a billion channels never fit.
    assert refused(t, {"overrides": {"nchan": 10**9}}, root).parameter == "overrides.nchan"
    assert check_run_conf(t, {"overrides": {"imsize": 1024, "nchan": 2000}}, root).overrides["nchan"] == 2000


def test_ingest_never_walks_a_huge_range():
    started = time.process_time()
    problems = _selected_ids("0~2000000", [0, 1, 2], ["a", "b", "c"], "spw")
    assert time.process_time() - started < 0.5
    assert len(problems) == 1 and "1,999,998 in all" in problems[0] and len(problems[0]) < 200
    assert _selected_ids("0~2", [0, 1, 2], ["a", "b", "c"], "spw") == []
    meta = {"nrows": 10, "spws": [{"id": 0, "nchan": 4}], "fields": [{"id": 0, "name": "F"}]}
    with pytest.raises(SelectionNotInMs, match="spw 0~99999999999"):
        validate_metadata(meta, spw="0~99999999999")
