"""The per-night QA index from a real run folder: every product with its score, band and the QA
gate's decision; the nights of a pipeline, newest first; nothing listed from outside the roots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pclean_provider.links.qa_report import report_candidates
from pclean_provider.pipeline.night_index import (
    GATE_RECORD,
    night_products,
    pipeline_nights,
    record_gate_decision,
)
from pclean_provider.pipeline.report_files import NotServed, real_roots
from pclean_provider.plugins import qa_pages


def write_report(product_dir: Path, *, ms: str, target: str, score: float, band: str, kind: str = "cube",
                 not_judged: str | None = None, html: bool = True) -> Path:
    """A product's QA folder as `pclean qa` leaves it (the fields the index reads, and more)."""
    qa = product_dir / "qa"
    qa.mkdir(parents=True)
    (qa / "qa.json").write_text(json.dumps({
        "schema_version": 1, "created_utc": "2026-01-02T03:04:05Z", "imagename": str(product_dir / "x.cube"),
        "kind": kind, "thresholds": {}, "metrics": None, "scores": [], "overall_score": score,
        "overall_band": band, "not_judged_reason": not_judged,
        "plan": {"ms": f"/data/landing/{ms}", "label": target, "slug": target}, "files": {}}))
    if html:
        (qa / "qa.html").write_text("<html>report</html>")
    return qa


def test_a_night_lists_every_product_with_score_band_and_gate(tmp_path):
    root = tmp_path / "data"
    night = root / "work" / "nightly_cube_imaging" / "runs" / "manual__2026-01-02T03_04_05"
    one = write_report(night / "night1", ms="night1.ms", target="TARGET", score=0.82, band="suboptimal")
    record_gate_decision(one, route="archive", gate=0.66, score=0.82, run_id="manual__2026-01-02T03:04:05")
    # An MS with two targets: a folder each, one below the gate, one not yet through the gate.
    low = write_report(night / "survey" / "NGC4151", ms="survey.ms", target="NGC4151", score=0.2,
                       band="error")
    record_gate_decision(low, route="review", gate=0.66, score=0.2, run_id="r")
    write_report(night / "survey" / "NGC4258", ms="survey.ms", target="NGC4258", score=0.0, band="error",
                 not_judged="no valid pixel", html=False)
    # A report that cannot be read is listed with the reason, not dropped.
    broken = night / "cut" / "qa"
    broken.mkdir(parents=True)
    (broken / "qa.json").write_text("{ half")
    # Things that are no product: the run's plans, logs and cluster files.
    (night / "plans").mkdir()
    (night / "plans" / "night1.ms.plan.json").write_text("{}")
    (night / "cluster").mkdir()

    products = night_products(night, real_roots([root]))
    by_folder = {p.product: p for p in products}
    assert list(by_folder) == ["cut", "night1", "survey/NGC4151", "survey/NGC4258"]
    first = by_folder["night1"]
    assert (first.label, first.ms, first.target, first.kind) == ("night1.ms", "night1.ms", "TARGET", "cube")
    assert (first.score, first.band, first.route, first.gate) == (0.82, "suboptimal", "archive", 0.66)
    assert first.qa_html == night / "night1" / "qa" / "qa.html"
    reviewed = by_folder["survey/NGC4151"]
    assert (reviewed.label, reviewed.route, reviewed.score) == ("survey.ms NGC4151", "review", 0.2)
    waiting = by_folder["survey/NGC4258"]
    assert waiting.route is None and waiting.gate is None and waiting.not_judged == "no valid pixel"
    assert waiting.qa_html is None  # no qa.html written: nothing to link to
    assert by_folder["cut"].problem and "qa.json cannot be read" in by_folder["cut"].problem
    assert json.loads((one / GATE_RECORD).read_text())["route"] == "archive"
    row = first.as_json()
    assert row["label"] == "night1.ms" and row["qa_json"].endswith("night1/qa/qa.json")


def test_a_product_linked_in_from_outside_the_roots_is_not_listed(tmp_path):
    root = tmp_path / "data"
    night = root / "work" / "p" / "runs" / "n1"
    write_report(night / "good", ms="good.ms", target="T", score=0.9, band="optimal")
    foreign = write_report(tmp_path / "elsewhere" / "stolen", ms="x.ms", target="T", score=1.0,
                           band="optimal")
    (night / "stolen").symlink_to(foreign.parent)
    # A qa.json linked in beside a real product's report.
    (night / "mixed" / "qa").mkdir(parents=True)
    (night / "mixed" / "qa" / "qa.json").symlink_to(foreign / "qa.json")
    assert [p.product for p in night_products(night, real_roots([root]))] == ["good"]


def test_the_nights_of_a_pipeline_newest_first(tmp_path):
    root = tmp_path / "data"
    runs = root / "work" / "p" / "runs"
    for i, name in enumerate(("scheduled__a", "manual__b", "manual__c")):
        night = runs / name
        write_report(night / "m1", ms="m1.ms", target="T", score=0.5, band="warning")
        if name == "manual__b":
            write_report(night / "m2", ms="m2.ms", target="T", score=0.5, band="warning")
        stamp = time.time() - 3600 * (3 - i)
        os.utime(night, (stamp, stamp))
    (runs / "linked").symlink_to(tmp_path)  # a night linked in from outside the roots
    (runs / "stray-file").write_text("")
    nights = pipeline_nights(runs, real_roots([root]))
    assert [(n.folder, n.products) for n in nights] == [
        ("manual__c", 1), ("manual__b", 2), ("scheduled__a", 1)]
    assert pipeline_nights(runs, real_roots([root]), limit=1)[0].folder == "manual__c"
    assert pipeline_nights(root / "work" / "never-ran", real_roots([root])) == []
    with pytest.raises(NotServed):  # a night that never ran is not an empty night
        night_products(runs / "manual__never", real_roots([root]))


def test_the_night_page_escapes_what_came_with_the_data(tmp_path):
    root = tmp_path / "data"
    night = root / "runs" / "n1"
    folder = night / "<i>m1"
    write_report(folder, ms="<img src=x onerror=alert(1)>.ms", target="<b>T</b>", score=0.5, band="warning")
    products = night_products(night, real_roots([root]))
    text = qa_pages.night_page("p", "n1", products, [("pclean QA", "/pclean/qa/")],
                               lambda path: "/pclean/qa/p/files" + path, "/pclean/qa/p/runs/n1/index.json")
    assert "<img" not in text and "<b>" not in text and "<i>" not in text
    # One target: the product is named by its MS alone.
    assert "&lt;img src=x onerror=alert(1)&gt;.ms &lt;b&gt;T&lt;/b&gt;" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.ms" in text and "&lt;i&gt;m1" in text


def test_where_a_tasks_result_says_its_report_is():
    # The QA task names its report; an imaging task names its image, beside which QA writes.
    assert report_candidates({"qa_html": "/d/run/m1/qa/qa.html", "imagename": "/d/run/m1/m1.cube"}) == [
        Path("/d/run/m1/qa/qa.html")]
    assert report_candidates({"imagename": "/d/run/m1/m1.cube"}) == [
        Path("/d/run/m1/qa/qa.html"), Path("/d/run/m1/m1.cube.qa/qa.html")]
    assert report_candidates(["not", "a", "result"]) == [] and report_candidates(None) == []
