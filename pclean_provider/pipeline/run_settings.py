"""One run's settings: its pipeline template, overridden by the run's params (trigger form / conf).

Above both pipeline_template (what the administrator configured) and conf_policy (what a run's
conf may change of it): it lays the judged conf over the template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from pclean_provider.config.model import flatten_layer
from pclean_provider.config.plan_policy import PlanPolicy
from pclean_provider.names import run_folder_name
from pclean_provider.pipeline.conf_paths import is_inline_region
from pclean_provider.pipeline.conf_policy import OVERRIDE_PATHS, check_run_conf
from pclean_provider.pipeline.pipeline_template import IngestPolicy, PipelineTemplate, data_root_dir


class RunSettings(BaseModel):
    """Everything a run needs, resolved once from template + params; plain JSON for XCom."""

    dag_id: str
    kind: Literal["cube", "continuum"]
    run_id: str
    vis: str | None
    redo: bool
    preset: str | None
    overrides: dict[str, Any]
    landing_dir: str
    quarantine_dir: str
    work_dir: str
    run_dir: str
    metadata_dir: str
    ledger_dir: str
    archive_dir: str
    review_dir: str
    notifications_dir: str
    cluster_type: str | None  # None: the connection's type
    cluster_connection_id: str | None
    cluster_options: dict[str, Any]
    qa_thresholds: dict[str, Any]
    qa_min_score: float
    ingest: IngestPolicy
    plan: PlanPolicy = Field(default_factory=PlanPolicy)

    def cluster_overrides(self) -> dict[str, Any]:
        """ClusterSpec fields for the cluster-up task (type from the form, knobs from options)."""
        pinned = {"cluster_type": self.cluster_type} if self.cluster_type else {}
        return {**pinned, **self.cluster_options}


def settings_for_run(template: PipelineTemplate, params: dict[str, Any], run_id: str,
                     data_root: Path | None = None) -> RunSettings:
    """Apply the run conf keys (vis, preset, overrides, work_dir, archive_dir, cluster, ...) after
    conf_policy has judged them; RunConfRefused (a PcleanInputError) names what it may not set."""
    data_root = data_root or data_root_dir()
    run_folder = run_folder_name(run_id)  # refuses '..', '/', ... before anything else is looked at
    conf = check_run_conf(template, params, data_root)
    paths = template.paths(data_root)
    work = conf.work_dir or paths["work_dir"]
    archive = conf.archive_dir or paths["archive_dir"]
    overrides = {**template_overrides(template, data_root), **conf.overrides}
    pipeline_dir = work / template.dag_id
    return RunSettings(
        dag_id=template.dag_id, kind=template.kind, run_id=run_id,
        vis=str(conf.vis) if conf.vis else None,
        redo=conf.redo, preset=conf.preset, overrides=overrides,
        landing_dir=str(paths["landing_dir"]), quarantine_dir=str(paths["quarantine_dir"]),
        work_dir=str(work), run_dir=str(pipeline_dir / "runs" / run_folder),
        metadata_dir=str(pipeline_dir / "metadata"), ledger_dir=str(pipeline_dir / "ledger"),
        archive_dir=str(archive), review_dir=str(paths["review_dir"]),
        notifications_dir=str(paths["notifications_dir"]),
        cluster_type=conf.cluster_type, cluster_connection_id=conf.cluster_connection_id,
        cluster_options={**template.cluster.options, **conf.cluster_options},
        qa_thresholds=dict(template.qa.thresholds),
        qa_min_score=conf.qa_min_score,
        ingest=template.ingest,
        plan=template.plan,
    )


def template_overrides(template: PipelineTemplate, data_root: Path) -> dict[str, Any]:
    """The template's imaging overrides, flat, each relative path made absolute under the data root, as
    the template's other paths are: passed on as written, it would be read against a worker's cwd."""
    flat = flatten_layer(template.overrides, f"{template.dag_id} overrides")
    for name in OVERRIDE_PATHS:
        if name in flat:
            flat[name] = _absolute(template, flat[name], data_root, region_ok=name == "mask")
    return flat


def _absolute(template: PipelineTemplate, value: Any, data_root: Path, region_ok: bool) -> Any:
    if isinstance(value, list):
        return [_absolute(template, v, data_root, region_ok) for v in value]
    if not isinstance(value, str) or value == "" or (region_ok and is_inline_region(value)):
        return value
    return str(template.resolve(value, data_root))
