"""ingest: find the night's complete MeasurementSets (or take the one named in the run conf),
quarantine broken ones with a notification, and hand the accepted ones to prepare.

arrivals and nothing_arrived: a night with nothing to image takes a branch of its own, so the
grid shows it (imaging skipped, ``nothing_arrived`` green with the reason in its log and XCom)
and operations staff get a notification: a stopped transfer must not look like a quiet night."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.dags.notifiers import send
from pclean_provider.dags.params import run_settings
from pclean_provider.dags.pclean_subprocess import run_step, step_timeout
from pclean_provider.exit_codes import IngestExit
from pclean_provider.pipeline.notify import NotifierEvent, notify_nothing_arrived, notify_quarantined
from pclean_provider.pipeline.pipeline_template import PipelineTemplate

NOTHING_XCOM = "nothing_to_image"  # ingest pushes why it accepted nothing under this key
IMAGING_BRANCH = "plan"
NOTHING_BRANCH = "nothing_arrived"


def _nothing_reason(report: dict, landing_dir: str) -> str:
    kinds = ("quarantined", "incomplete", "already_imaged", "unreadable", "taken_elsewhere", "refused")
    counts = {k: len(report.get(k, [])) for k in kinds}
    if not any(counts.values()):
        return f"no MeasurementSet in the landing area {landing_dir}"
    return (f"nothing to image in {landing_dir}: {counts['quarantined']} quarantined, "
            f"{counts['incomplete']} incomplete (no completion marker yet), "
            f"{counts['already_imaged']} already imaged, "
            f"{counts['unreadable']} unreadable for now (left for the next night), "
            f"{counts['taken_elsewhere']} quarantined by the other nightly ingest, "
            f"{counts['refused']} refused for their names (symbolic links, too long)")


def arrival_tasks(t: PipelineTemplate):
    """(arrivals, nothing_arrived): the branch after ingest and the end of a night without data."""

    @task.branch(task_id="arrivals", retries=0)
    def arrivals(accepted: list[dict]) -> str:
        if accepted:
            print(f"{len(accepted)} MeasurementSet(s) to image: {', '.join(m['name'] for m in accepted)}")
            return IMAGING_BRANCH
        return NOTHING_BRANCH

    @task(task_id=NOTHING_BRANCH, retries=0)
    def nothing_arrived() -> str:
        ctx = get_current_context()
        s = run_settings(t)
        reason = ctx["ti"].xcom_pull(task_ids="ingest", key=NOTHING_XCOM) or "ingest accepted nothing"
        notify_nothing_arrived(t.dag_id, ctx["run_id"], reason, directory=s.notifications_dir)
        send(t, NotifierEvent.NOTHING_ARRIVED, ctx)
        print(f"imaging skipped: {reason}")
        return reason

    return arrivals, nothing_arrived


def ingest_task(t: PipelineTemplate):
    @task(task_id="ingest", retries=1, execution_timeout=step_timeout(t))
    def ingest() -> list[dict]:
        s = run_settings(t)
        args = ["ingest", "--metadata-dir", s.metadata_dir, "--log-dir", str(Path(s.run_dir) / "logs")]
        spw, field = s.overrides.get("spw"), s.overrides.get("field")
        if spw not in (None, ""):
            args += ["--spw", str(spw)]
        if field not in (None, ""):
            args += ["--field", str(field)]
        if s.vis:
            args += ["--vis", s.vis]
        else:
            args += [s.landing_dir, "--quarantine", s.quarantine_dir, "--ledger", s.ledger_dir,
                     "--completion", s.ingest.completion, "--marker-suffix", s.ingest.marker_suffix,
                     "--quiet-period", str(s.ingest.quiet_period_s), "--pattern", s.ingest.pattern]
            if s.redo:
                args.append("--redo")
        result = run_step(args, Path(s.run_dir) / "logs")
        if result.code in (IngestExit.BAD_INPUT, IngestExit.REJECTED):
            # Bad input: a retry would fail the same way.
            raise AirflowFailException(f"ingest refused the input ({result.exit}): {result.message}")
        if result.code != IngestExit.OK:
            raise RuntimeError(f"pclean ingest exited with {result.code} ({result.exit}): {result.message}")
        report = result.payload
        for q in report.get("quarantined", []):
            notify_quarantined(t.dag_id, s.run_id, q["original_path"], q["reason"], q["reason_path"],
                               directory=s.notifications_dir)
        for r in report.get("refused", []):
            print(f"refused, left alone: {r['why']}")
        for u in report.get("unreadable", []):
            # Left in the landing area: the next night tries again; the reason is in the task log.
            print(f"unreadable for now, left for the next night: {u['name']}: {u['why']}")
        accepted = report.get("accepted", [])
        if not accepted:
            get_current_context()["ti"].xcom_push(key=NOTHING_XCOM, value=_nothing_reason(report, s.landing_dir))
        return [{"name": m["name"], "vis": m["path"], "metadata_path": m["metadata_path"]} for m in accepted]

    return ingest
