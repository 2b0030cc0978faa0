"""The addresses of the QA pages the provider's plugin serves on Airflow's API server, in one place.

The plugin's app is mounted at ``/pclean`` (after the path of ``[api] base_url``, when Airflow is
served below one):

    /pclean/qa/                                  the pipelines and their latest nights
    /pclean/qa/<dag_id>/                         one pipeline's nights
    /pclean/qa/<dag_id>/runs/<run folder>/       one night: every product, score, band, gate
    /pclean/qa/<dag_id>/runs/<run folder>/index.json   the same as JSON
    /pclean/qa/<dag_id>/files/<absolute path>    one file of a QA report folder (qa.html, qa.json, ...)

A file is named by its absolute path, so that a report in the archive, in a run folder a run's conf
moved, or beside an image outside any pipeline is reached the same way; the plugin serves it only
under that pipeline's data roots (pipeline/report_files.py). Nights are named by run folder
(names.run_folder_name), in the pipeline template's work area.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

PLUGIN_PREFIX = "/pclean"


def base_path() -> str:
    """The path Airflow is served below (from ``[api] base_url``), '' at the server's root."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:
        from airflow.configuration import conf
    base = conf.get("api", "base_url", fallback="") or ""
    return urlsplit(base).path.rstrip("/")


def _segment(text: str) -> str:
    return quote(text, safe="")


def overview_url() -> str:
    return f"{base_path()}{PLUGIN_PREFIX}/qa/"


def pipeline_url(dag_id: str) -> str:
    return f"{base_path()}{PLUGIN_PREFIX}/qa/{_segment(dag_id)}/"


def night_url(dag_id: str, run_folder: str) -> str:
    return f"{pipeline_url(dag_id)}runs/{_segment(run_folder)}/"


def report_url(dag_id: str, path: str | os.PathLike[str]) -> str:
    """The URL of one file of a QA report folder (an absolute path)."""
    return f"{pipeline_url(dag_id)}files{quote(os.fspath(path), safe='/')}"
