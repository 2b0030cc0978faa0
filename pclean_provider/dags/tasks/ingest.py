"""ingest: find the night's complete MeasurementSets (or take the one named in the run conf),
quarantine broken ones with a notification, and hand the accepted ones to prepare."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pclean_provider.dags.params import run_settings
from pclean_provider.dags.pclean_subprocess import run_pclean
from pclean_provider.pipeline.notify import notify_quarantined
from pclean_provider.pipeline.pipeline_template import PipelineTemplate


def ingest_task(t: PipelineTemplate):
    @task(task_id="ingest", retries=1)
    def ingest() -> list[dict]:
        s = run_settings(t)
        report_file = Path(s.run_dir) / "ingest.json"
        args = ["ingest", "--metadata-dir", s.metadata_dir, "--report", str(report_file),
                "--log-dir", str(Path(s.run_dir) / "logs")]
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
        proc = run_pclean(args, Path(s.run_dir) / "logs")
        if proc.returncode in (2, 3):
            # Bad input: a retry would fail the same way.
            raise AirflowFailException(f"ingest refused the input: {proc.why()}")
        if proc.returncode != 0:
            raise RuntimeError(f"pclean ingest exited with {proc.returncode}: {proc.why()}")
        report = json.loads(report_file.read_text())
        for q in report.get("quarantined", []):
            notify_quarantined(t.dag_id, s.run_id, q["original_path"], q["reason"], q["reason_path"],
                               directory=s.notifications_dir)
        accepted = report.get("accepted", [])
        if not accepted:
            raise AirflowSkipException(
                f"nothing to image: {len(report.get('quarantined', []))} quarantined, "
                f"{len(report.get('incomplete', []))} incomplete, "
                f"{len(report.get('already_imaged', []))} already imaged")
        return [{"name": m["name"], "vis": m["path"], "metadata_path": m["metadata_path"]} for m in accepted]

    return ingest
