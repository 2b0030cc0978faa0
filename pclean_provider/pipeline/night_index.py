"""What one night (one pipeline run) produced, read back from its run folder: every product's QA
score, band and the QA gate's decision; and the nights a pipeline has run.

The run folder is the truth, not Airflow's database: a product is listed when its ``qa/qa.json``
is there, whichever task wrote it and however often it was cleared. Products sit one or two
folders below the run folder (``<ms>/`` for an MS with one target, ``<ms>/<target>/`` for each of
several; see dags/tasks/prepare.py). The gate writes its decision beside the report
(:func:`record_gate_decision`), so the index shows where a product went, not where it would go
under today's template. Every file is checked against the data roots like any served file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pclean_provider.atomic_files import write_json
from pclean_provider.pipeline.pipeline_template import PipelineTemplate
from pclean_provider.pipeline.report_files import (
    NotServed,
    confined_folder,
    confined_real_path,
    report_file,
    template_for,
)

GATE_RECORD = "gate.json"
QA_JSON = "qa.json"
QA_HTML = "qa.html"
# Product folders below a run folder: <ms>/qa/ and <ms>/<target>/qa/.
_PRODUCT_PATTERNS = ("*/qa/" + QA_JSON, "*/*/qa/" + QA_JSON)


@dataclass(frozen=True)
class NightProduct:
    """One product of a night, as its QA report and the gate's record describe it."""

    product: str  # its folder relative to the run folder: "night1" or "night1/NGC5457"
    qa_json: Path
    qa_html: Path | None
    ms: str | None = None
    target: str | None = None
    kind: str | None = None
    score: float | None = None
    band: str | None = None
    not_judged: str | None = None
    route: str | None = None  # "archive" or "review" as the gate decided; None before it ran
    gate: float | None = None  # the gate's minimum score in that run
    problem: str | None = None  # why the report could not be read

    @property
    def label(self) -> str:
        """The MS, and the target when the MS has several (a product two folders down), as the
        pipeline's map index names it."""
        name = self.ms or self.product.split("/")[0]
        return f"{name} {self.target}" if self.target and "/" in self.product else name

    def as_json(self) -> dict[str, Any]:
        return {"product": self.product, "label": self.label, "ms": self.ms, "target": self.target,
                "kind": self.kind, "score": self.score, "band": self.band, "not_judged": self.not_judged,
                "route": self.route, "gate": self.gate, "qa_json": str(self.qa_json),
                "qa_html": str(self.qa_html) if self.qa_html else None, "problem": self.problem}


@dataclass(frozen=True)
class Night:
    """One run folder of a pipeline."""

    folder: str
    path: Path
    modified: datetime
    products: int


def runs_dir(template: PipelineTemplate, data_root: Path | None = None) -> Path:
    """The folder of a pipeline's run folders in its template's work area (a run's conf may name
    another work area; its nights are not indexed, its reports are still linked)."""
    return template.paths(data_root)["work_dir"] / template.dag_id / "runs"


def dag_runs_dir(dag_id: str) -> Path | None:
    template = template_for(dag_id)
    return runs_dir(template) if template else None


def record_gate_decision(qa_dir: str | os.PathLike[str], *, route: str, gate: float, score: float,
                         run_id: str, reason: str | None = None) -> Path:
    """The QA gate's decision beside the report it judged (atomically, so a reader never sees half)."""
    path = Path(qa_dir) / GATE_RECORD
    record = {"route": route, "gate": gate, "score": score, "run_id": run_id,
              "decided_utc": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason}
    return write_json(path, record, indent=2)


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds no JSON object")
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_product(run_dir: Path, qa_json: Path, roots: list[Path]) -> NightProduct:
    """One product from its qa.json (already confined) and, when the gate ran, its gate record."""
    product = qa_json.parent.parent.relative_to(run_dir).as_posix()
    html: Path | None = qa_json.parent / QA_HTML
    try:
        report_file(html, roots)
    except NotServed:
        html = None
    try:
        report = _read_json(qa_json)
    except (OSError, ValueError) as exc:
        return NightProduct(product=product, qa_json=qa_json, qa_html=html,
                            problem=f"qa.json cannot be read: {exc}")
    plan = report.get("plan") if isinstance(report.get("plan"), dict) else {}
    ms = plan.get("ms")
    fields: dict[str, Any] = {
        "ms": Path(ms).name if isinstance(ms, str) and ms else None,
        "target": plan.get("label") if isinstance(plan.get("label"), str) else None,
        "kind": report.get("kind") if isinstance(report.get("kind"), str) else None,
        "score": _number(report.get("overall_score")),
        "band": report.get("overall_band") if isinstance(report.get("overall_band"), str) else None,
        "not_judged": report.get("not_judged_reason") or None,
    }
    try:
        gate_path, _ = report_file(qa_json.parent / GATE_RECORD, roots)
        gate = _read_json(gate_path)
    except (NotServed, OSError, ValueError):
        gate = {}
    if gate.get("route") in ("archive", "review"):
        fields["route"] = gate["route"]
        fields["gate"] = _number(gate.get("gate"))
    return NightProduct(product=product, qa_json=qa_json, qa_html=html, **fields)


def night_products(run_dir: str | os.PathLike[str], roots: list[Path]) -> list[NightProduct]:
    """Every product of the night in ``run_dir`` (a folder under ``roots``, else NotServed), in
    folder order. A report reached through a symbolic link that leaves the roots is not listed.
    """
    run = confined_folder(run_dir, roots)
    products = []
    seen: set[Path] = set()
    for pattern in _PRODUCT_PATTERNS:
        for found in sorted(run.glob(pattern)):
            try:
                qa_json, _ = report_file(found, roots)
            except NotServed:
                continue
            # The product's own folder, as found: a link inside the night keeps the name it has there.
            if qa_json in seen:
                continue
            seen.add(qa_json)
            products.append(read_product(run, found, roots))
    return sorted(products, key=lambda p: p.product)


def pipeline_nights(runs_dir: str | os.PathLike[str], roots: list[Path], limit: int = 200) -> list[Night]:
    """The run folders of a pipeline (``<work>/<dag_id>/runs``), newest first, at most ``limit``."""
    try:
        runs = confined_real_path(runs_dir, roots)
    except NotServed:
        return []
    nights = []
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return []
    for entry in entries:
        try:
            real = confined_real_path(entry.path, roots)
            if not real.is_dir():
                continue
            modified = datetime.fromtimestamp(real.stat().st_mtime, UTC)
        except (NotServed, OSError):
            continue
        count = sum(1 for pattern in _PRODUCT_PATTERNS for _ in real.glob(pattern))
        nights.append(Night(folder=entry.name, path=Path(entry.path), modified=modified, products=count))
    nights.sort(key=lambda n: (n.modified, n.folder), reverse=True)
    return nights[:limit]
