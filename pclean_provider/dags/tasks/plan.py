"""plan: each accepted MS's imaging plan (`pclean plan` in a subprocess), before any cluster starts.

Its log shows, per MS, the table of targets and every decision with its reason; prepare turns the
plans into one imaging item per (MS, target). What cannot be imaged (a calibrator the policy skips,
a target or a whole MS whose data are all flagged) is said here, with the reason, and the night
goes on with the rest.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.dags.params import run_settings
from pclean_provider.dags.pclean_subprocess import run_step, step_timeout
from pclean_provider.exit_codes import PlanExit
from pclean_provider.pipeline.ingest import write_json_atomic
from pclean_provider.pipeline.pipeline_template import PipelineTemplate


def plan_task(t: PipelineTemplate):
    @task(task_id="plan", retries=1, execution_timeout=step_timeout(t))
    def plan(accepted: list[dict]) -> dict:
        """vis -> the file holding its plan (or the reason it could not be planned)."""
        s = run_settings(t)
        run_dir = Path(s.run_dir)
        request = write_json_atomic(run_dir / "plan-request.json", {
            "presets": [s.preset] if s.preset else [], "overrides": s.overrides,
            "policy": s.plan.model_dump(mode="json")})
        step = run_step(["plan", "--request", str(request), *[m["vis"] for m in accepted]], run_dir / "logs")
        if step.code == PlanExit.BAD_INPUT:
            # The template's or the run's parameters: every MS would fail the same way.
            raise AirflowFailException(f"pclean plan refused the imaging parameters: {step.message}")
        if step.code not in (PlanExit.OK, PlanExit.UNPLANNED):
            raise RuntimeError(f"pclean plan exited with {step.code} ({step.exit}): {step.message}")
        # UNPLANNED still carries the plans of the MSs that could be planned, and why the others could not.
        result = step.payload
        plans_dir = run_dir / "plans"
        by_vis: dict[str, dict] = {}
        for p in result["plans"]:
            path = write_json_atomic(plans_dir / f"{Path(p['ms']).name}.plan.json", p)
            by_vis[p["ms"]] = {"plan": str(path), "targets": len(p["targets"]), "skipped": len(p["skipped"])}
        for e in result["errors"]:
            by_vis[e["vis"]] = {"error": e["error"]}
        return by_vis

    return plan
