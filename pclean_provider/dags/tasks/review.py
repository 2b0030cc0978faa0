"""review_decision: a person decides, in the Airflow UI or through the REST API, what becomes of a
product below the QA gate.

It follows the ``review`` task (which wrote the product's ticket) in the per-target group, so only
the targets the gate sent to review wait: for the others ``review`` skipped itself and Airflow skips
this task after it without running it. A waiting task is parked in Airflow's ``awaiting_input``
state (Human-in-the-loop, ``HITLOperator``; on Airflow 3.2 it is deferred to the standard provider's
``HITLTrigger`` on the triggerer instead): it holds no worker slot and no pool slot, and no
Dask cluster either, since the cluster's teardown does not wait for it (builder.py puts only
archive and review before ``cluster_down``). Airflow's Required Actions page shows the question and
the re-image form; ``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/review_decision/{index}/hitlDetails``
answers it from a script.

- Approve: the product is published exactly as the ``archive`` task publishes
  (:func:`~pclean_provider.dags.tasks.archive.publish_product`: the same asset event, ledger record
  and lineage), the reviewer named in the event and the ticket.
- Reject: it stays in review; the note goes into the ticket.
- Re-image: the tclean parameters of the form (pipeline/review.py says which, and checks them as
  data) start a new run of this pipeline for this MS alone, through the ordinary run conf (``vis``
  and ``overrides``, judged by the run conf policy before the run is asked for). With one active run
  per pipeline it starts once this run has ended.
- No answer within the template's ``qa.review_timeout_minutes``: Airflow answers with the default
  (Reject) and the product stays in review, nothing published.

An answer the form may not carry (a parameter it does not offer, a value out of range) fails the
task without retry, naming the parameter; the product stays in review, and clearing the task asks
again. The ``pclean archive publish`` command in the ticket still works whatever happens here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import AssetAlias, Param, conf
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DagRunTriggerException

from pclean_provider.dags.notifiers import send
from pclean_provider.dags.tasks.archive import publish_product
from pclean_provider.links.qa_report import QaNightLink, QaReportLink, served_report
from pclean_provider.links.qa_urls import report_url
from pclean_provider.pipeline.conf_policy import CONF_KEYS, RunConfRefused
from pclean_provider.pipeline.notify import NotifierEvent, notify_review_waiting
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, TemplateError
from pclean_provider.pipeline.review import (
    NOTE_FIELD,
    NOTE_SCHEMA,
    OPTIONS,
    REIMAGE_FIELDS,
    TIMEOUT_DEFAULT,
    ReviewOutcome,
    record_decision,
    reimage_conf,
    review_outcome,
)
from pclean_provider.pipeline.run_settings import RunSettings, settings_for_run

TASK_ID = "review_decision"
REIMAGE_RUN_PREFIX = "reimage__"


def review_form() -> dict[str, Param]:
    """The fields under the question: a note, and the tclean parameters a re-image may change."""
    form = {NOTE_FIELD: _param(NOTE_SCHEMA)}
    form.update({name: _param(schema) for name, schema in REIMAGE_FIELDS.items()})
    return form


def _param(schema: dict[str, Any]) -> Param:
    schema = dict(schema)
    return Param(None, description=schema.pop("description"), **schema)


class ReviewDecisionOperator(HITLOperator):
    """Approve, Reject or Re-image one below-gate product (see the module's docstring)."""

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "item")
    operator_extra_links = (QaReportLink(), QaNightLink())
    ui_color = "#fdd9b5"

    def __init__(self, *, item: Any, pipeline: PipelineTemplate, alias: AssetAlias, **kwargs: Any) -> None:
        # The DAG's params (its trigger form) reach every task; this one's form is the review's.
        kwargs.pop("params", None)
        super().__init__(
            subject="QA review", options=list(OPTIONS), defaults=[TIMEOUT_DEFAULT], multiple=False,
            params=review_form(), response_timeout=timedelta(minutes=pipeline.qa.review_timeout_minutes),
            outlets=[alias], retries=0, **kwargs)
        self.item = item
        self.pipeline = pipeline
        self.alias = alias

    # -- asking -----------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        item = self.item
        if not isinstance(item, dict) or item.get("route") != "review" or not item.get("review_ticket"):
            # Only reached when the review task ran for an item it did not ticket (older runs' XComs).
            raise AirflowSkipException("nothing waits for review here")
        t = self.pipeline
        s = self._settings(context)
        label = item.get("label") or item["name"]
        report = served_report(t.dag_id, item)
        report_link = report_url(t.dag_id, report) if report else None
        self.subject = f"QA review: {label} ({t.dag_id})"
        self.body = review_body(item, s, t, report_link)
        base = (conf.get("api", "base_url", fallback=None) or "").rstrip("/")
        review_url = base + required_actions_path(t.dag_id, context["run_id"], context["ti"].map_index)
        reason = (f"{label}: QA score {item['qa_score']:.2f} ({item['qa_band']}) below the gate {s.qa_min_score}; "
                  f"answer in Required Actions within {t.qa.review_timeout_minutes:g} minutes "
                  f"(task {TASK_ID}, run {context['run_id']})")
        notify_review_waiting(t.dag_id, context["run_id"], item["name"], reason,
                              map_index=context["ti"].map_index, review_url=review_url,
                              qa_report=(base + report_link) if report_link else None,
                              directory=s.notifications_dir)
        send(t, NotifierEvent.REVIEW_WAITING, context)
        return super().execute(context)

    # -- the answer -------------------------------------------------------------------------------
    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        item = self.item
        ticket = Path(item["review_ticket"])
        if "error" in event:
            return super().execute_complete(context, event)  # fails the task, naming the error
        by = _user_name(event.get("responded_by_user"))
        try:
            outcome = review_outcome(list(event.get("chosen_options") or []), event.get("params_input"),
                                     timedout=bool(event.get("timedout")), by=by)
        except RunConfRefused as exc:
            raise AirflowFailException(f"the answer to this review cannot be used: {exc}. Nothing was done; "
                                       f"{item['name']} stays in review. Clear this task to answer again.") from exc
        # Airflow's own checks, with the fields an answer left out at their (empty) defaults.
        params = {name: None for name in self.params}
        params.update(event.get("params_input") or {})
        super().execute_complete(context, {**event, "params_input": params})
        s = self._settings(context)
        result = {**item, "review": {"action": outcome.action, "by": by, "note": outcome.note,
                                     "overrides": outcome.overrides}}
        if outcome.action == "timeout":
            record_decision(ticket, outcome, minutes=self.pipeline.qa.review_timeout_minutes)
            print(f"{item['name']}: no answer within {self.pipeline.qa.review_timeout_minutes:g} minutes; "
                  f"it stays in review ({ticket})")
        elif outcome.action == "reject":
            record_decision(ticket, outcome)
            print(f"{item['name']}: rejected by {by}; it stays in review ({ticket}): {outcome.note}")
        elif outcome.action == "approve":
            reviewed = {"by": by, "note": outcome.note, "ticket": str(ticket)}
            published = publish_product(self.pipeline, self.alias, item, context, reviewed=reviewed, settings=s)
            record_decision(ticket, outcome, archive=published.get("path"), version=published.get("version"))
            result["archive"] = published
        else:
            self._reimage(context, item, ticket, outcome, result)
        return result

    def _reimage(self, context: Any, item: dict, ticket: Path, outcome: ReviewOutcome, result: dict) -> None:
        t = self.pipeline
        dag_run = context["dag_run"]
        new_conf = reimage_conf(dict(dag_run.conf or {}), item["vis"], outcome.overrides)
        try:
            # Judged now as the new run will judge it, so that a refusal names the parameter here.
            settings_for_run(t, new_conf, context["run_id"])
        except (RunConfRefused, TemplateError, ValueError) as exc:
            raise AirflowFailException(f"re-imaging {item['name']} with {outcome.overrides} is refused: {exc}. "
                                       "It stays in review; clear this task to answer again.") from exc
        run_id = f"{REIMAGE_RUN_PREFIX}{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}"
        changes = ", ".join(f"{k}={v}" for k, v in outcome.overrides.items()) or "no parameter changed"
        note = (f"Re-image of {item.get('label') or item['name']} from run {context['run_id']}, asked by "
                f"{outcome.by}: {changes}" + (f". {outcome.note}" if outcome.note else ""))
        record_decision(ticket, outcome, new_run_id=run_id)
        result["reimage_run_id"] = run_id
        # The task's result, pushed now: the trigger below ends the task without a return value.
        context["ti"].xcom_push(key="return_value", value=result)
        print(f"{item['name']}: re-imaging in run {run_id} ({changes}); it starts when this run ends")
        raise DagRunTriggerException(
            trigger_dag_id=t.dag_id, dag_run_id=run_id, conf=new_conf, logical_date=None, reset_dag_run=False,
            skip_when_already_exists=False, wait_for_completion=False, allowed_states=[], failed_states=[],
            poke_interval=60, deferrable=False, note=note[:1000])

    def _settings(self, context: Any) -> RunSettings:
        """The run's settings from its conf alone: this task's params are the review form's fields."""
        params = {k: v for k, v in (context.get("params") or {}).items() if k in CONF_KEYS}
        try:
            return settings_for_run(self.pipeline, params, context["run_id"])
        except (TemplateError, ValueError) as exc:
            raise AirflowFailException(f"run conf: {exc}") from exc


def required_actions_path(dag_id: str, run_id: str, map_index: int) -> str:
    """The UI's page where this task's question is answered. Not HITLOperator.generate_link_to_ui, whose
    ``?map_index=`` form the Airflow 3.3 UI does not resolve for a task in a mapped group."""
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/{TASK_ID}{mapped}/required_actions"


def review_body(item: dict, s: RunSettings, t: PipelineTemplate, report_link: str | None) -> str:
    """The question's text (Markdown, shown above the options in the UI)."""
    label = item.get("label") or item["name"]
    report = f"[QA report]({report_link})" if report_link else f"QA report: `{item['qa_html']}`"
    reason = (f"QA could not judge it: {item['qa_not_judged']}" if item.get("qa_not_judged")
              else f"below the gate {s.qa_min_score}")
    return "\n".join([
        f"**{label}** scored **{item['qa_score']:.2f}** ({item['qa_band']}) in QA, {reason}.",
        "",
        f"- {report}",
        f"- image: `{item['imagename']}`",
        f"- review ticket: `{item['review_ticket']}`",
        "",
        "**Approve** publishes it to the archive. **Reject** keeps it in review, with your note in its "
        f"ticket. **Re-image** images {item['name']} again in a new run, with the tclean parameters you "
        "fill in below (empty ones keep their value).",
        "",
        f"Without an answer within {t.qa.review_timeout_minutes:g} minutes it stays in review, unpublished. "
        f"From a shell it can still be published with `pclean archive publish --image {item['imagename']} "
        f"--archive-root {s.archive_dir}`.",
    ])


def _user_name(user: Any) -> str | None:
    if isinstance(user, dict):
        return user.get("name") or user.get("id")
    return getattr(user, "name", None) or (str(user) if user else None)


def review_decision_task(t: PipelineTemplate, alias: AssetAlias, pool: str):
    """A factory for the per-target group: ``review_decision(item=<review's output>)``."""

    def review_decision(item: Any) -> ReviewDecisionOperator:
        return ReviewDecisionOperator(
            task_id=TASK_ID, item=item, pipeline=t, alias=alias, pool=pool,
            map_index_template="{{ task.item.get('label') or task.item['name'] }}",
            doc_md=__doc__)

    return review_decision
