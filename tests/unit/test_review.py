"""A product's review (pipeline/review.py): what an answer asks for, what the re-image form may carry,
the re-image run's conf and the ticket's record."""

from __future__ import annotations

import json

import pytest

from pclean_provider.pipeline.conf_policy import CONF_KEYS, RunConfRefused, check_run_conf
from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from pclean_provider.pipeline.review import (
    APPROVE,
    REIMAGE,
    REIMAGE_FIELDS,
    REJECT,
    ReviewOutcome,
    check_reimage_overrides,
    record_decision,
    reimage_conf,
    review_outcome,
)


def template(**extra) -> PipelineTemplate:
    return PipelineTemplate.model_validate({"dag_id": "p", "kind": "cube", "title": "P", **extra})


def refusal(raw) -> RunConfRefused:
    with pytest.raises(RunConfRefused) as info:
        check_reimage_overrides(raw)
    return info.value


def test_the_forms_parameters_pass_as_data_and_empty_ones_keep_the_products_value():
    raw = {"niter": 500, "threshold": "0.5mJy", "nsigma": 3.5, "cell": "4arcsec", "imsize": 128,
           "weighting": "briggs", "robust": -0.5}
    assert check_reimage_overrides(raw) == raw
    assert check_reimage_overrides({"niter": 0, "threshold": None, "cell": "", "robust": None}) == {"niter": 0}
    assert check_reimage_overrides(None) == {} and check_reimage_overrides({}) == {}
    # Two axes, a threshold in Jy as a number, a cell per axis.
    assert check_reimage_overrides({"imsize": [128, 96], "threshold": 0.001, "cell": ["4arcsec", "5arcsec"]}) == {
        "imsize": [128, 96], "threshold": 0.001, "cell": ["4arcsec", "5arcsec"]}
    # A form may send its numbers as text.
    assert check_reimage_overrides({"niter": "500", "imsize": "128", "robust": "-0.5", "nsigma": "3"}) == {
        "niter": 500, "imsize": 128, "robust": -0.5, "nsigma": 3.0}
    assert set(REIMAGE_FIELDS) == {"niter", "threshold", "nsigma", "cell", "imsize", "weighting", "robust"}


@pytest.mark.parametrize(("raw", "parameter", "words"), [
    ({"startmodel": "/data/model.image"}, "overrides.startmodel", "not a parameter a review may change"),
    ({"vis": "/elsewhere/x.ms"}, "overrides.vis", "not a parameter a review may change"),
    ({"niter": True}, "overrides.niter", "not a whole number"),
    ({"niter": 2.5}, "overrides.niter", "not a whole number"),
    ({"niter": -1}, "overrides.niter", "outside"),
    ({"niter": 10**12}, "overrides.niter", "outside"),
    ({"robust": 3}, "overrides.robust", "outside"),
    ({"robust": "0.5; drop"}, "overrides.robust", "not a number"),
    ({"niter": "1e3"}, "overrides.niter", "not a whole number"),
    ({"niter": "9" * 40}, "overrides.niter", "not a whole number"),
    ({"nsigma": float("nan")}, "overrides.nsigma", "not a number"),
    ({"weighting": "__import__('os')"}, "overrides.weighting", "not one of"),
    ({"threshold": "1mJy; rm -rf /"}, "overrides.threshold", "not a quantity"),
    ({"threshold": "{{ conf }}"}, "overrides.threshold", "not a quantity"),
    ({"cell": "/etc/passwd"}, "overrides.cell", "not a quantity"),
    ({"cell": "4Jy"}, "overrides.cell", "not a quantity"),
    ({"cell": ["1arcsec", "2arcsec", "3arcsec"]}, "overrides.cell", "one per axis"),
    ({"imsize": 4}, "overrides.imsize", "too small"),
    ({"imsize": "128px"}, "overrides.imsize", "not a number of pixels"),
    ({"imsize": [64, 64, 64]}, "overrides.imsize", "not a number of pixels"),
    ("niter=5", "overrides", "a mapping"),
])
def test_anything_else_is_refused_naming_the_parameter(raw, parameter, words):
    refused = refusal(raw)
    assert refused.parameter == parameter and words in str(refused), str(refused)
    assert str(refused).startswith(f"{parameter}: ")


def test_a_refusal_shows_a_hostile_name_only_cut_short_and_defanged():
    refused = refusal({"x\nFORGED LOG LINE" + "y" * 200: 1})
    assert "\n" not in str(refused) and len(refused.parameter) < 60


def test_each_answer_is_routed_to_its_action():
    approve = review_outcome([APPROVE], {"note": "fine after all", "niter": None}, by="ana")
    assert (approve.action, approve.note, approve.overrides, approve.by) == ("approve", "fine after all", {}, "ana")
    reject = review_outcome([REJECT], {"note": "  "}, by="ana")
    assert (reject.action, reject.note) == ("reject", "")
    reimage = review_outcome([REIMAGE], {"note": None, "niter": 400, "robust": 0.5, "cell": ""}, by="bo")
    assert (reimage.action, reimage.overrides) == ("reimage", {"niter": 400, "robust": 0.5})
    # Approve and Reject ignore whatever the form's override fields hold.
    assert review_outcome([REJECT], {"niter": 400}).overrides == {}


def test_a_timed_out_wait_is_its_own_action_whatever_default_it_carries():
    timed_out = review_outcome([REJECT], {"note": None, "niter": None}, timedout=True, by=None)
    assert timed_out == ReviewOutcome("timeout", note="", overrides={}, by=None)


@pytest.mark.parametrize(("chosen", "params", "parameter"), [
    ([], {}, "chosen_options"),
    ([APPROVE, REJECT], {}, "chosen_options"),
    (["Publish"], {}, "chosen_options"),
    ([REIMAGE], {"niter": -3}, "overrides.niter"),
    ([REIMAGE], {"mask": "/data/m.mask"}, "overrides.mask"),
    ([REJECT], {"note": "x" * 5000}, "note"),
])
def test_answers_that_cannot_be_used_are_refused(chosen, params, parameter):
    with pytest.raises(RunConfRefused) as info:
        review_outcome(chosen, params)
    assert info.value.parameter == parameter


def test_the_reimage_conf_is_this_ms_alone_with_the_runs_settings_and_the_reviews_overrides(tmp_path):
    root = tmp_path.resolve()
    ms = root / "landing" / "night.ms"
    ms.mkdir(parents=True)
    run_conf = {"overrides": {"niter": 30, "imsize": 64}, "qa_min_score": 0.7, "preset": "none", "redo": False}
    conf = reimage_conf(run_conf, str(ms), {"niter": 500, "robust": 0.5})
    assert conf == {"vis": str(ms), "overrides": {"niter": 500, "imsize": 64, "robust": 0.5}, "qa_min_score": 0.7,
                    "preset": "none", "redo": False}
    assert set(conf) <= set(CONF_KEYS)
    # A nightly run has no conf: the template's settings, this MS, the review's overrides.
    assert reimage_conf({}, str(ms), {"niter": 5}) == {"vis": str(ms), "overrides": {"niter": 5}}
    # The ordinary run conf policy judges it, as the trigger form's.
    t = template()
    checked = check_run_conf(t, conf, root)
    assert checked.vis == ms and checked.overrides["niter"] == 500 and checked.qa_min_score == 0.7
    with pytest.raises(RunConfRefused) as info:
        check_run_conf(t, reimage_conf({}, str(ms), {"imsize": t.plan.max_imsize + 1}), root)
    assert info.value.parameter == "overrides.imsize"


def test_the_ticket_keeps_what_it_said_and_gains_each_answer(tmp_path):
    ticket = tmp_path / "review" / "night.json"
    ticket.parent.mkdir()
    ticket.write_text(json.dumps({"ms": "night.ms", "qa_score": 0.2, "how_to_publish": "pclean archive publish"}))
    record_decision(ticket, ReviewOutcome("reimage", overrides={"niter": 500}, by="bo"), new_run_id="reimage__1")
    record_decision(ticket, ReviewOutcome("reject", note="still striped", by="ana"))
    data = json.loads(ticket.read_text())
    assert data["ms"] == "night.ms" and data["how_to_publish"] == "pclean archive publish"
    assert data["status"] == "rejected"
    assert [(d["action"], d["by"], d["note"]) for d in data["decisions"]] == [
        ("reimage", "bo", ""), ("reject", "ana", "still striped")]
    assert data["decisions"][0]["overrides"] == {"niter": 500} and data["decisions"][0]["new_run_id"] == "reimage__1"
    assert [p.name for p in ticket.parent.iterdir()] == ["night.json"]  # written whole, no temporary left


def test_the_templates_review_timeout_ends_before_its_deadline():
    assert template().qa.review_timeout_minutes == 240
    assert template(qa={"review_timeout_minutes": 30}, deadline_hours=1).qa.review_timeout_minutes == 30
    with pytest.raises(ValueError, match="review_timeout_minutes=360 is not shorter than deadline_hours=6"):
        template(qa={"review_timeout_minutes": 360})
    with pytest.raises(ValueError, match="review_timeout_minutes"):
        template(qa={"review_timeout_minutes": 0})
