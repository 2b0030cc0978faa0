"""Which files a web page may show of a QA report, and from where: the rule the Airflow plugin serves by.

The plugin reads the filesystem on behalf of anyone who may view a pipeline's runs, so a request
names a path and gets a file only when all of these hold for the file's real path (symbolic links
followed, ``..`` gone):

* it lies in one of the pipeline's data roots (``conf_policy.allowed_roots``: the template's
  ``data_roots``, else the data root and the template's own areas), the same confinement a run's
  conf is held to;
* it sits directly in a QA report folder (``qa/``, as the pipelines and the archive lay them out,
  or ``<imagename>.qa/``, ``pclean qa``'s default), so a MeasurementSet, a notification or a log
  beside it is never served;
* it is a regular file of a kind a report consists of (HTML, JSON, pictures).

Every refusal is the same :class:`NotServed`, whatever the reason, so that the answer does not
tell an outsider which paths exist. Standard library and pipeline only: no web framework here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pclean_provider.pipeline.conf_paths import real_roots, within
from pclean_provider.pipeline.conf_policy import allowed_roots
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, data_root_dir, load_templates

#: The kinds of file a QA report folder holds, with the media type each is served as.
REPORT_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
}
QA_FOLDER = "qa"
QA_FOLDER_SUFFIX = ".qa"


class NotServed(LookupError):
    """The path is not a QA report file under the data roots (or does not exist: the same answer)."""


def pipeline_roots(template: PipelineTemplate | None, data_root: Path | None = None) -> list[Path]:
    """Where a pipeline's reports may be read from: its template's allowed roots (real paths);
    for a DAG that is no pipeline, the data root alone."""
    data_root = data_root or data_root_dir()
    if template is None:
        return real_roots([data_root])
    return allowed_roots(template, data_root)


def template_for(dag_id: str) -> PipelineTemplate | None:
    """The pipeline template of ``dag_id``, None for a DAG that is no pipeline."""
    return next((t for t in load_templates() if t.dag_id == dag_id), None)


def roots_for_dag(dag_id: str) -> list[Path]:
    return pipeline_roots(template_for(dag_id))


def confined_real_path(requested: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """The real path of ``requested`` (absolute), if it lies in one of ``roots``; else NotServed.

    Taken literally: no ``~`` or variables, and no ``..`` segment (a link this provider makes never
    has one, so a request with one is not ours, whatever it would resolve to).
    """
    text = os.fspath(requested)
    if not text or "\x00" in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise NotServed(requested)
    path = Path(text)
    if not path.is_absolute() or ".." in path.parts:
        raise NotServed(requested)
    real = Path(os.path.realpath(path))
    if not within(real, list(roots)):
        raise NotServed(requested)
    return real


def is_qa_folder(folder: Path) -> bool:
    return folder.name == QA_FOLDER or (folder.name.endswith(QA_FOLDER_SUFFIX) and len(folder.name) > 3)


def report_file(requested: str | os.PathLike[str], roots: Iterable[Path]) -> tuple[Path, str]:
    """The real path and media type of a QA report file the rule above lets through; else NotServed."""
    real = confined_real_path(requested, roots)
    media_type = REPORT_MEDIA_TYPES.get(real.suffix.lower())
    if media_type is None or not is_qa_folder(real.parent):
        raise NotServed(requested)
    try:
        mode = real.stat().st_mode
    except OSError:
        raise NotServed(requested) from None
    if not stat.S_ISREG(mode):
        raise NotServed(requested)
    return real, media_type


def confined_folder(requested: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """The real path of a folder under the roots (a night's run folder); else NotServed."""
    real = confined_real_path(requested, roots)
    if not real.is_dir():
        raise NotServed(requested)
    return real
