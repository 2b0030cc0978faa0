"""review_decision in the nightly DAGs: where it sits (the cluster's teardown never waits for it), what it
asks, and what each answer does to the ticket and the runs (the answers are given as Airflow hands them
to the task; the live UI/REST path is tests/browser/test_trigger_form.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

import tests.airflow.provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.fake_ti import FakeTI

pytestmark = pytest.mark.airflow


def shipped_and_fanout():
    from pclean_provider.pipeline.pipeline_template import PipelineTemplate, load_templates

    templates = load_templates()
    cube = next(t for t in templates if t.kind == "cube")
    fanout = PipelineTemplate.model_validate({**cube.model_dump(), "dag_id": "review_fanout", "cube_mode": "fanout"})
    return [*templates, fanout]


@pytest.fixture(scope="module")
def dags():
    from airflow.serialization.serialized_objects import DagSerialization

    from pclean_provider.dags.builder import build_dag

    built = {t.dag_id: (t, build_dag(t)) for t in shipped_and_fanout()}
    # The scheduler's view too: what it decides from is the serialized DAG.
    return {dag_id: (t, dag, DagSerialization.from_dict(DagSerialization.to_dict(dag)))
            for dag_id, (t, dag) in built.items()}


def test_the_teardown_never_waits_for_a_review(dags):
    for dag_id, (_, dag, serialized) in dags.items():
        for d in (dag, serialized):
            decision, down = d.get_task("review_decision"), d.get_task("cluster_down")
            assert decision.upstream_task_ids == {"review"}, dag_id
            assert decision.task_group.group_id == "ms", dag_id  # one per (MS, target), mapped with the group
            # Nothing upstream of the teardown, however far, is the review's wait.
            assert "review_decision" not in down.get_flat_relative_ids(upstream=True), dag_id
            assert {"archive", "review"} <= down.upstream_task_ids, dag_id
            assert down.is_teardown and d.get_task("cluster_up") in down.upstream_list
        # The review is downstream of the cluster's setup, yet clearing it does not bring the cluster
        # back (Airflow adds a setup only when its teardown is downstream of the cleared task) ...
        assert "cluster_up" in dag.get_task("review_decision").get_flat_relative_ids(upstream=True)
        assert list(dag.get_task("review_decision").get_upstreams_only_setups_and_teardowns()) == []
        # ... while clearing the archive does.
        assert {x.task_id for x in dag.get_task("archive").get_upstreams_only_setups_and_teardowns()} == {
            "cluster_up", "cluster_down"}


def test_the_question_its_form_and_its_bound(dags):
    from pclean_provider.pipeline.review import REIMAGE_FIELDS

    for dag_id, (t, dag, serialized) in dags.items():
        decision = dag.get_task("review_decision")
        assert decision.options == ["Approve", "Reject", "Re-image"] and decision.defaults == ["Reject"]
        assert not decision.multiple and decision.retries == 0
        assert decision.response_timeout.total_seconds() == t.qa.review_timeout_minutes * 60
        assert set(decision.params) == {"note", *REIMAGE_FIELDS}, dag_id
        assert all(decision.params[name] is None for name in decision.params)  # empty: keep the value
        # The DAG's trigger form stays the DAG's; the approval publishes through the products alias.
        assert "vis" not in decision.params and "vis" in dag.params
        assert [o.name for o in decision.outlets] == [f"{dag_id}.products"]
        assert {link.name for link in decision.operator_extra_links} == {"QA report", "QA night"}
        assert set(serialized.get_task("review_decision").params) == set(decision.params)


# -- the answers, as Airflow hands them to the task -------------------------------------------------

@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path.resolve()
    monkeypatch.setenv("PCLEAN_DATA_ROOT", str(root))
    ms = root / "landing" / "night.ms"
    ms.mkdir(parents=True)
    ticket = root / "review" / "p" / "night" / "run1.json"
    ticket.parent.mkdir(parents=True)
    ticket.write_text(json.dumps({"ms": "night.ms", "how_to_publish": "pclean archive publish ..."}))
    item = {"name": "night.ms", "vis": str(ms), "route": "review", "review_ticket": str(ticket), "qa_score": 0.2,
            "qa_band": "error", "qa_html": str(root / "work" / "qa.html"), "imagename": str(root / "work" / "night")}
    return SimpleNamespace(root=root, ms=ms, ticket=ticket, item=item)


def operator(item):
    from airflow.sdk import AssetAlias

    from pclean_provider.dags.tasks.review import ReviewDecisionOperator
    from pclean_provider.pipeline.pipeline_template import PipelineTemplate

    t = PipelineTemplate.model_validate({"dag_id": "p", "kind": "cube", "title": "P",
                                         "overrides": {"niter": 30, "imsize": 64}})
    return ReviewDecisionOperator(task_id="review_decision", item=item, pipeline=t, alias=AssetAlias("p.products"))


def answer(op, chosen, params=None, *, timedout=False, conf=None):
    ti = FakeTI(dag_id="p", run_id="run1", task_id="review_decision", map_index=0)
    context = {"ti": ti, "task_instance": ti, "run_id": "run1", "params": {"vis": None},
               "dag_run": SimpleNamespace(conf=conf or {}, start_date=None)}
    event = {"chosen_options": chosen, "params_input": params or {}, "responded_at": datetime.now(UTC),
             "responded_by_user": None if timedout else {"id": "7", "name": "ana"}, "timedout": timedout}
    return op.execute_complete(context, event), ti


def test_reject_keeps_it_in_review_with_the_note(site):
    result, _ = answer(operator(site.item), ["Reject"], {"note": "stripes across the field"})
    ticket = json.loads(site.ticket.read_text())
    assert ticket["status"] == "rejected" and ticket["how_to_publish"].startswith("pclean archive publish")
    (decision,) = ticket["decisions"]
    assert (decision["action"], decision["by"], decision["note"]) == ("reject", "ana", "stripes across the field")
    assert result["review"]["action"] == "reject" and "archive" not in result


def test_no_answer_in_time_leaves_it_in_review(site):
    # Airflow's timeout sweep answers with the defaults: Reject, and every field at its empty value.
    result, _ = answer(operator(site.item), ["Reject"], {"note": None, "niter": None}, timedout=True)
    ticket = json.loads(site.ticket.read_text())
    assert ticket["status"] == "no answer; stays in review"
    assert ticket["decisions"][0]["action"] == "timeout" and ticket["decisions"][0]["minutes"] == 240
    assert result["review"]["by"] is None


def test_reimage_asks_for_a_run_of_this_ms_alone_with_the_overrides(site):
    from airflow.sdk.exceptions import DagRunTriggerException

    with pytest.raises(DagRunTriggerException) as info:
        answer(operator(site.item), ["Re-image"], {"niter": 500, "robust": 0.5}, conf={"qa_min_score": 0.7})
    trigger = info.value
    assert trigger.trigger_dag_id == "p" and trigger.dag_run_id.startswith("reimage__")
    assert trigger.conf == {"vis": str(site.ms), "overrides": {"niter": 500, "robust": 0.5}, "qa_min_score": 0.7}
    assert not trigger.wait_for_completion and "niter=500" in trigger.note and "ana" in trigger.note
    ticket = json.loads(site.ticket.read_text())
    assert ticket["status"] == "re-imaging" and ticket["decisions"][0]["new_run_id"] == trigger.dag_run_id


def test_reimage_without_a_change_runs_the_ms_again_as_it_was(site):
    from airflow.sdk.exceptions import DagRunTriggerException

    with pytest.raises(DagRunTriggerException) as info:
        answer(operator(site.item), ["Re-image"], {"note": "the cluster lost a worker", "niter": None})
    assert info.value.conf == {"vis": str(site.ms), "overrides": {}}


@pytest.mark.parametrize(("params", "parameter"), [
    ({"niter": -5}, "overrides.niter"),
    ({"cell": "../../etc"}, "overrides.cell"),
    ({"startmodel": "/x"}, "overrides.startmodel"),
    ({"imsize": 100000}, "overrides.imsize"),  # within the form's kind, beyond the pipeline's budget
])
def test_an_answer_the_form_may_not_carry_fails_naming_it_and_changes_nothing(site, params, parameter):
    from airflow.sdk.exceptions import AirflowFailException, DagRunTriggerException

    before = site.ticket.read_text()
    with pytest.raises(AirflowFailException) as info:
        answer(operator(site.item), ["Re-image"], params)
    assert not isinstance(info.value, DagRunTriggerException)
    assert parameter in str(info.value) and "stays in review" in str(info.value)
    assert site.ticket.read_text() == before


def test_an_item_that_passed_the_gate_never_waits(site):
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException):
        operator({**site.item, "route": "archive"}).execute({"run_id": "run1"})


def test_the_question_names_the_report_the_timeout_and_the_cli_path(site):
    from pclean_provider.dags.tasks.review import review_body
    from pclean_provider.pipeline.run_settings import settings_for_run

    op = operator(site.item)
    s = settings_for_run(op.pipeline, {}, "run1")
    body = review_body(site.item, s, op.pipeline, "/pclean/qa/p/files/x/qa.html")
    assert "[QA report](/pclean/qa/p/files/x/qa.html)" in body and "240 minutes" in body
    assert f"pclean archive publish --image {site.item['imagename']}" in body
    assert Path(s.archive_dir).name == "archive"


def test_the_answer_page_is_the_mapped_task_instances_own():
    from pclean_provider.dags.tasks.review import required_actions_path

    assert required_actions_path("p", "manual__2026-01-01T02:00:00+00:00", 3) == (
        "/dags/p/runs/manual__2026-01-01T02%3A00%3A00%2B00%3A00/tasks/review_decision/mapped/3/required_actions")
    assert required_actions_path("p", "r1", -1) == "/dags/p/runs/r1/tasks/review_decision/required_actions"
