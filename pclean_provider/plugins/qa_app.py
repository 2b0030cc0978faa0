"""The plugin's web app on Airflow's API server: each night's QA reports and an index per night.

Mounted by Airflow at ``/pclean`` (links/qa_urls.py lists the addresses). It reads only the
filesystem, and only what pipeline/report_files.py lets through: files of QA report folders under
the pipeline's data roots, real paths, so that neither a symbolic link nor ``..`` leads elsewhere.

Airflow authenticates its own API with a router dependency, which a mounted app does not inherit,
so every route here asks for it itself, with Airflow's own dependencies: the JWT of the signed-in
UI (its cookie) or an ``Authorization: Bearer`` token, and the auth manager's read access to the
pipeline's DAG runs; the overview lists only the DAGs the user may read.

Reports are served with a sandboxing Content-Security-Policy: qa.html is the pipeline's own page,
but anything under a data root with a report's name would be served on Airflow's origin, where a
script could act with the viewer's session.
"""

from __future__ import annotations

from pathlib import Path

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_authenticated
from airflow.models.dag import DagModel
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from pclean_provider.links.qa_urls import night_url, overview_url, pipeline_url, report_url
from pclean_provider.names import check_run_id
from pclean_provider.pipeline.night_index import night_products, pipeline_nights, runs_dir
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, TemplateError, load_templates
from pclean_provider.pipeline.report_files import NotServed, pipeline_roots, report_file
from pclean_provider.plugins import qa_pages

NOT_SERVED = ("No QA report file here: only the files of QA report folders under the pipeline's data roots "
              "are served.")
# Our own pages: no script at all, styles inline, shown in the Airflow UI's frame or on their own.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'"
# Report files: a sandbox (an origin of their own, no script, no forms), inline styles and the
# report's own pictures.
FILE_POLICY = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
               "frame-ancestors 'self'")
NIGHTS_SHOWN = 200


def _templates() -> list[PipelineTemplate]:
    try:
        return load_templates()
    except TemplateError as exc:
        # The DAG processor reports the same error as the DAG file's import error.
        raise HTTPException(503, f"The pipeline templates cannot be read: {exc}") from exc


def _template(dag_id: str) -> PipelineTemplate | None:
    return next((t for t in _templates() if t.dag_id == dag_id), None)


def _pipeline(dag_id: str) -> PipelineTemplate:
    template = _template(dag_id)
    if template is None:
        raise HTTPException(404, f"{dag_id} is not a pclean pipeline")
    return template


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache",
                                       "X-Content-Type-Options": "nosniff"})


def _night_dir(template: PipelineTemplate, run_folder: str) -> Path:
    try:
        check_run_id(run_folder)  # one folder name: no separator, no '..', no control characters
    except ValueError:
        raise HTTPException(404, NOT_SERVED) from None
    return runs_dir(template) / run_folder


def create_app() -> FastAPI:
    app = FastAPI(title="pclean QA reports", docs_url=None, redoc_url=None, openapi_url=None)
    may_read_runs = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(overview_url())

    @app.get("/qa/", dependencies=[Depends(requires_authenticated())])
    def overview(user: GetUserDep) -> HTMLResponse:
        templates = _templates()
        readable = get_auth_manager().filter_authorized_dag_ids(
            dag_ids={t.dag_id for t in templates}, user=user, method="GET")
        pipelines = []
        for t in templates:
            if t.dag_id in readable:
                nights = pipeline_nights(runs_dir(t), pipeline_roots(t), limit=NIGHTS_SHOWN)
                pipelines.append((t.dag_id, t.title, pipeline_url(t.dag_id), nights))
        return _html(qa_pages.overview_page(pipelines, night_url))

    @app.get("/qa/{dag_id}/", dependencies=may_read_runs)
    def pipeline(dag_id: str) -> HTMLResponse:
        t = _pipeline(dag_id)
        nights = pipeline_nights(runs_dir(t), pipeline_roots(t), limit=NIGHTS_SHOWN)
        return _html(qa_pages.pipeline_page(dag_id, t.title, nights, overview_url(), night_url))

    def products_of(dag_id: str, run_folder: str):
        t = _pipeline(dag_id)
        try:
            return night_products(_night_dir(t, run_folder), pipeline_roots(t))
        except NotServed:
            raise HTTPException(404, NOT_SERVED) from None

    @app.get("/qa/{dag_id}/runs/{run_folder}/", dependencies=may_read_runs)
    def night(dag_id: str, run_folder: str) -> HTMLResponse:
        products = products_of(dag_id, run_folder)
        crumbs = [("pclean QA", overview_url()), (dag_id, pipeline_url(dag_id))]
        return _html(qa_pages.night_page(dag_id, run_folder, products, crumbs,
                                         lambda path: report_url(dag_id, path),
                                         night_url(dag_id, run_folder) + "index.json"))

    @app.get("/qa/{dag_id}/runs/{run_folder}/index.json", dependencies=may_read_runs)
    def night_json(dag_id: str, run_folder: str) -> JSONResponse:
        products = products_of(dag_id, run_folder)
        return JSONResponse({"dag_id": dag_id, "night": run_folder, "products": [
            {**p.as_json(), "qa_html_url": report_url(dag_id, p.qa_html) if p.qa_html else None,
             "qa_json_url": report_url(dag_id, p.qa_json)} for p in products]})

    @app.get("/qa/{dag_id}/files/{path:path}", dependencies=may_read_runs)
    def report_file_of(dag_id: str, path: str, session: SessionDep) -> FileResponse:
        template = _template(dag_id)
        # Outside a pipeline a report is served for a DAG Airflow knows, under the data root.
        if template is None:
            if session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)) is None:
                raise HTTPException(404, NOT_SERVED)
        try:
            real, media_type = report_file("/" + path, pipeline_roots(template))
        except NotServed:
            raise HTTPException(404, NOT_SERVED) from None
        return FileResponse(real, media_type=media_type, headers={"Content-Security-Policy": FILE_POLICY,
                                                                  "Cache-Control": "no-cache",
                                                                  "X-Content-Type-Options": "nosniff"})

    return app
