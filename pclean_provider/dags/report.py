"""An example consumer of the pipelines' archive assets: a report over the archived products.

Each pipeline DAG's archive task emits, through the asset alias ``<dag_id>.products``, one asset
event per archived product whose asset URI is the published version folder
(``file:///.../archive/<product>/vNNNN``) and whose ``extra`` holds the MS, version, path and QA
score. This DAG is scheduled on those aliases (any of them), so it runs after every archive
task that published something, and writes one JSON report listing the products it was told about.
"""

from __future__ import annotations

import functools
import operator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, AssetAlias, get_current_context, task

from pclean_provider.airflow_config import apply_airflow_config
from pclean_provider.names import run_folder_name
from pclean_provider.pipeline.ingest import write_json_atomic
from pclean_provider.pipeline.pipeline_template import data_root_dir, load_templates

REPORT_DAG_ID = "pclean_archive_report"


def products_alias(dag_id: str) -> AssetAlias:
    """The alias a pipeline DAG's archive task emits its products' asset events through."""
    return AssetAlias(name=f"{dag_id}.products", group="pclean-archive")


def _event_row(event: Any) -> dict:
    extra = dict(getattr(event, "extra", None) or {})
    asset = getattr(event, "asset", None)
    return {"uri": getattr(asset, "uri", None), **{k: extra.get(k) for k in (
        "ms", "product_id", "version", "path", "qa_score", "qa_band", "dag_id", "run_id")}}


def build_report_dag() -> DAG:
    # Before the templates load: [pclean] pipelines_dir names them, data_root places their archives.
    apply_airflow_config()
    aliases = [products_alias(t.dag_id) for t in load_templates()]
    with DAG(
        dag_id=REPORT_DAG_ID,
        dag_display_name="pclean archive report",
        description="A JSON report of the products the pclean pipelines archived (an asset-scheduled example)",
        doc_md=__doc__,
        schedule=functools.reduce(operator.or_, aliases),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["pclean", "report"],
    ) as dag:
        @task(task_id="products_report", inlets=aliases)
        def products_report() -> dict:
            ctx = get_current_context()
            # A scheduled run knows the events that triggered it; a manual one reports the latest
            # event of every product the aliases have seen.
            triggering = [e for events in (ctx.get("triggering_asset_events") or {}).values() for e in events]
            if triggering:
                rows = [_event_row(e) for e in triggering]
            else:
                latest: dict[str, dict] = {}
                for alias in aliases:
                    for event in ctx["inlet_events"][alias]:
                        row = _event_row(event)
                        latest[str(row["product_id"])] = row
                rows = list(latest.values())
            rows.sort(key=lambda r: (str(r["product_id"]), r["version"] or 0))
            report = {"run_id": ctx["run_id"], "created_utc": datetime.now(UTC).isoformat(),
                      "products": rows}
            path = data_root_dir() / "reports" / f"archive-report-{run_folder_name(ctx['run_id'])}.json"
            write_json_atomic(Path(path), report)
            print(f"archive report: {len(rows)} product(s) -> {path}")
            return {"report": str(path), "products": len(rows)}

        products_report()
    return dag
