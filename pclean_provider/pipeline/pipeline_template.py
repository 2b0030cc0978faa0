"""The pipeline template: one YAML file describes one nightly DAG (the shipped ones are in
pclean_provider/data/pipelines).

Plain data (pydantic, no Airflow) so that the DAG factory, the ingest command line and the
tests read the same file the same way. Relative paths in a template are resolved against a data
root (``PCLEAN_DATA_ROOT``), so one template serves a laptop, the test suite and a container.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pclean_provider.config.cluster import DEFAULT_CONNECTION_ID, ClusterType, memory_bytes
from pclean_provider.config.plan_policy import PlanPolicy
from pclean_provider.data import PIPELINES, packaged_dir
from pclean_provider.pipeline.archive import ArchiveError, parse_file_mode
from pclean_provider.pipeline.imaging_timeout import ImagingTimeout
from pclean_provider.pipeline.notify import NotifierEvent, NotifierSpec
from pclean_provider.pipeline.qa_gate import QA_GATE_MINIMUM_ENV, qa_gate_minimum

DATA_ROOT_ENV = "PCLEAN_DATA_ROOT"
PIPELINES_DIR_ENV = "PCLEAN_PIPELINES_DIR"


class TemplateError(ValueError):
    """A pipeline template that cannot be used; the message names the file, the key and the fix."""


class IngestPolicy(BaseModel):
    """When an MS in the landing area counts as complete, and which folders are MSs."""

    model_config = ConfigDict(extra="forbid")

    completion: Literal["marker", "quiet_period"] = Field(
        "marker", description="How a finished transfer is recognised. 'marker': the MS counts as "
        "complete once a file <name>.ms<marker_suffix> exists next to it (the transfer writes it "
        "last). 'quiet_period': once nothing inside the MS changed for quiet_period_s seconds.")
    marker_suffix: str = Field(".complete", description="Suffix of the completion marker file.")
    quiet_period_s: float = Field(120.0, ge=0, description="Quiet time for completion='quiet_period'.")
    pattern: str = Field("*.ms", description="Glob of MeasurementSets in the landing area.")


class ArchivePolicy(BaseModel):
    """How published archive versions are written."""

    model_config = ConfigDict(extra="forbid")

    file_mode: str | None = Field(
        None, description="Octal mode of the archived files, e.g. '0640' (owner read-write, group read: "
        "proprietary data kept from other users). Empty: the umask of the process that publishes decides. "
        "A published version is read-only either way.")

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML reads an unquoted 0640 as the decimal 640: ask for the quoted form.
            raise ValueError(f"archive.file_mode={value!r}: quote it ('0640'), YAML reads a bare number as decimal")
        try:
            mode = parse_file_mode(value)
        except ArchiveError as exc:
            raise ValueError(str(exc)) from None
        return None if mode is None else f"{mode:04o}"


class ArrivalWatch(BaseModel):
    """Runs started by data, beside the schedule: a watcher on the landing area starts a run when a
    complete MS (by the ingest policy) arrives that was neither announced nor imaged before."""

    model_config = ConfigDict(extra="forbid")

    watch: bool = Field(True, description="Start a run when a complete MS lands (an Airflow asset "
                        "watcher in the triggerer), besides the cron schedule.")
    poll_interval_s: float = Field(30.0, gt=0, description="Seconds between two looks at the landing area.")


class ConfClusterLimits(BaseModel):
    """How far a run's conf may move the cluster's size (config.cluster.CONF_SETTABLE_FIELDS)."""

    model_config = ConfigDict(extra="forbid")

    max_nworkers: int = Field(16, ge=1, description="Most workers a run's conf may ask for.")
    max_threads_per_worker: int = Field(
        1, ge=1, description="Most threads per worker a run's conf may ask for (CASA tools are not "
        "thread-safe, so the default keeps 1).")
    max_worker_memory: str = Field(
        "64GB", description="Largest memory_limit / slurm_job_mem per worker a run's conf may ask for.")

    @field_validator("max_worker_memory")
    @classmethod
    def _is_memory_size(cls, v: str) -> str:
        memory_bytes(v)
        return v


class ClusterChoice(BaseModel):
    """Which Dask cluster images, and how far a run's conf may change it."""

    model_config = ConfigDict(extra="forbid")

    type: ClusterType | None = Field(
        None, description="Pins the cluster type. Empty: the connection's type decides (local when the "
        "connection does not exist), so a site's slurm connection is not overridden by a template.")
    connection_id: str = Field(
        DEFAULT_CONNECTION_ID, description="Airflow connection (type pclean_dask) to take the cluster "
        "from; its values are overridden by `options` and by the run conf's few settable fields.")
    options: dict[str, Any] = Field(default_factory=dict, description="ClusterSpec fields (flat).")
    conf_types: list[ClusterType] = Field(
        default_factory=list, description="Cluster types a run's conf may choose besides `type` (e.g. "
        "[slurm] on a local pipeline); the cluster's internals still come from the connection and "
        "`options`.")
    conf_limits: ConfClusterLimits = Field(default_factory=ConfClusterLimits,
                                           description="Bounds of what a run's conf may ask for.")


class QaPolicy(BaseModel):
    """QA thresholds and the gate between the archive and the review folder."""

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Any] = Field(default_factory=dict, description="Passed to pclean qa.")
    gate_min_score: float = Field(
        0.66, ge=0, le=1, description="A product whose overall QA score is below this goes to review "
        "instead of the archive (0.66 is the top of the observatories' 'warning' band). Never below the "
        "site's lowest gate ([pclean] qa_gate_minimum, 0.33 unless an administrator lowers it).")
    gate_floor: Annotated[float, Field(ge=0, le=1)] | Literal["site_minimum"] | None = Field(
        None, description="The lowest gate a run's conf (qa_min_score) may set; a run may raise the gate, "
        "never lower it below this. 'site_minimum': the site's lowest gate ([pclean] qa_gate_minimum). "
        "Unset: gate_min_score, so a run may only raise it. A number below the site's lowest gate is "
        "refused.")
    review_timeout_minutes: float = Field(
        240.0, gt=0, description="How long a product below the gate waits in its `review_decision` task "
        "for a person to approve, reject or re-image it (Required Actions in the Airflow UI, or the REST "
        "API). Then the wait ends by itself and the product stays in review, with nothing published; the "
        "ticket and `pclean archive publish` remain. The Dask cluster is not held meanwhile, but the run "
        "stays open, so the pipeline's next run waits for it (one active run per pipeline): shorter than "
        "deadline_hours, which counts the wait.")

    @model_validator(mode="after")
    def _not_below_the_sites_minimum(self) -> QaPolicy:
        minimum = qa_gate_minimum()
        for name in ("gate_min_score", "gate_floor"):
            value = getattr(self, name)
            if isinstance(value, float) and value < minimum:
                raise ValueError(
                    f"qa.{name}={value} is below this site's lowest QA gate {minimum}: a product scoring less "
                    f"is in QA's 'error' band and must not be archived. Set qa.{name} to at least {minimum} "
                    "(gate_floor: site_minimum follows the site); only an administrator may lower the site's "
                    f"gate, with [pclean] qa_gate_minimum (${QA_GATE_MINIMUM_ENV})")
        return self

    def floor(self) -> float:
        """The lowest gate a run may set; never below the site's lowest gate, whatever the template says
        (the site's setting may have been raised since the template was read)."""
        minimum = qa_gate_minimum()
        if self.gate_floor == "site_minimum":
            return minimum
        return max(minimum, self.gate_min_score if self.gate_floor is None else self.gate_floor)


class PoolSpec(BaseModel):
    """The Airflow pool that the heavy tasks (partition, concat, the exact cube, QA, archive) share."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("pclean_heavy", description="Pool name; made by the DAG's first task if missing.")
    slots: int = Field(2, ge=1, description="How many heavy tasks may run at once across all DAGs.")


class CubeFanout(BaseModel):
    """How the fan-out (cube_mode: fanout) groups its sub-cubes into Airflow tasks.

    Dask runs every sub-cube as a task of its own; Airflow sees a few batch tasks per MS
    (subcubes_1 .. subcubes_<batch_tasks>, inside the MS's task group, so that clearing one re-runs
    only it and its own MS's tail). A cube needing fewer batches leaves the rest nothing to image.
    """

    model_config = ConfigDict(extra="forbid")

    subcubes_per_task: int | None = Field(
        None, ge=1, description="Sub-cubes per batch task. Unset: derived, enough to keep every worker "
        "busy for target_task_seconds; grown when the cube would need more than batch_tasks batches.")
    batch_tasks: int = Field(
        8, ge=1, le=64, description="Batch tasks per MS (fixed when the DAG is parsed; Airflow cannot map "
        "a task inside the per-MS mapped group). The most batches a cube is split into.")
    target_task_seconds: float = Field(
        300.0, gt=0, description="How long one batch task should keep the cluster busy, so that Airflow's "
        "per-task cost (about a second) stays small.")
    subcube_seconds: float = Field(
        20.0, gt=0, description="The expected wall time of one sub-cube, for the derived batch size.")


class PipelineTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dag_id: str = Field(description="The DAG's id; unique among the site's templates.")
    kind: Literal["cube", "continuum"] = Field(description="What each MS becomes: a spectral cube or a "
                                                "continuum (mfs) image.")
    cube_mode: Literal["exact", "fanout"] = Field(
        "exact", description="Cubes: 'exact' images each MS's cube with the exact loop (one task per "
        "cube, sub-cube sessions on the workers, one iteration controller; equal to serial tclean for "
        "every stopping rule); 'fanout' images every sub-cube as a whole tclean run (a Dask task each), "
        "grouped into a few batch tasks per MS (see `cube`); exact for niter=0 cubes only, and a clear "
        "re-images just that batch and its MS's tail.")
    title: str = Field(description="The DAG's display name in the UI.")
    description: str = Field("", description="The DAG's description in the UI.")
    schedule: str | None = Field("0 2 * * *", description="Cron schedule of the nightly run; empty: only "
                                 "triggered runs and arrivals.")
    start_date: str = Field("2026-01-01", description="The DAG's start date (no catch-up of earlier nights).")
    tags: list[str] = Field(default_factory=list, description="Tags shown in the UI.")
    landing_dir: str = Field("landing", description="Where new MSs arrive; relative: under the data root.")
    quarantine_dir: str = Field("quarantine", description="Where a broken MS is moved, with its reason.")
    work_dir: str = Field("work", description="Where runs make their products (a folder per run).")
    archive_dir: str = Field("archive", description="Where products that pass the QA gate are published.")
    review_dir: str = Field("review", description="Where products below the QA gate wait for a person.")
    notifications_dir: str = Field("notifications", description="Where notification files (JSON) go.")
    data_roots: list[str] = Field(
        default_factory=list, description="Folders that paths in a run's conf (vis, work_dir, "
        "archive_dir, path-valued imaging parameters) must lie in, after symbolic links are followed; "
        "relative ones are under the data root. Empty: the data root and the template's own areas.")
    work_roots: list[str] = Field(
        default_factory=list, description="Folders a run's conf work_dir (and an outlier file's image "
        "names) must lie in, after symbolic links are followed; relative ones are under the data root. "
        "Empty: the template's work_dir.")
    archive_roots: list[str] = Field(
        default_factory=list, description="Folders a run's conf archive_dir must lie in, after symbolic "
        "links are followed; relative ones are under the data root. Empty: the template's archive_dir.")
    ingest: IngestPolicy = Field(default_factory=IngestPolicy, description=IngestPolicy.__doc__)
    archive: ArchivePolicy = Field(default_factory=ArchivePolicy, description=ArchivePolicy.__doc__)
    arrivals: ArrivalWatch = Field(default_factory=ArrivalWatch, description="Runs started by arriving "
                                   "data, beside the schedule.")
    preset: str | None = Field(None, description="An imaging preset (`pclean presets` lists them); the "
                               "overrides are laid over it.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="tclean parameters pinned for "
                                      "every MS; they win over the preset and the plan.")
    plan: PlanPolicy = Field(default_factory=PlanPolicy, description=(
        "How each MS's imaging targets, cell, image size, gridder and stopping are derived from its data "
        "(`pclean plan`); a parameter pinned in `overrides` (or the run's) wins over the policy."))
    cluster: ClusterChoice = Field(default_factory=ClusterChoice, description=ClusterChoice.__doc__)
    qa: QaPolicy = Field(default_factory=QaPolicy, description=QaPolicy.__doc__)
    pool: PoolSpec = Field(default_factory=PoolSpec, description=PoolSpec.__doc__)
    cube: CubeFanout = Field(default_factory=CubeFanout, description="How the fan-out groups sub-cubes "
                             "into Airflow tasks (cube_mode: fanout).")
    retries: int = Field(2, ge=0, description="Retries of tasks that can fail transiently.")
    retry_delay_s: float = Field(60.0, gt=0, description="Wait before the first retry (doubling after).")
    max_retry_delay_s: float = Field(900.0, gt=0, description="The longest wait between two retries.")
    step_timeout_minutes: float = Field(180.0, gt=0, description=(
        "Airflow's execution_timeout of the ingest, QA and archive steps (`pclean` subprocesses): a "
        "step still running then is stopped, its subprocess with it, and retried as a failure."))
    imaging_timeout: ImagingTimeout = Field(
        default_factory=ImagingTimeout, description="How long one target's imaging (the exact cube, the "
        "continuum loop) may take: then its wait ends with an error that says so, the work is withdrawn "
        "and the task is retried. Pinned, or grown with each target's cube and MS.")
    deadline_hours: float = Field(6.0, gt=0, description="Alert when a run has not finished this long "
                                  "after its logical date (the night it images); a run without a logical "
                                  "date (started by arriving data, or triggered through the REST API with logical_date "
                                  "null) has no deadline.")
    notifiers: list[NotifierSpec] = Field(
        default_factory=list, description="Airflow notifiers called besides the file notifications "
        f"({', '.join(NotifierEvent)}); see pipeline/notify.py.")

    @model_validator(mode="after")
    def _review_ends_before_the_deadline(self) -> PipelineTemplate:
        if self.qa.review_timeout_minutes >= self.deadline_hours * 60:
            raise ValueError(
                f"qa.review_timeout_minutes={self.qa.review_timeout_minutes:g} is not shorter than deadline_hours="
                f"{self.deadline_hours:g} ({self.deadline_hours * 60:g} minutes): a review still waiting keeps the "
                "run open, so every such night would miss its deadline. Shorten the review's wait or raise "
                "deadline_hours")
        return self

    @field_validator("dag_id")
    @classmethod
    def _dag_id_is_identifier(cls, v: str) -> str:
        if not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"dag_id {v!r} may use letters, digits, '_' and '-' only")
        return v

    # Paths ---------------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike[str] | None, data_root: Path | None = None) -> Path | None:
        """A path of the template itself (the administrator's file, so ~ and $VARS are honoured).
        Never for paths from a run's conf: conf_policy.confined_path takes those literally."""
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
