"""archive and review: the two ways out of the QA gate. archive publishes with `pclean archive
publish` and emits an asset event; review writes a ticket and publishes nothing (a person then
answers its review_decision task, tasks/review.py, which publishes through the same
:func:`publish_product` when they approve).

The asset event goes through the DAG's asset alias to an asset whose URI is the version folder
the product is in. Publishing is idempotent (see pipeline/archive.py): when the archive already
held the product, the task returns that version and emits the event again only if this run
published it (its earlier try may have died before Airflow recorded the event); a product an
earlier run published unchanged emits nothing, so consumers do not run for it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from pclean_provider.dags.params import run_settings
from pclean_provider.dags.pclean_subprocess import run_step_payload, step_timeout
from pclean_provider.links.qa_report import served_report_url
from pclean_provider.names import run_folder_name
from pclean_provider.operators.lineage import report_archive_lineage
from pclean_provider.pipeline.ingest import record_imaged, write_json_atomic
from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from pclean_provider.pipeline.run_settings import RunSettings
from pclean_provider.pipeline.safe_names import safe_name

# The MS, and the target when an MS has several (prepare's label); items of older runs have none.
ITEM_LABEL = "{{ task.op_kwargs['item'].get('label') or task.op_kwargs['item']['name'] }}"


def archive_tasks(t: PipelineTemplate, pool: str, alias: AssetAlias):
    @task(task_id="archive", pool=pool, outlets=[alias], execution_timeout=step_timeout(t),
          map_index_template=ITEM_LABEL)
    def archive(item: dict) -> dict:
        if item.get("route", "archive") != "archive":
            # The QA gate's other way, skipped per MS (a branch does not skip inside a mapped group).
            raise AirflowSkipException(f"{item['name']} goes to review (QA score {item['qa_score']:.2f})")

        published = publish_product(t, alias, item, get_current_context())
        return {**item, "archive": published}

    @task(task_id="review", map_index_template=ITEM_LABEL)
    def review(item: dict) -> dict:
        """Below the QA gate: nothing is published; a review ticket points at the products and report."""
        if item.get("route", "review") != "review":
            raise AirflowSkipException(f"{item['name']} passed the QA gate (score {item['qa_score']:.2f})")

        ctx = get_current_context()
        s = run_settings(t)
        folder = item.get("review_folder") or safe_name(Path(item["name"]).stem)
        ticket = Path(s.review_dir) / t.dag_id / folder / \
            f"{run_folder_name(ctx['run_id'])}.json"
        write_json_atomic(ticket, {
            "ms": item["name"], "target": item.get("target"), "vis": item["vis"], "imagename": item["imagename"],
            "qa_json": item["qa_json"], "qa_html": item["qa_html"], "qa_score": item["qa_score"],
            "qa_band": item["qa_band"], "gate": s.qa_min_score, "dag_id": t.dag_id, "run_id": ctx["run_id"],
            "how_to_review": f"answer the run's review_decision task (Airflow UI: Required Actions; or the REST "
                             f"API's hitlDetails) within {t.qa.review_timeout_minutes:g} minutes: Approve "
                             "archives the product, Reject keeps it here with your note, Re-image runs the MS "
                             "again with the tclean parameters you give",
            "how_to_publish": f"inspect {item['qa_html']}; to archive anyway run `pclean archive publish "
                              f"--image {item['imagename']} --archive-root {s.archive_dir}`",
        })
        record_imaged(Path(s.ledger_dir), item["name"], {"route": "review", "ticket": str(ticket),
                                                         "target": item.get("target")})
        print(f"{item.get('label') or item['name']} sent to review: {ticket}")
        return {**item, "review_ticket": str(ticket)}

    return archive, review


def publish_product(t: PipelineTemplate, alias: AssetAlias, item: dict, ctx: Any,
                    reviewed: dict | None = None, settings: RunSettings | None = None) -> dict:
    """Publish one (MS, target) product with `pclean archive publish`, emit its asset event through the
    DAG's alias, record it in the ledger and in OpenLineage; returns what the publish reported.

    The ``archive`` task calls it for a product at or above the QA gate, ``review_decision`` for one a
    reviewer approved (``reviewed``: who and when, carried in the asset event and the ledger); the
    calling task declares the alias among its outlets. ``settings``: the run's, when the calling task's
    params are not the run conf's alone.
    """
    s = settings or run_settings(t)
    stem = Path(item["name"]).stem
    # One product per (MS, target): prepare names it (items of older runs do not: <ms>_<kind>).
    product_id = item.get("product_id") or safe_name(f"{stem}_{t.kind}")
    args = ["archive", "publish", "--image", item["imagename"], "--archive-root", s.archive_dir,
            "--product-id", product_id, "--qa-dir", str(Path(item["qa_json"]).parent),
            "--vis", item["vis"], "--ms-metadata", item["metadata_path"], "--config", _config_file(item),
            "--dag-run-id", ctx["run_id"]] + (["--file-mode", t.archive.file_mode] if t.archive.file_mode else [])
    started = ctx["dag_run"].start_date
    if started:
        args += ["--started-utc", started.isoformat()]
    published = run_step_payload(args, Path(item["product_dir"]) / "logs", item["name"])
    extra = {"ms": item["name"], "target": item.get("target"), "vis": item["vis"], "dag_id": t.dag_id,
             "run_id": ctx["run_id"],
             "kind": t.kind, "qa_score": item["qa_score"], "qa_band": item["qa_band"],
             **{k: published.get(k) for k in ("product_id", "version", "path", "manifest", "nfiles",
                                              "already_published")},
             **({"reviewed": reviewed} if reviewed else {})}
    if published.get("path"):
        # The archived copy of the QA report, as the plugin serves it: the event's way to the report.
        extra["qa_report"] = served_report_url(t.dag_id, Path(published["path"]) / "qa" / "qa.html")
    if not published.get("already_published") or published.get("dag_run_id") == ctx["run_id"]:
        # One asset event per archived product, on the asset of its version folder.
        version_asset = Asset(uri=Path(published["path"]).as_uri(), group="pclean-archive")
        ctx["outlet_events"][alias].add(version_asset, extra=extra)
    record_imaged(Path(s.ledger_dir), item["name"], {"route": "archive", **extra})
    report_archive_lineage(item["vis"], published.get("path"))  # OpenLineage: MS in, version out
    if published.get("already_published"):
        print(f"{item['name']}: version {published['version']} at {published['path']} already holds this "
              f"product (published by run {published.get('dag_run_id')}); nothing new published")
    else:
        print(f"archived {item['name']} -> {published['path']} (version {published['version']})")
    return published


def _config_file(item: dict) -> str:
    path = Path(item["product_dir"]) / "imaging-config.json"
    write_json_atomic(path, json.loads(item["config_json"]))
    return str(path)
