"""qa and qa_gate: `pclean qa` on one MS's product, then its route by its score.

Both run inside the DAG's per-MS task group, so each MS has its own gate: one MS failing QA (or
imaging before it) leaves the gate, archive and review of every other MS untouched."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import get_current_context, task

from pclean_provider.dags.notifiers import send
from pclean_provider.dags.params import run_settings
from pclean_provider.dags.pclean_subprocess import run_step_payload, step_timeout
from pclean_provider.pipeline.ingest import write_json_atomic
from pclean_provider.pipeline.night_index import record_gate_decision
from pclean_provider.pipeline.notify import NotifierEvent, notify_qa_review
from pclean_provider.pipeline.pipeline_template import PipelineTemplate

ARCHIVE, REVIEW = "archive", "review"  # the task ids the gate chooses between


def qa_tasks(t: PipelineTemplate, pool: str):
    kind = "cube" if t.kind == "cube" else "mfs"

    @task(task_id="qa", pool=pool, execution_timeout=step_timeout(t),
          map_index_template="{{ task.op_kwargs['item'].get('label') or task.op_kwargs['item']['name'] }}")
    def qa(item: dict, imaging: dict | None = None) -> dict:
        s = run_settings(t)
        label = item.get("label") or item["name"]
        out_dir = Path(item["product_dir"]) / "qa"
        args = ["qa", "--image", item["imagename"], "--kind", kind, "--out", str(out_dir), "--vis", item["vis"]]
        if item.get("truth"):
            args += ["--truth", item["truth"]]
        if item.get("plan_path"):
            args += ["--plan", item["plan_path"]]
        summary = _iteration_summary(imaging)
        if summary:
            # The imaging task's own figures (iterations, stop) for the report's convergence section.
            args += ["--summary", str(write_json_atomic(Path(item["product_dir"]) / "imaging-summary.json", summary))]
        if s.qa_thresholds:
            thresholds = Path(item["product_dir"]) / "qa-thresholds.json"
            write_json_atomic(thresholds, s.qa_thresholds)
            args += ["--thresholds", str(thresholds)]
        qa_result = run_step_payload(args, Path(item["product_dir"]) / "logs", label)
        # An empty product (e.g. fully flagged data) is not a failed task: QA reports why it could
        # not judge it, and the gate sends it to review with that reason.
        reason = qa_result.get("not_judged_reason")
        print(f"QA {label}: overall score {qa_result['overall_score']:.2f} ({qa_result['overall_band']})"
              + (f"; not judged: {reason}" if reason else ""))
        # The reports' paths as this task named the folder (the result's are resolved), so that
        # tickets and XComs keep naming them the way the run's other paths are named.
        return {**item, "qa_json": str(out_dir / "qa.json"), "qa_html": str(out_dir / "qa.html"),
                "qa_score": qa_result["overall_score"], "qa_band": qa_result["overall_band"],
                "qa_not_judged": reason, "imaging": imaging or {}}

    # Not a branch operator: Airflow 3.3's skip of a branch's other way looks for the branch's
    # decision at map index -1 inside a mapped group and so never skips; archive and review each
    # read the route and skip themselves when it is not theirs.
    @task(task_id="qa_gate", retries=0,
          map_index_template="{{ task.op_kwargs['checked'].get('label') or task.op_kwargs['checked']['name'] }}")
    def qa_gate(checked: dict) -> dict:
        """Route this MS's product: archive at or above the gate score, review below it.

        A product QA could not judge goes to review whatever the gate, since no score vouches for it.
        """
        s = run_settings(t)
        label = checked.get("label") or checked["name"]
        not_judged = checked.get("qa_not_judged")
        route = ARCHIVE if checked["qa_score"] >= s.qa_min_score and not not_judged else REVIEW
        print(f"{label}: QA score {checked['qa_score']:.2f} -> {route} (gate {s.qa_min_score})"
              + (f"; not judged: {not_judged}" if not_judged else ""))
        # Beside the report, for the night's index in the UI: where the product went, and by which gate.
        record_gate_decision(Path(checked["qa_json"]).parent, route=route, gate=s.qa_min_score,
                             score=checked["qa_score"], run_id=s.run_id, reason=not_judged)
        if route == REVIEW:
            ctx = get_current_context()
            if not_judged:
                reason = (f"QA could not judge the product ({checked['qa_band']}, score {checked['qa_score']:.2f}): "
                          f"{not_judged}; report {checked['qa_html']}")
            else:
                reason = (f"QA score {checked['qa_score']:.2f} ({checked['qa_band']}) is below the gate "
                          f"{s.qa_min_score}; report {checked['qa_html']}")
            if label != checked["name"]:
                # The notification's ms stays the MS; the reason says which of its targets it is.
                reason = f"{label}: {reason}"
            notify_qa_review(t.dag_id, ctx["run_id"], checked["name"], reason, directory=s.notifications_dir)
            send(t, NotifierEvent.QA_REVIEW, ctx)
        return {**checked, "route": route}

    return qa, qa_gate


def _iteration_summary(imaging: dict | None) -> dict:
    """tclean's iteration summary from the imaging task's result (the exact cube and the continuum
    loop carry one; a fan-out concat, which cleans nothing, does not)."""
    if not isinstance(imaging, dict):
        return {}
    summary = {k: v for k, v in (imaging.get("summary") or {}).items() if isinstance(v, int | float | str | bool)}
    if "iterdone" not in summary and imaging.get("iterations") is not None:
        summary["iterdone"] = imaging["iterations"]
    if "stopDescription" not in summary and imaging.get("stop_reason"):
        summary["stopDescription"] = imaging["stop_reason"]
    return summary
