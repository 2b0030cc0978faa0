"""Provenance keywords for archived FITS files: what made the image, from what, and how it scored.

A FITS file travels without its manifest (a user downloads one cube from the archive), so each
archived file carries the essentials itself: software versions, product and run identity, the input
MSs with their fingerprints, the QA verdict, and every imaging parameter as HISTORY. Keywords are
at most eight characters (FITS standard, no HIERARCH), values of any length use astropy's long-string
convention (CONTINUE cards). INPUTKEY is the SHA-256 of the archived images and input MSs (the
archive's identity of the inputs); MSHASHn the SHA-256 of MS n's identity (rows, spws, times).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Parameters that say where things were on one machine, not how the image was made.
_NOT_IMAGING = frozenset({"cluster", "scheduler_address", "work_dir", "state_dir", "progress_file"})


@dataclass(frozen=True)
class FitsProvenance:
    """The keyword cards (``cards``: key, value, comment) and HISTORY lines one archived file gets."""

    cards: list[tuple[str, Any, str]] = field(default_factory=list)
    history: list[str] = field(default_factory=list)


def _param_lines(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for key in sorted(config):
        value = config[key]
        if value is None or key in _NOT_IMAGING or isinstance(value, Mapping):
            continue
        lines.append(f"pclean {key} = {json.dumps(value, default=str, separators=(',', ':'))}")
    return lines


def build_provenance(
    *,
    product_id: str,
    versions: Mapping[str, Any],
    dag_run_id: str | None,
    inputs_key: str,
    ms_fingerprints: Mapping[str, str],
    qa: Mapping[str, Any] | None,
    config: Mapping[str, Any],
) -> FitsProvenance:
    """The cards for one product; the same for each of its files."""
    cards: list[tuple[str, Any, str]] = [
        ("ORIGIN", "pclean_provider", "software that made and archived this file"),
        ("PCLVER", versions.get("provider") or "unknown", "pclean_provider version"),
        ("CASATOOL", versions.get("casatools") or "unknown", "casatools version"),
        ("CASATASK", versions.get("casatasks") or "unknown", "casatasks version"),
        ("PRODID", product_id, "archive product id"),
        # A 64-character hash fills its card: no room for a comment (the module says what it is).
        ("INPUTKEY", inputs_key, ""),
    ]
    if dag_run_id:
        cards.append(("RUNID", dag_run_id, "Airflow DAG run that made this product"))
    cards.append(("NMS", len(ms_fingerprints), "number of input MeasurementSets"))
    for i, (name, digest) in enumerate(sorted(ms_fingerprints.items()), start=1):
        cards.append((f"MSNAME{i}", name, f"input MeasurementSet {i}"))
        cards.append((f"MSHASH{i}", digest, ""))
    if qa and qa.get("overall_score") is not None:
        cards.append(("QASCORE", float(qa["overall_score"]), "QA overall score (0 bad .. 1 good)"))
        if qa.get("overall_band"):
            cards.append(("QABAND", str(qa["overall_band"]), "QA band of the overall score"))
        if qa.get("gate"):
            cards.append(("QAGATE", str(qa["gate"]), "QA gate decision (archive or review)"))
    return FitsProvenance(cards=cards, history=_param_lines(config))


def apply_provenance(header: Any, provenance: FitsProvenance | None) -> None:
    """Write the cards into an astropy header (existing keywords of the same name are replaced)."""
    if provenance is None:
        return
    for key, value, comment in provenance.cards:
        header[key] = (value, comment)
    for line in provenance.history:
        header.add_history(line)


def read_provenance(header: Any) -> dict[str, Any]:
    """The provenance keywords of a header as a dict (HISTORY parameter lines under ``params``)."""
    out: dict[str, Any] = {}
    for key in ("ORIGIN", "PCLVER", "CASATOOL", "CASATASK", "PRODID", "INPUTKEY", "RUNID", "NMS",
                "QASCORE", "QABAND", "QAGATE"):
        if key in header:
            out[key] = header[key]
    ms: list[tuple[str, str]] = []
    for i in range(1, int(header.get("NMS", 0)) + 1):
        ms.append((header.get(f"MSNAME{i}"), header.get(f"MSHASH{i}")))
    out["ms"] = ms
    params = {}
    for line in _joined_history(header.get("HISTORY", [])):
        if line.startswith("pclean ") and " = " in line:
            key, value = line[len("pclean "):].split(" = ", 1)
            try:
                params[key] = json.loads(value)
            except ValueError:  # a string whose space fell on a card boundary
                params[key] = value
    out["params"] = params
    return out


def _joined_history(cards: Sequence[str]) -> list[str]:
    """HISTORY lines as written: astropy splits a long line over several cards; a card that does
    not start a parameter continues the one before."""
    lines: list[str] = []
    for card in cards:
        text = str(card)
        if text.startswith("pclean ") or not lines:
            lines.append(text)
        else:
            lines[-1] += text
    return lines
