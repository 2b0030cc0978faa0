"""What the plugin may serve of a QA report, on real files: only report files of QA folders under
the pipeline's data roots, by their real paths (links followed), never by way of '..'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from pclean_provider.pipeline.report_files import (
    NotServed,
    confined_folder,
    pipeline_roots,
    real_roots,
    report_file,
)


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def area(tmp_path):
    """A data root with a night's QA folder, and a folder beside the root (outside it)."""
    root = tmp_path / "data"
    qa = root / "work" / "nightly" / "runs" / "night1" / "ms1" / "qa"
    for name in ("qa.html", "qa.json", "qa.schema.json", "gate.json", "plot.png", "notes.txt"):
        _write(qa / name, name)
    outside = tmp_path / "data-elsewhere"  # shares the root's name as a prefix: must not count as inside
    _write(outside / "qa" / "qa.html", "<script>outside</script>")
    _write(tmp_path / "secret" / "qa" / "qa.json", "{}")
    return root, qa, outside, real_roots([root])


def refused(path, roots) -> bool:
    try:
        report_file(path, roots)
    except NotServed:
        return True
    return False


def test_report_files_of_a_qa_folder_under_the_root_are_served(area):
    root, qa, _, roots = area
    assert report_file(qa / "qa.html", roots) == (qa / "qa.html", "text/html; charset=utf-8")
    assert report_file(str(qa / "qa.json"), roots)[1] == "application/json"
    assert report_file(qa / "plot.png", roots)[1] == "image/png"
    # pclean qa's default folder beside an image: <imagename>.qa/
    beside = _write(root / "adhoc" / "night.cube.qa" / "qa.html")
    assert report_file(beside, roots)[0] == beside


def test_nothing_outside_the_roots_and_nothing_but_reports(area, tmp_path):
    root, qa, outside, roots = area
    assert refused(outside / "qa" / "qa.html", roots)  # '/data-elsewhere' only looks like '/data'
    assert refused(tmp_path / "secret" / "qa" / "qa.json", roots)
    assert refused(qa / "notes.txt", roots)  # not a kind of file a report consists of
    assert refused(qa / "missing.html", roots)  # absent: the same answer as forbidden
    assert refused(qa, roots)  # a folder
    _write(root / "notifications" / "task_failed.json", "{}")
    assert refused(root / "notifications" / "task_failed.json", roots)  # JSON, but no QA folder
    (root / "work" / "qa" / "trap.html").mkdir(parents=True)
    assert refused(root / "work" / "qa" / "trap.html", roots)  # a folder with a report's name
    assert refused("relative/qa/qa.html", roots)
    assert refused("", roots)
    assert refused(str(qa / "qa.html") + "\x00.png", roots)
    assert refused(str(qa / "qa.html").replace("qa.html", "qa\nhtml"), roots)


def test_no_way_out_through_dot_dot(area, tmp_path):
    root, qa, _, roots = area
    # Even one that would land inside the root again: a link of ours never has '..'.
    assert refused(f"{qa}/../qa/qa.html", roots)
    assert refused(f"{root}/../secret/qa/qa.json", roots)
    assert refused(f"{root}/work/../../secret/qa/qa.json", roots)


def test_symbolic_links_are_judged_by_where_they_lead(area, tmp_path):
    root, qa, outside, roots = area
    # A report file linked in from outside the root.
    leak = qa.parent.parent / "ms2" / "qa"
    leak.mkdir(parents=True)
    (leak / "qa.html").symlink_to(outside / "qa" / "qa.html")
    assert refused(leak / "qa.html", roots)
    # A whole QA folder linked in from outside.
    (qa.parent.parent / "ms3").mkdir()
    (qa.parent.parent / "ms3" / "qa").symlink_to(tmp_path / "secret" / "qa")
    assert refused(qa.parent.parent / "ms3" / "qa" / "qa.json", roots)
    # A link to a file that is no report, named like one.
    _write(root / "landing" / "night.ms" / "table.dat", "visibilities")
    (qa / "copy.json").symlink_to(root / "landing" / "night.ms" / "table.dat")
    assert refused(qa / "copy.json", roots)
    # A link inside the root to a report inside the root: served, as the file it leads to.
    (qa.parent / "latest-qa").symlink_to(qa)
    assert report_file(qa.parent / "latest-qa" / "qa.html", roots)[0] == qa / "qa.html"


def test_a_root_reached_through_a_link_is_the_folder_it_leads_to(tmp_path):
    real = tmp_path / "disk" / "pclean"
    report = _write(real / "archive" / "p_cube" / "v0001" / "qa" / "qa.html")
    (tmp_path / "data").symlink_to(real)
    roots = real_roots([tmp_path / "data"])
    assert roots == [real]
    through_link = tmp_path / "data" / "archive" / "p_cube" / "v0001" / "qa" / "qa.html"
    assert report_file(through_link, roots)[0] == report


def test_a_pipelines_roots_are_its_templates(tmp_path):
    data = tmp_path / "data"
    inside = _write(data / "science" / "run" / "qa" / "qa.html")
    beside = _write(data / "work" / "run" / "qa" / "qa.html")
    elsewhere = _write(tmp_path / "scratch" / "run" / "qa" / "qa.html")
    # No data_roots: the data root and the template's own areas (an absolute archive elsewhere too).
    plain = PipelineTemplate(dag_id="p", kind="cube", title="p", archive_dir=str(tmp_path / "scratch"))
    roots = pipeline_roots(plain, data)
    assert report_file(inside, roots) and report_file(beside, roots) and report_file(elsewhere, roots)
    # data_roots narrow it to what they name.
    narrow = PipelineTemplate(dag_id="p", kind="cube", title="p", data_roots=["science"])
    roots = pipeline_roots(narrow, data)
    assert report_file(inside, roots)
    assert refused(beside, roots) and refused(elsewhere, roots)
    # A DAG that is no pipeline: the data root alone.
    assert pipeline_roots(None, data) == [Path(os.path.realpath(data))]


def test_a_night_folder_must_be_a_folder_under_the_roots(area, tmp_path):
    root, qa, outside, roots = area
    night = qa.parent.parent
    assert confined_folder(night, roots) == night
    for bad in (outside, qa / "qa.html", f"{night}/../../runs", tmp_path / "nowhere"):
        with pytest.raises(NotServed):
            confined_folder(bad, roots)
