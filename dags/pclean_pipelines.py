"""Nightly imaging DAGs, one per pipeline template in include/pipelines/*.yaml.

Shape of a cube night (continuum has one imaging task instead of the three cube ones):

    ingest -> prepare -> cluster_up -> partition[ms] -> collect_subcubes -> image_subcube[sub-cube]
           -> group_subcubes -> concat[ms] -> qa[ms] -> qa_gate -> archive[ms] | review[ms]
           -> cluster_down (teardown of cluster_up)

Every MS of the night gets its own map index in each per-MS task. Sub-cubes of all MSs are one
flat mapped task (Airflow cannot map inside a mapped group), so clearing one sub-cube in the grid
re-runs just it, the concatenations, QA and archive after it; the cluster comes back because it
is the setup of what was cleared.

The Airflow worker never loads casatools: ingest, QA and archive run ``pclean <subcommand>`` in a
subprocess; imaging runs on the Dask cluster through the provider's operators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import (
    DAG,
    Asset,
    AsyncCallback,
    DeadlineAlert,
    DeadlineReference,
    Param,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pclean_provider.pipeline.ingest import write_json_atomic
from pclean_provider.pipeline.notify import notify_quarantined, notify_task_failure
from pclean_provider.pipeline.pipeline_template import (
    PipelineTemplate,
    RunSettings,
    TemplateError,
    load_templates,
    safe_name,
    settings_for_run,
)

PCLEAN = [sys.executable, "-m", "pclean_provider.cli.main"]
CLUSTER_TYPES = ["local", "slurm", "address"]
SUBPROCESS_TIMEOUT_S = 3 * 3600


def _presets() -> list[str]:
    try:
        from pclean_provider.config import list_presets

        return sorted(list_presets())
    except Exception:  # noqa: BLE001 - a broken preset directory must not hide the DAGs
        return []


def _params(t: PipelineTemplate) -> dict[str, Param]:
    presets = _presets()
    default_preset = t.preset or "none"
    return {
        "vis": Param(None, type=["null", "string"], title="MeasurementSet (vis)",
                     description="Path of one MeasurementSet to image instead of scanning the landing area. "
                                 "Empty: take every complete MS in the landing area."),
        "preset": Param(default_preset, type="string", enum=["none", *[p for p in presets if p != "none"]],
                        title="Imaging preset",
                        description="A preset from include/presets; the template's overrides and yours "
                                    "are applied on top."),
        "overrides": Param({}, type="object", title="Imaging parameter overrides",
                           description='Any tclean parameter, e.g. {"nchan": 16, "niter": 0, "imsize": 128}.'),
        "work_dir": Param(None, type=["null", "string"], title="Work directory",
                          description="Where this run's products are made (default from the template)."),
        "archive_dir": Param(None, type=["null", "string"], title="Archive directory",
                             description="Where accepted products are published (default from the template)."),
        "cluster": Param(t.cluster.type, type="string", enum=CLUSTER_TYPES, title="Dask cluster type",
                         description="local: workers on the Airflow machine; slurm: workers as SLURM jobs; "
                                     "address: an existing scheduler (set scheduler_address in cluster options)."),
        "cluster_options": Param({}, type="object", title="Cluster options",
                                 description='ClusterSpec fields, e.g. {"nworkers": 4} or '
                                             '{"scheduler_address": "tcp://host:8786"}.'),
        "redo": Param(False, type="boolean", title="Redo already imaged MSs",
                      description="Image MSs of the landing area again even if the ledger says they were done."),
        "qa_min_score": Param(t.qa.gate_min_score, type="number", minimum=0, maximum=1, title="QA gate",
                              description="Products scoring below this go to review instead of the archive."),
    }


def _settings(t: PipelineTemplate) -> RunSettings:
    ctx = get_current_context()
    try:
        return settings_for_run(t, dict(ctx["params"]), ctx["run_id"])
    except (TemplateError, ValueError) as exc:
        raise AirflowFailException(f"run conf: {exc}") from exc


class PcleanRun:
    """What a `pclean` subprocess left: exit code and its output (already echoed to the task log)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def why(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-2000:]


def _run_pclean(args: list[str], log_dir: Path) -> PcleanRun:
    """Run `pclean <args>` with its lines streamed into the task log as they come (progress).

    CASA writes its log into the working directory, so the subprocess runs in log_dir.
    """
    import threading

    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"running: pclean {' '.join(args)}", flush=True)
    proc = subprocess.Popen([*PCLEAN, *args], cwd=log_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    captured: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, name: str, sink) -> None:
        for line in stream:
            captured[name].append(line)
            print(line.rstrip("\n"), file=sink, flush=True)

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out", sys.stdout), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err", sys.stderr), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        for r in readers:
            r.join(timeout=10)
    return PcleanRun(proc.returncode, "".join(captured["out"]), "".join(captured["err"]))


def _failure_callback(t: PipelineTemplate):
    notifications_dir = t.paths()["notifications_dir"]

    def on_failure(context: Any) -> None:
        notify_task_failure(context, directory=notifications_dir)

    return on_failure


# --------------------------------------------------------------------------------------------
# Tasks that do not depend on the kind of imaging
# --------------------------------------------------------------------------------------------

def _ingest_task(t: PipelineTemplate):
    @task(task_id="ingest", retries=1)
    def ingest() -> list[dict]:
        s = _settings(t)
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
        proc = _run_pclean(args, Path(s.run_dir) / "logs")
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


def _prepare_task(t: PipelineTemplate):
    @task(task_id="prepare", retries=0)
    def prepare(accepted: list[dict]) -> list[dict]:
        """One imaging config per MS, validated before any cluster starts."""
        from pclean_provider.config import ConfigError, load_config

        s = _settings(t)
        items = []
        for ms in accepted:
            stem = Path(ms["name"]).stem
            product_dir = Path(s.run_dir) / safe_name(stem)
            imagename = product_dir / f"{stem}.{'cube' if t.kind == 'cube' else 'cont'}"
            overrides = {**s.overrides, "vis": ms["vis"], "imagename": str(imagename)}
            try:
                cfg = load_config(presets=[s.preset] if s.preset else [], overrides=overrides)
            except (ConfigError, ValueError) as exc:
                raise AirflowFailException(f"imaging parameters for {ms['name']}: {exc}") from exc
            if t.kind == "cube" and not cfg.is_cube:
                raise AirflowFailException(f"{t.dag_id} makes cubes, but specmode={cfg.to_flat().get('specmode')!r}; "
                                           "set overrides.specmode to 'cube' (or use the continuum pipeline)")
            if t.kind == "continuum" and cfg.is_cube:
                raise AirflowFailException(f"{t.dag_id} makes continuum images, but specmode is a cube mode; "
                                           "set overrides.specmode to 'mfs'")
            product_dir.mkdir(parents=True, exist_ok=True)
            items.append({**ms, "imagename": str(imagename), "product_dir": str(product_dir),
                          "overrides": overrides, "presets": [s.preset] if s.preset else [],
                          "config_json": cfg.model_dump_json(), "truth": _truth_beside(ms["vis"])})
        get_current_context()["ti"].xcom_push(key=RUN_XCOM, value={
            "address_file": str(Path(s.run_dir) / "cluster" / "scheduler.address"),
            "cluster_overrides": s.cluster_overrides(),
            "run_dir": s.run_dir,
        })
        return items

    return prepare


def _truth_beside(vis: str) -> str | None:
    """The simulator's truth file next to a simulated MS, so QA can check recovered sources."""
    ms = Path(vis)
    for candidate in (ms.with_name(ms.name + ".truth.json"), ms.with_suffix(".truth.json")):
        if candidate.exists():
            return str(candidate)
    return None


def _qa_tasks(t: PipelineTemplate, pool: str):
    kind = "cube" if t.kind == "cube" else "mfs"

    @task(task_id="qa", pool=pool, map_index_template="{{ task.op_kwargs['item']['name'] }}")
    def qa(item: dict, imaging: dict | None = None) -> dict:
        s = _settings(t)
        out_dir = Path(item["product_dir"]) / "qa"
        args = ["qa", "--image", item["imagename"], "--kind", kind, "--out", str(out_dir), "--vis", item["vis"]]
        if item.get("truth"):
            args += ["--truth", item["truth"]]
        if s.qa_thresholds:
            thresholds = Path(item["product_dir"]) / "qa-thresholds.json"
            write_json_atomic(thresholds, s.qa_thresholds)
            args += ["--thresholds", str(thresholds)]
        proc = _run_pclean(args, Path(item["product_dir"]) / "logs")
        if proc.returncode == 2:
            raise AirflowFailException(f"QA refused {item['name']}: {proc.why()}")
        if proc.returncode != 0:
            raise RuntimeError(f"pclean qa exited with {proc.returncode}: {proc.why()}")
        report = json.loads((out_dir / "qa.json").read_text())
        print(f"QA {item['name']}: overall score {report['overall_score']:.2f} ({report['overall_band']})")
        return {**item, "qa_json": str(out_dir / "qa.json"), "qa_html": str(out_dir / "qa.html"),
                "qa_score": report["overall_score"], "qa_band": report["overall_band"],
                "imaging": imaging or {}}

    @task(task_id="qa_gate")
    def qa_gate(checked: list[dict]) -> list[dict]:
        """Route each product: archive at or above the gate score, review below it."""
        s = _settings(t)
        routed = []
        for item in checked:
            route = "archive" if item["qa_score"] >= s.qa_min_score else "review"
            print(f"{item['name']}: QA score {item['qa_score']:.2f} -> {route} (gate {s.qa_min_score})")
            routed.append({**item, "route": route})
        return routed

    return qa, qa_gate


def _archive_tasks(t: PipelineTemplate, pool: str, asset: Asset):
    @task(task_id="archive", pool=pool, outlets=[asset],
          map_index_template="{{ task.op_kwargs['item']['name'] }}")
    def archive(item: dict) -> dict:
        from pclean_provider.pipeline.ingest import record_imaged

        ctx = get_current_context()
        s = _settings(t)
        stem = Path(item["name"]).stem
        args = ["archive", "publish", "--image", item["imagename"], "--archive-root", s.archive_dir,
                "--product-id", safe_name(f"{stem}_{t.kind}"), "--qa-dir", str(Path(item["qa_json"]).parent),
                "--vis", item["vis"], "--ms-metadata", item["metadata_path"], "--config", _config_file(item),
                "--dag-run-id", ctx["run_id"]]
        started = ctx["dag_run"].start_date
        if started:
            args += ["--started-utc", started.isoformat()]
        proc = _run_pclean(args, Path(item["product_dir"]) / "logs")
        if proc.returncode == 2:
            raise AirflowFailException(f"archive refused {item['name']}: {proc.why()}")
        if proc.returncode != 0:
            raise RuntimeError(f"pclean archive exited with {proc.returncode}: {proc.why()}")
        published = json.loads(proc.stdout[proc.stdout.index("{"):])
        extra = {"ms": item["name"], "vis": item["vis"], "dag_id": t.dag_id, "run_id": ctx["run_id"],
                 "kind": t.kind, "qa_score": item["qa_score"], "qa_band": item["qa_band"],
                 **{k: published.get(k) for k in ("product_id", "version", "path", "manifest", "nfiles")}}
        # One asset event per archived product; downstream DAGs scheduled on the asset get this extra.
        ctx["outlet_events"][asset].extra = extra
        record_imaged(Path(s.ledger_dir), item["name"], {"route": "archive", **extra})
        print(f"archived {item['name']} -> {published['path']} (version {published['version']})")
        return {**item, "archive": published}

    @task(task_id="review", map_index_template="{{ task.op_kwargs['item']['name'] }}")
    def review(item: dict) -> dict:
        """Below the QA gate: nothing is published; a review ticket points at the products and report."""
        from pclean_provider.pipeline.ingest import record_imaged

        ctx = get_current_context()
        s = _settings(t)
        ticket = Path(s.review_dir) / t.dag_id / safe_name(Path(item["name"]).stem) / \
            f"{safe_name(ctx['run_id'])}.json"
        write_json_atomic(ticket, {
            "ms": item["name"], "vis": item["vis"], "imagename": item["imagename"],
            "qa_json": item["qa_json"], "qa_html": item["qa_html"], "qa_score": item["qa_score"],
            "qa_band": item["qa_band"], "gate": s.qa_min_score, "dag_id": t.dag_id, "run_id": ctx["run_id"],
            "how_to_publish": f"inspect {item['qa_html']}; to archive anyway run `pclean archive publish "
                              f"--image {item['imagename']} --archive-root {s.archive_dir}`",
        })
        record_imaged(Path(s.ledger_dir), item["name"], {"route": "review", "ticket": str(ticket)})
        print(f"{item['name']} sent to review: {ticket}")
        return {**item, "review_ticket": str(ticket)}

    return archive, review


def _config_file(item: dict) -> str:
    path = Path(item["product_dir"]) / "imaging-config.json"
    write_json_atomic(path, json.loads(item["config_json"]))
    return str(path)


# --------------------------------------------------------------------------------------------
# The DAG
# --------------------------------------------------------------------------------------------

RUN_XCOM = "run"  # prepare pushes the run's resolved settings under this key


def _run_setting(name: str) -> str:
    return "{{ ti.xcom_pull(task_ids='prepare', key='" + RUN_XCOM + "')['" + name + "'] }}"


def _imaging_kwargs(item: dict) -> dict:
    """What a per-MS imaging operator gets from prepare's item (module level: XComArg.map needs it)."""
    return {"overrides": item["overrides"], "presets": item["presets"]}


def _routed_to_archive(item: dict) -> dict:
    if item["route"] != "archive":
        raise AirflowSkipException(f"{item['name']} goes to review (QA score {item['qa_score']:.2f})")
    return item


def _routed_to_review(item: dict) -> dict:
    if item["route"] != "review":
        raise AirflowSkipException(f"{item['name']} passed the QA gate (score {item['qa_score']:.2f})")
    return item


def _qa_pair(pair: Any) -> dict:
    item, imaging = pair
    return {"item": item, "imaging": imaging}


def build_dag(t: PipelineTemplate) -> DAG:
    from pclean_provider.operators.cluster import ClusterDownOperator, ClusterUpOperator

    pool = t.pool.name
    asset = Asset(name=f"{t.dag_id}.products", uri=f"file://{t.paths()['archive_dir']}/{t.dag_id}",
                  group="pclean-archive")
    default_args = {
        "retries": t.retries,
        "retry_delay": timedelta(seconds=t.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=t.max_retry_delay_s),
        "on_failure_callback": _failure_callback(t),
    }
    deadline = DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=t.deadline_hours),
        callback=AsyncCallback("pclean_provider.pipeline.notify.notify_deadline_missed",
                               kwargs={"notifications_dir": str(t.paths()["notifications_dir"]),
                                       "dag_id": t.dag_id, "deadline_hours": t.deadline_hours}),
    )
    with DAG(
        dag_id=t.dag_id,
        dag_display_name=t.title,
        description=" ".join(t.description.split()) or t.title,
        doc_md=__doc__,
        schedule=None if os.environ.get("PCLEAN_PIPELINES_UNSCHEDULED") else t.schedule,
        start_date=pendulum.parse(t.start_date),
        catchup=False,
        max_active_runs=1,
        tags=t.tags,
        params=_params(t),
        default_args=default_args,
        deadline=deadline,
        render_template_as_native_obj=True,
    ) as dag:
        accepted = _ingest_task(t)()
        prepared = _prepare_task(t)(accepted)
        address = "{{ ti.xcom_pull(task_ids='cluster_up') }}"
        cluster_up = ClusterUpOperator(
            task_id="cluster_up",
            address_file=_run_setting("address_file"),
            cluster_overrides=_run_setting("cluster_overrides"),
            pclean_conn_id=t.cluster.connection_id or "pclean_dask_default",
        )
        prepared >> cluster_up
        if t.kind == "cube":
            imaging_results = _cube_imaging(prepared, cluster_up, address, pool)
        else:
            imaging_results = _continuum_imaging(prepared, cluster_up, address, pool)
        qa, qa_gate = _qa_tasks(t, pool)
        archive, review = _archive_tasks(t, pool, asset)
        checked = qa.expand_kwargs(prepared.zip(imaging_results).map(_qa_pair))
        routes = qa_gate(checked)
        # The gate's other way is skipped per MS, so the grid shows which way each product went.
        archived = archive.expand(item=routes.map(_routed_to_archive))
        reviewed = review.expand(item=routes.map(_routed_to_review))
        cluster_down = ClusterDownOperator(task_id="cluster_down", address_file=_run_setting("address_file"))
        [archived, reviewed] >> cluster_down
        cluster_up >> cluster_down.as_teardown(setups=cluster_up)
    return dag


def _cube_imaging(prepared, cluster_up, address: str, pool: str):
    from pclean_provider.operators.cube import (
        CubeConcatOperator,
        CubePartitionOperator,
        SubcubeImagingOperator,
    )

    partition = CubePartitionOperator.partial(
        task_id="partition", scheduler_address=address,
        map_index_template="{{ task.overrides['vis'].rstrip('/').split('/')[-1] }}",
    ).expand_kwargs(prepared.map(_imaging_kwargs))
    cluster_up >> partition
    specs = _collect_subcubes(partition.output)
    subcubes = SubcubeImagingOperator.partial(
        task_id="image_subcube", scheduler_address=address, pool=pool,
    ).expand(spec=specs)
    grouped = _group_subcubes(partition.output, subcubes.output)
    concat = CubeConcatOperator.partial(
        task_id="concat", scheduler_address=address, pool=pool,
        map_index_template="{{ task.plan['imagename'].rstrip('/').split('/')[-1] }}",
    ).expand_kwargs(grouped)
    return concat.output


@task(task_id="collect_subcubes", retries=0)
def _collect_subcubes(specs_per_ms: Any) -> list[dict]:
    """All MSs' sub-cubes as one list, so one mapped task images them all (no nested mapping)."""
    flat = [spec for specs in specs_per_ms for spec in specs]
    print(f"{len(flat)} sub-cubes from {len(list(specs_per_ms))} MeasurementSet(s)")
    return flat


@task(task_id="group_subcubes", retries=0)
def _group_subcubes(specs_per_ms: Any, results: Any) -> list[dict]:
    """Hand each MS's concatenation its plan and its own sub-cube results, in map-index order."""
    ti = get_current_context()["ti"]
    results = list(results)
    grouped, offset = [], 0
    for ms_index, specs in enumerate(specs_per_ms):
        n = len(specs)
        plan = ti.xcom_pull(task_ids="partition", key="plan", map_indexes=ms_index)
        # The config's concat mode and restoring beam travel with the plan to that MS's concat.
        options = ti.xcom_pull(task_ids="partition", key="concat_options", map_indexes=ms_index)
        grouped.append({"plan": plan, "results": results[offset:offset + n], "concat_options": options})
        offset += n
    return grouped


def _continuum_imaging(prepared, cluster_up, address: str, pool: str):
    from pclean_provider.operators.continuum import ContinuumImagingOperator

    continuum = ContinuumImagingOperator.partial(
        task_id="continuum", scheduler_address=address, pool=pool,
        map_index_template="{{ task.overrides['vis'].rstrip('/').split('/')[-1] }}",
    ).expand_kwargs(prepared.map(_imaging_kwargs))
    cluster_up >> continuum
    return continuum.output


def _build_all() -> dict[str, DAG]:
    return {t.dag_id: build_dag(t) for t in load_templates()}


globals().update(_build_all())
