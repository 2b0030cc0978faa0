"""The "QA report" and "QA night" buttons: from a task instance to its product's QA report and to
the index of every product of its night, both served by the provider's plugin.

Worked out from what the task pushed to XCom:

* the pipelines' ``qa`` and ``qa_gate`` tasks return the report's paths (``qa_html``); the DAG
  factory gives them both links (:func:`show_qa_links`), which the Task SDK stores when the task ends;
* the imaging operators return their ``imagename``; QA runs after them, so the plugin registers
  the "QA report" link for them and the API server looks, each time the UI shows the task, for the
  report beside the image (``<product>/qa/``, as the pipelines put it, or ``<imagename>.qa/``,
  ``pclean qa``'s default).

A link is shown only when the file is there and under the pipeline's data roots, where the plugin
will serve it. The plugin imports this module in every Airflow component, so the pipeline layer
(templates, YAML) is imported only when a link is worked out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from pclean_provider.links.qa_urls import night_url, report_url
from pclean_provider.links.task_xcom import task_xcom
from pclean_provider.names import run_folder_name

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def report_candidates(result: Any) -> list[Path]:
    """Where the QA report of a task's result is: the path it names, or the places QA writes beside
    the image it made."""
    if not isinstance(result, dict):
        return []
    named = result.get("qa_html")
    if isinstance(named, str) and named:
        return [Path(named)]
    image = result.get("imagename")
    if isinstance(image, str) and image:
        return [Path(image).parent / "qa" / "qa.html", Path(image + ".qa") / "qa.html"]
    return []


def served_report(dag_id: str, result: Any) -> Path | None:
    """The first report of ``result`` that the plugin would serve for ``dag_id``."""
    candidates = report_candidates(result)
    if not candidates:
        return None
    from pclean_provider.pipeline.report_files import NotServed, report_file, roots_for_dag

    roots = roots_for_dag(dag_id)
    for candidate in candidates:
        try:
            report_file(candidate, roots)
        except NotServed:
            continue
        return candidate
    return None


def served_report_url(dag_id: str, path: str | Path) -> str | None:
    """The plugin's URL of the report at ``path``, when the plugin would serve it (an asset event's link)."""
    report = served_report(dag_id, {"qa_html": str(path)})
    return report_url(dag_id, report) if report else None


class QaReportLink(BaseOperatorLink):
    """The QA report (qa.html) of the product this task made or judged."""

    name = "QA report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        result, _ = task_xcom(ti_key)
        report = served_report(ti_key.dag_id, result)
        return report_url(ti_key.dag_id, report) if report else ""


class QaNightLink(BaseOperatorLink):
    """The index of every product of this task's night (run), with scores, bands and gate decisions."""

    name = "QA night"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            folder = run_folder_name(ti_key.run_id)
        except ValueError:
            return ""  # a run id the pipelines refuse has no run folder
        from pclean_provider.pipeline.night_index import dag_runs_dir

        runs = dag_runs_dir(ti_key.dag_id)
        return night_url(ti_key.dag_id, folder) if runs and (runs / folder).is_dir() else ""


def show_qa_links(*outputs: Any) -> None:
    """Give the tasks behind these task outputs (``@task`` results whose value names ``qa_html``)
    the "QA report" and "QA night" buttons.

    A ``@task`` takes no links of its own; set on the operator, they are serialized with the DAG
    and worked out by the Task SDK when the task ends.
    """
    for output in outputs:
        operator = output.operator
        operator.operator_extra_links = (*operator.operator_extra_links, QaReportLink(), QaNightLink())
