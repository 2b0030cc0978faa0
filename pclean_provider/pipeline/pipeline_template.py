"""The pipeline template: one YAML file describes one nightly DAG (the shipped ones are in
pclean_provider/data/pipelines).

Plain data (pydantic, no Airflow) so that the DAG factory, the ingest command line and the
tests read the same file the same way. Relative paths in a template are resolved against a data
root (``PCLEAN_DATA_ROOT``), so one template serves a laptop, the test suite and a container.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pclean_provider.data import PIPELINES, packaged_dir

DATA_ROOT_ENV = "PCLEAN_DATA_ROOT"
PIPELINES_DIR_ENV = "PCLEAN_PIPELINES_DIR"


class TemplateError(ValueError):
    """A pipeline template that cannot be used; the message names the file, the key and the fix."""


class IngestPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion: Literal["marker", "quiet_period"] = Field(
        "marker", description="How a finished transfer is recognised. 'marker': the MS counts as "
        "complete once a file <name>.ms<marker_suffix> exists next to it (the transfer writes it "
        "last). 'quiet_period': once nothing inside the MS changed for quiet_period_s seconds.")
    marker_suffix: str = Field(".complete", description="Suffix of the completion marker file.")
    quiet_period_s: float = Field(120.0, ge=0, description="Quiet time for completion='quiet_period'.")
    pattern: str = Field("*.ms", description="Glob of MeasurementSets in the landing area.")


class ClusterChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["local", "slurm", "address"] = "local"
    connection_id: str | None = Field(
        None, description="Airflow connection (type pclean_dask) to take the cluster from; its values "
        "are overridden by `options` and by the run conf.")
    options: dict[str, Any] = Field(default_factory=dict, description="ClusterSpec fields (flat).")


class QaPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Any] = Field(default_factory=dict, description="Passed to pclean qa.")
    gate_min_score: float = Field(
        0.66, ge=0, le=1, description="A product whose overall QA score is below this goes to review "
        "instead of the archive (0.66 is the top of the observatories' 'warning' band).")


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "pclean_heavy"
    slots: int = Field(2, ge=1, description="How many heavy tasks may run at once across all DAGs.")


class PipelineTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dag_id: str
    kind: Literal["cube", "continuum"]
    cube_mode: Literal["exact", "fanout"] = Field(
        "exact", description="Cubes: 'exact' images each MS's cube with the exact loop (one task per "
        "cube, sub-cube sessions on the workers, one iteration controller; equal to serial tclean for "
        "every stopping rule); 'fanout' maps one task per sub-cube (a whole tclean run each; exact for "
        "niter=0 cubes only, and a clear re-images just that sub-cube).")
    title: str
    description: str = ""
    schedule: str | None = "0 2 * * *"
    start_date: str = "2026-01-01"
    tags: list[str] = Field(default_factory=list)
    landing_dir: str = "landing"
    quarantine_dir: str = "quarantine"
    work_dir: str = "work"
    archive_dir: str = "archive"
    review_dir: str = "review"
    notifications_dir: str = "notifications"
    ingest: IngestPolicy = Field(default_factory=IngestPolicy)
    preset: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterChoice = Field(default_factory=ClusterChoice)
    qa: QaPolicy = Field(default_factory=QaPolicy)
    pool: PoolSpec = Field(default_factory=PoolSpec)
    retries: int = Field(2, ge=0, description="Retries of tasks that can fail transiently.")
    retry_delay_s: float = Field(60.0, gt=0)
    max_retry_delay_s: float = Field(900.0, gt=0)
    deadline_hours: float = Field(6.0, gt=0, description="Alert when a run has not finished this long "
                                  "after it was queued.")

    @field_validator("dag_id")
    @classmethod
    def _dag_id_is_identifier(cls, v: str) -> str:
        if not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"dag_id {v!r} may use letters, digits, '_' and '-' only")
        return v

    # Paths ---------------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike[str] | None, data_root: Path | None = None) -> Path | None:
        if path in (None, ""):
            return None
        p = Path(os.path.expandvars(os.path.expanduser(str(path))))
        if p.is_absolute():
            return p
        return (data_root or data_root_dir()) / p

    def paths(self, data_root: Path | None = None) -> dict[str, Path]:
        return {name: self.resolve(getattr(self, name), data_root)  # type: ignore[misc]
                for name in ("landing_dir", "quarantine_dir", "work_dir", "archive_dir", "review_dir",
                             "notifications_dir")}


def data_root_dir() -> Path:
    """Where relative template paths live: $PCLEAN_DATA_ROOT, else ~/pclean-data."""
    root = os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser().resolve() if root else Path.home() / "pclean-data"


def load_template(path: str | os.PathLike[str]) -> PipelineTemplate:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read the pipeline template: {exc}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: a pipeline template is a YAML mapping (dag_id: ..., kind: ...)")
    try:
        return PipelineTemplate.model_validate(raw)
    except ValueError as exc:
        raise TemplateError(f"{path}: {exc}") from exc


def pipelines_dir() -> Path:
    """Where the templates are: $PCLEAN_PIPELINES_DIR (a deployment's own set, replacing the
    packaged one: the same dag_id in both would be two DAGs with one id), else the packaged set."""
    site = os.environ.get(PIPELINES_DIR_ENV)
    return Path(site) if site else packaged_dir(PIPELINES)


def load_templates(directory: str | os.PathLike[str] | None = None) -> list[PipelineTemplate]:
    directory = Path(directory) if directory else pipelines_dir()
    templates = [load_template(p) for p in sorted(Path(directory).glob("*.yaml"))]
    seen: dict[str, int] = {}
    for t in templates:
        seen[t.dag_id] = seen.get(t.dag_id, 0) + 1
    dupes = [k for k, n in seen.items() if n > 1]
    if dupes:
        raise TemplateError(f"{directory}: dag_id used by more than one template: {dupes}")
    return templates


# One run's settings: the template, overridden by the run's params (trigger form / conf) -------

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
    cluster_type: str
    cluster_connection_id: str | None
    cluster_options: dict[str, Any]
    qa_thresholds: dict[str, Any]
    qa_min_score: float
    ingest: IngestPolicy

    def cluster_overrides(self) -> dict[str, Any]:
        """ClusterSpec fields for the cluster-up task (type from the form, knobs from options)."""
        return {"cluster_type": self.cluster_type, **self.cluster_options}


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def settings_for_run(template: PipelineTemplate, params: dict[str, Any], run_id: str,
                     data_root: Path | None = None) -> RunSettings:
    """Apply the run conf keys (vis, preset, overrides, work_dir, archive_dir, cluster, ...)."""
    paths = template.paths(data_root)
    work = template.resolve(params.get("work_dir") or None, data_root) or paths["work_dir"]
    archive = template.resolve(params.get("archive_dir") or None, data_root) or paths["archive_dir"]
    preset = params.get("preset", template.preset)
    if preset in ("", "none"):
        preset = None
    overrides = dict(template.overrides)
    extra = params.get("overrides") or {}
    if not isinstance(extra, dict):
        raise TemplateError(f"overrides must be a mapping of imaging parameters, e.g. {{\"nchan\": 16}}; "
                            f"got {type(extra).__name__}")
    overrides.update(extra)
    cluster = params.get("cluster") or template.cluster.type
    options = {**template.cluster.options, **(params.get("cluster_options") or {})}
    vis = params.get("vis") or None
    pipeline_dir = work / template.dag_id
    return RunSettings(
        dag_id=template.dag_id, kind=template.kind, run_id=run_id,
        vis=str(template.resolve(vis, data_root)) if vis else None,
        redo=bool(params.get("redo", False)), preset=preset, overrides=overrides,
        landing_dir=str(paths["landing_dir"]), quarantine_dir=str(paths["quarantine_dir"]),
        work_dir=str(work), run_dir=str(pipeline_dir / "runs" / safe_name(run_id)),
        metadata_dir=str(pipeline_dir / "metadata"), ledger_dir=str(pipeline_dir / "ledger"),
        archive_dir=str(archive), review_dir=str(paths["review_dir"]),
        notifications_dir=str(paths["notifications_dir"]),
        cluster_type=cluster, cluster_connection_id=params.get("cluster_connection_id")
        or template.cluster.connection_id, cluster_options=options,
        qa_thresholds={**template.qa.thresholds, **(params.get("qa_thresholds") or {})},
        qa_min_score=float(params.get("qa_min_score", template.qa.gate_min_score)),
        ingest=template.ingest,
    )
