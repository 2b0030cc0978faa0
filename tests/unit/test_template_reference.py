"""docs/pipeline-template-reference.md is what the models say, and every template key is described."""

from pathlib import Path

from pclean_provider.pipeline.template_reference import render, rows

REPO = Path(__file__).resolve().parents[2]


def test_the_reference_in_docs_is_the_models_own():
    written = (REPO / "docs" / "pipeline-template-reference.md").read_text()
    assert written == render(), ("docs/pipeline-template-reference.md is out of date: run `python -m "
                                 "pclean_provider.pipeline.template_reference > docs/pipeline-template-reference.md`")


def test_every_key_says_what_it_sets():
    undescribed = [key for key, _kind, _default, text in rows() if not text]
    assert undescribed == []
    keys = {key for key, *_ in rows()}
    assert {"cluster.type", "qa.gate_floor", "plan.cell", "imaging_timeout.minutes"} <= keys
