"""Ingest: take complete MeasurementSets from a landing area, check them, record what they are.

A MeasurementSet is a directory that a transfer fills file by file, so "it exists" does not
mean "it is complete". Two policies (chosen in the pipeline template):

- ``marker`` (default): complete once ``<name>.ms<suffix>`` (``.complete``) exists next to it.
  The transfer writes the marker last, so a half-copied MS is never taken. This is the only
  safe choice when copies may stall for minutes.
- ``quiet_period``: complete once no file inside it was modified for ``quiet_period_s``.
  For transfers that cannot write a marker; a copy stalled longer than the period is taken.

Each complete MS is opened and checked (rows, spectral windows, fields, the selected spw and
field exist); its metadata is written as JSON. A broken one is moved, never deleted, into the
quarantine area with a ``<name>.ms.reason.json`` saying why. One already imaged (a ledger entry
written after its products were archived or sent to review) is skipped unless ``redo``.

Plain Python: the Airflow task runs this through ``pclean ingest`` in a subprocess, so that
casatools stays out of the Airflow worker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pclean_provider.atomic_files import write_json
from pclean_provider.errors import PcleanInputError

REASON_SUFFIX = ".reason.json"


class IngestedMs(BaseModel):
    name: str
    path: str
    metadata_path: str
    size_bytes: int | None = None
    nrows: int | None = None
    nspw: int | None = None
    nfield: int | None = None


class QuarantinedMs(BaseModel):
    name: str
    original_path: str
    quarantine_path: str
    reason_path: str
    reason: str


class SkippedMs(BaseModel):
    name: str
    path: str
    why: str


class IngestReport(BaseModel):
    landing_dir: str | None = None
    accepted: list[IngestedMs] = Field(default_factory=list)
    quarantined: list[QuarantinedMs] = Field(default_factory=list)
    incomplete: list[SkippedMs] = Field(default_factory=list)
    already_imaged: list[SkippedMs] = Field(default_factory=list)


class MsRejected(PcleanInputError):
    """The MS opened (or not) but cannot be imaged; the message is the reason for the operator."""


# Completeness --------------------------------------------------------------------------------

def marker_path(ms: Path, suffix: str) -> Path:
    return ms.with_name(ms.name + suffix)


def newest_mtime(ms: Path) -> float:
    newest = ms.stat().st_mtime
    for root, dirs, files in os.walk(ms):
        for name in files + dirs:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:  # a file renamed away by the copy while we looked
                continue
    return newest


def is_complete(ms: Path, completion: str, marker_suffix: str, quiet_period_s: float,
                now: float | None = None) -> tuple[bool, str]:
    if completion == "marker":
        marker = marker_path(ms, marker_suffix)
        return (marker.exists(), f"waiting for completion marker {marker.name}")
    if completion == "quiet_period":
        age = (now if now is not None else time.time()) - newest_mtime(ms)
        return (age >= quiet_period_s,
                f"modified {age:.0f} s ago, less than the quiet period of {quiet_period_s:.0f} s")
    raise ValueError(f"completion={completion!r}: use 'marker' or 'quiet_period'")


# Validation ----------------------------------------------------------------------------------

def _as_dict(meta: Any) -> dict[str, Any]:
    if hasattr(meta, "model_dump"):
        return meta.model_dump(mode="json")
    return dict(meta)


def _selected_ids(selection: str | int | list | None, known_ids: list[int], known_names: list[str],
                  what: str) -> list[str]:
    """Problems with a CASA-style id/name selection ('0', '0,2', '0~3', '1:5~10', 'name', '*').

    Only what can be told from the metadata is checked (ids and names exist); channel ranges
    after ':' are left to CASA's own selection.
    """
    if selection in (None, "", "*", -1, []):
        return []
    items = selection if isinstance(selection, list) else str(selection).split(",")
    problems = []
    for raw in items:
        item = str(raw).strip().split(":")[0].strip()
        if not item or item == "*":
            continue
        if "~" in item and all(p.strip().isdigit() for p in item.split("~", 1)):
            lo, hi = (int(p) for p in item.split("~", 1))
            missing = [i for i in range(lo, hi + 1) if i not in known_ids]
            if missing:
                problems.append(f"{what} {item}: ids {missing} do not exist (the MS has {known_ids})")
        elif item.isdigit():
            if int(item) not in known_ids:
                problems.append(f"{what} {item} does not exist (the MS has {what} ids {known_ids})")
        elif item not in known_names and not any(ch in item for ch in "*?"):
            problems.append(f"{what} {item!r} does not exist (the MS has {known_names})")
    return problems


def validate_metadata(meta: dict[str, Any], spw: Any = None, field: Any = None) -> None:
    """Raise MsRejected naming every problem that keeps this MS from being imaged."""
    problems = []
    if not meta.get("nrows"):
        problems.append("the MAIN table has no rows")
    spws = meta.get("spws") or []
    fields = meta.get("fields") or []
    if not spws:
        problems.append("no spectral windows")
    elif not any((s.get("nchan") or 0) > 0 for s in spws):
        problems.append("no spectral window has channels")
    if not fields:
        problems.append("no fields")
    columns = meta.get("data_columns")
    if columns is not None and not {"DATA", "CORRECTED_DATA"} & {str(c).upper() for c in columns}:
        problems.append(f"no DATA or CORRECTED_DATA column to image (columns: {columns})")
    spw_ids = [int(s.get("id", s.get("spw_id", i))) for i, s in enumerate(spws)]
    field_ids = [int(f.get("id", f.get("field_id", i))) for i, f in enumerate(fields)]
    field_names = [str(f.get("name", "")) for f in fields]
    if spws:
        problems += _selected_ids(spw, spw_ids, [str(s.get("name", "")) for s in spws], "spw")
    if fields:
        problems += _selected_ids(field, field_ids, field_names, "field")
    if problems:
        raise MsRejected("; ".join(problems))


def default_metadata_reader(path: str) -> Any:
    # Imported here: only the `pclean ingest` process needs casatools.
    from pclean_provider.casa.msinfo import read_ms_metadata

    return read_ms_metadata(path)


def inspect_ms(ms: Path, reader: Callable[[str], Any], spw: Any = None, field: Any = None) -> dict:
    """Open the MS and check it; return its metadata (JSON-able) or raise MsRejected."""
    if not ms.is_dir():
        raise MsRejected(f"{ms} is not a MeasurementSet directory")
    if not (ms / "table.dat").exists():
        raise MsRejected("no table.dat: not a CASA table (an incomplete copy, or not an MS)")
    try:
        meta = _as_dict(reader(str(ms)))
    except MsRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to open is the reason we report
        raise MsRejected(f"cannot be opened: {type(exc).__name__}: {exc}") from exc
    validate_metadata(meta, spw=spw, field=field)
    return meta


# Files ---------------------------------------------------------------------------------------

def write_json_atomic(path: Path, data: Any) -> Path:
    return write_json(path, data, indent=2, sort_keys=True, default=str)


def _free_name(directory: Path, name: str) -> Path:
    """A name in `directory` not used yet: an MS quarantined twice keeps both copies."""
    candidate = directory / name
    n = 1
    while candidate.exists() or candidate.with_name(candidate.name + REASON_SUFFIX).exists():
        candidate = directory / f"{name}.{n}"
        n += 1
    return candidate


def quarantine(ms: Path, quarantine_dir: Path, reason: str, marker_suffix: str | None) -> QuarantinedMs:
    """Move the MS (and its marker) aside with a reason file; nothing is deleted.

    The reason file is written first, so that an interrupted move still leaves the explanation
    beside whatever arrived.
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = _free_name(quarantine_dir, ms.name)
    reason_path = target.with_name(target.name + REASON_SUFFIX)
    write_json_atomic(reason_path, {
        "ms": ms.name,
        "original_path": str(ms),
        "quarantined_at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "what_to_do": "fix or re-transfer the MeasurementSet and move it back into the landing area "
                      "(with its completion marker)",
    })
    shutil.move(str(ms), str(target))
    if marker_suffix:
        marker = marker_path(ms, marker_suffix)
        if marker.exists():
            shutil.move(str(marker), str(marker_path(target, marker_suffix)))
    return QuarantinedMs(name=ms.name, original_path=str(ms), quarantine_path=str(target),
                         reason_path=str(reason_path), reason=reason)


def ledger_entry(ledger_dir: Path, ms_name: str) -> Path:
    return ledger_dir / f"{ms_name}.json"


def record_imaged(ledger_dir: Path, ms_name: str, info: dict[str, Any]) -> Path:
    """Remember that this MS was imaged, so the next night's ingest skips it."""
    return write_json_atomic(ledger_entry(ledger_dir, ms_name),
                             {"ms": ms_name, "recorded_at": datetime.now(UTC).isoformat(), **info})


def _accept(ms: Path, meta: dict, metadata_dir: Path) -> IngestedMs:
    meta_path = write_json_atomic(metadata_dir / f"{ms.name}.metadata.json", meta)
    return IngestedMs(name=ms.name, path=str(ms.resolve()), metadata_path=str(meta_path),
                      size_bytes=meta.get("size_bytes"), nrows=meta.get("nrows"),
                      nspw=len(meta.get("spws") or []), nfield=len(meta.get("fields") or []))


# Entry points --------------------------------------------------------------------------------

def ingest_landing_area(landing_dir: Path, *, quarantine_dir: Path, metadata_dir: Path, ledger_dir: Path,
                        completion: str = "marker", marker_suffix: str = ".complete",
                        quiet_period_s: float = 120.0, pattern: str = "*.ms", spw: Any = None,
                        field: Any = None, redo: bool = False,
                        reader: Callable[[str], Any] = default_metadata_reader,
                        now: float | None = None) -> IngestReport:
    landing_dir, quarantine_dir = Path(landing_dir), Path(quarantine_dir)
    metadata_dir, ledger_dir = Path(metadata_dir), Path(ledger_dir)
    report = IngestReport(landing_dir=str(landing_dir))
    if not landing_dir.is_dir():
        raise FileNotFoundError(f"landing area {landing_dir} does not exist: create it or set landing_dir "
                                "in the pipeline template")
    for ms in sorted(p for p in landing_dir.glob(pattern) if p.is_dir()):
        complete, why = is_complete(ms, completion, marker_suffix, quiet_period_s, now=now)
        if not complete:
            report.incomplete.append(SkippedMs(name=ms.name, path=str(ms), why=why))
            continue
        if not redo and ledger_entry(ledger_dir, ms.name).exists():
            report.already_imaged.append(SkippedMs(
                name=ms.name, path=str(ms),
                why=f"already imaged (ledger {ledger_entry(ledger_dir, ms.name)}); trigger with redo=true "
                    "to image it again"))
            continue
        try:
            meta = inspect_ms(ms, reader, spw=spw, field=field)
        except MsRejected as exc:
            report.quarantined.append(quarantine(
                ms, quarantine_dir, str(exc), marker_suffix if completion == "marker" else None))
            continue
        report.accepted.append(_accept(ms, meta, metadata_dir))
    return report


def ingest_one(vis: Path, *, metadata_dir: Path, spw: Any = None, field: Any = None,
               reader: Callable[[str], Any] = default_metadata_reader) -> IngestedMs:
    """An MS named explicitly (run conf `vis`): checked, never moved; raises MsRejected."""
    vis = Path(vis)
    if not vis.exists():
        raise MsRejected(f"vis={str(vis)!r} does not exist: give the path of a MeasurementSet "
                         "directory readable by the Airflow workers")
    meta = inspect_ms(vis, reader, spw=spw, field=field)
    return _accept(vis, meta, metadata_dir)
