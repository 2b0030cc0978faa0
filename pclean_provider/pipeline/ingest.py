"""Ingest: take complete MeasurementSets from a landing area, check them, record what they are.

A MeasurementSet is a directory that a transfer fills file by file, so "it exists" does not
mean "it is complete". Two policies (chosen in the pipeline template):

- ``marker`` (default): complete once ``<name>.ms<suffix>`` (``.complete``) exists next to it
  and was written after every file of the MS (change times, which a copy cannot fake). The
  transfer writes the marker last, so a half-copied MS is never taken; a marker left over from an
  earlier copy, with a redo being copied over it, is older than the new files and is not believed. A marker holding a fingerprint (JSON with
  ``fingerprint``, as :func:`ms_fingerprint` makes) must also match it. This is the only safe
  choice when copies may stall for minutes.
- ``quiet_period``: complete once no file inside it was modified for ``quiet_period_s``.
  For transfers that cannot write a marker; a copy stalled longer than the period is taken.

Each complete MS is opened and checked (rows, spectral windows, fields, the selected spw and
field exist); its metadata is written as JSON with a fingerprint of its files (size and mtime of
every table file), which imaging and archive compare with the MS they read. A broken one is moved,
never deleted, into the quarantine area with a ``<name>.ms.reason.json`` saying why.

Only a defect of the MS itself moves it. A run's selection that matches nothing (a ``field`` or
``spw`` typo in the trigger form) is the run's problem, not the MS's: ingest decides about every MS
first and moves nothing when the run itself is at fault, so the landing area is left as it was. A
read that fails because of its surroundings (an I/O error, a stale NFS handle, a permission, a lock
held by another process: casatools reports all of these as RuntimeError, so they are told by their
wording) or that fails twice in different ways leaves that MS where it is, reported as
``unreadable`` with the reason, for the next night; the other MSs are imaged.

The two nightly DAGs watch one landing area, so two ingests may quarantine at once: each claims
the MS by renaming it inside the landing area (only one rename succeeds), reserves its name in
the quarantine by creating it (``mkdir`` succeeds for one process only), and writes the reason
file beside it, atomically; a process never removes a file it did not create.

One already imaged (a ledger entry written after its products were archived or sent to review) is
skipped unless ``redo``.

An entry that is a symbolic link, or whose name is too long for the files written beside it, is
refused with the reason and left alone; it never holds back the night's other MSs.

Plain Python: the Airflow task runs this through ``pclean ingest`` in a subprocess, so that
casatools stays out of the Airflow worker.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pclean_provider.atomic_files import staged, write_json
from pclean_provider.casa.measures_info import current_status, measures_warnings
from pclean_provider.casa.msinfo import read_ms_metadata
from pclean_provider.errors import PcleanInputError

REASON_SUFFIX = ".reason.json"
# casacore rewrites a table's lock file whenever the table is opened, even read-only: it says who
# reads the MS, not what it holds, so it is left out of completeness and the fingerprint.
_VOLATILE_FILES = frozenset({"table.lock"})


class IngestedMs(BaseModel):
    name: str
    path: str
    metadata_path: str
    size_bytes: int | None = None
    nrows: int | None = None
    nspw: int | None = None
    nfield: int | None = None
    fingerprint: str | None = None
    # Imaged all the same, but said: e.g. observed after the CASA measures data end.
    warnings: list[str] = []


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
    # Could not be read tonight for a reason outside the MS (left in place for the next night).
    unreadable: list[SkippedMs] = Field(default_factory=list)
    # Moved away by another ingest (the other nightly DAG) while this one looked at it.
    taken_elsewhere: list[SkippedMs] = Field(default_factory=list)
    # Left alone for what its name is (a symbolic link, a name too long): the reason says what to do.
    refused: list[SkippedMs] = Field(default_factory=list)


class MsRejected(PcleanInputError):
    """The MS opened (or not) but cannot be imaged; the message is the reason for the operator."""


class SelectionNotInMs(PcleanInputError):
    """The run's spw/field selection names something an otherwise good MS does not have.

    The run's parameters are wrong, not the MS: nothing is quarantined."""


class MsReadUnstable(RuntimeError):
    """Reading the MS failed because of its surroundings (I/O, NFS, permission, lock), or twice
    differently: not a defect of the MS.

    Not an input error: a later read may well succeed, and nothing was moved."""


class MsTakenElsewhere(RuntimeError):
    """The MS left the landing area while this ingest looked at it: another ingest quarantined it."""


class QuarantineFailed(RuntimeError):
    """A broken MS could not be moved to quarantine (a full or unwritable quarantine area).

    Not an input error: once space is freed a rerun succeeds; the MS was left in place, whole."""


class MsChangedError(PcleanInputError):
    """The MS is not the one ingest checked: its files changed since (a redo copied over it?)."""


# Names ---------------------------------------------------------------------------------------

# The longest landing name ingest takes: the files it writes beside and about an MS add up to 31
# characters to its name (``.<name>.quarantining-<pid>-<token>``, ``.<name>.metadata.json.tmp-<token>``),
# and no file name may exceed 255 bytes.
MAX_MS_NAME_BYTES = 200


def landing_name_problem(ms: Path) -> str | None:
    """Why ingest leaves this landing entry alone whatever it holds, or None to look at it."""
    if ms.is_symlink():
        return (f"{ms.name} is a symbolic link (to {os.readlink(ms)}): ingest images and quarantines only "
                "what the landing area itself holds, never what a link points to; copy the MeasurementSet "
                "into the landing area instead of linking it")
    size = len(os.fsencode(ms.name))
    if size > MAX_MS_NAME_BYTES and ms.is_dir():
        return (f"{ms.name[:40]}... has a name of {size} bytes, longer than the {MAX_MS_NAME_BYTES} ingest "
                "takes (the files written beside it would exceed the file system's 255); rename it in the "
                "landing area, with its completion marker")
    return None


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


def _table_files(ms: Path) -> list[tuple[str, os.stat_result]]:
    """Every file of the MS but casacore's lock files, sorted by relative path, with its stat."""
    out = []
    for root, _dirs, files in os.walk(ms):
        for name in files:
            if name in _VOLATILE_FILES:
                continue
            full = os.path.join(root, name)
            try:
                out.append((os.path.relpath(full, ms), os.stat(full)))
            except FileNotFoundError:  # renamed away by a copy in progress while we looked
                continue
    return sorted(out, key=lambda item: item[0])


def ms_fingerprint(ms: str | os.PathLike) -> str:
    """A cheap identity of the MS's content: SHA-256 over each table file's path, size and mtime.

    No data are read (an MS may be terabytes); any rewrite of a table file changes its size or
    mtime, which is what a redo copy or a careless in-place edit does.
    """
    ms = Path(ms)
    if not ms.is_dir():
        raise MsChangedError(f"vis={str(ms)!r} is gone: the MeasurementSet ingest checked no longer exists")
    digest = hashlib.sha256()
    for rel, st in _table_files(ms):
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "sha256:" + digest.hexdigest()


def verify_fingerprint(vis: str | os.PathLike, expected: str | None, who: str) -> None:
    """Raise MsChangedError if the MS at `vis` is not the one ingest fingerprinted.

    `who` is the step that refuses (imaging, archive); no fingerprint recorded (an ingest from an
    older version) is accepted, as there is nothing to compare with.
    """
    if not expected:
        return
    actual = ms_fingerprint(vis)
    if actual != expected:
        raise MsChangedError(
            f"vis={str(vis)!r} changed since ingest checked it (fingerprint {actual} is not the {expected} "
            f"ingest recorded), so {who} refuses it: its products would not match the data ingest "
            "validated. Let the copy finish and trigger the run again (redo=true) to ingest it afresh.")


def verify_against_metadata(vis: str | os.PathLike, metadata_path: str | os.PathLike, who: str) -> None:
    """verify_fingerprint with the fingerprint from ingest's metadata JSON of the MS."""
    meta = json.loads(Path(metadata_path).read_text())
    verify_fingerprint(vis, meta.get("fingerprint"), who)


def _marker_problem(ms: Path, marker: Path) -> str | None:
    """Why this marker does not vouch for the MS as it is now, or None if it does."""
    # Change times (ctime), not modification times: a transfer that keeps the source's mtimes
    # (rsync -a, cp -p) makes a fresh copy look old, but no tool can set a ctime, which is always
    # the moment the file was written here; the marker's too, even when copied with its mtime.
    try:
        marker_ctime = marker.stat().st_ctime_ns
    except FileNotFoundError:
        return f"waiting for completion marker {marker.name}"
    files = _table_files(ms)
    newest = max((st.st_ctime_ns for _rel, st in files), default=0)
    if newest > marker_ctime:
        return (f"completion marker {marker.name} is older than files of the MS (a copy over an earlier "
                "one is in progress, or the marker is left over): waiting for a new marker")
    try:
        recorded = json.loads(marker.read_text() or "{}").get("fingerprint")
    except (ValueError, AttributeError):
        recorded = None  # a plain (empty or text) marker carries no fingerprint
    if recorded and recorded != ms_fingerprint(ms):
        return (f"completion marker {marker.name} names another fingerprint than the MS has (a copy is "
                "still changing it): waiting for a new marker")
    return None


def is_complete(ms: Path, completion: str, marker_suffix: str, quiet_period_s: float,
                now: float | None = None) -> tuple[bool, str]:
    if completion == "marker":
        problem = _marker_problem(ms, marker_path(ms, marker_suffix))
        return (problem is None, problem or "")
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
            missing = _missing_in_range(item, known_ids)
            if missing:
                problems.append(f"{what} {item}: ids {missing} do not exist (the MS has {known_ids})")
        elif item.isdigit():
            if int(item) not in known_ids:
                problems.append(f"{what} {item} does not exist (the MS has {what} ids {known_ids})")
        elif item not in known_names and not any(ch in item for ch in "*?"):
            problems.append(f"{what} {item!r} does not exist (the MS has {known_names})")
    return problems


def _missing_in_range(item: str, known_ids: list[int]) -> str:
    """The ids of the range 'lo~hi' that the MS lacks, said in a few words: counted from the known ids,
    never by walking the range, which a selection such as '0~99999999999' makes as long as it likes."""
    lo_text, hi_text = (p.strip() for p in item.split("~", 1))
    if len(lo_text) > 12 or len(hi_text) > 12:
        return f"up to {hi_text[:16]}..."
    lo, hi = int(lo_text), int(hi_text)
    present = sorted(i for i in set(known_ids) if lo <= i <= hi)
    count = hi - lo + 1 - len(present)
    if count <= 0:  # every id there, or an empty range (hi < lo), which CASA's own selection judges
        return ""
    first = [i for i in range(lo, min(hi, lo + len(present) + 3) + 1) if i not in present][:3]
    return f"{', '.join(map(str, first))}{', ...' if count > len(first) else ''} ({count:,} in all)"


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
    if problems:
        raise MsRejected("; ".join(problems))
    # Checked only for a sound MS, and raised as the run's error: a selection that matches nothing
    # is a typo in the run's parameters, which must never move the MS away.
    spw_ids = [int(s.get("id", s.get("spw_id", i))) for i, s in enumerate(spws)]
    field_ids = [int(f.get("id", f.get("field_id", i))) for i, f in enumerate(fields)]
    field_names = [str(f.get("name", "")) for f in fields]
    selection = _selected_ids(spw, spw_ids, [str(s.get("name", "")) for s in spws], "spw")
    selection += _selected_ids(field, field_ids, field_names, "field")
    if selection:
        raise SelectionNotInMs("; ".join(selection))


def default_metadata_reader(path: str) -> Any:
    return read_ms_metadata(path)


def _read_once(ms: Path, reader: Callable[[str], Any]) -> tuple[dict | None, BaseException | None]:
    try:
        return _as_dict(reader(str(ms))), None
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        return None, exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# How the C library (and so casacore, inside the RuntimeErrors casatools raises) words failures of
# the file system, the network mount or locking: none says anything about the MS's content.
_ENVIRONMENT_TEXTS = (
    "stale file handle", "permission denied", "operation not permitted", "cannot be locked",
    "input/output error", "no space left on device", "disk quota exceeded", "too many open files",
    "resource temporarily unavailable", "transport endpoint is not connected", "connection timed out",
    "read-only file system", "device or resource busy", "no locks available", "interrupted system call",
    "cannot allocate memory",
)


def is_environmental(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is a failure of the surroundings, not of the MS's content."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, FileNotFoundError | NotADirectoryError):
            return True
        if any(text in str(current).lower() for text in _ENVIRONMENT_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def inspect_ms(ms: Path, reader: Callable[[str], Any], spw: Any = None, field: Any = None) -> dict:
    """Open the MS and check it; return its metadata (JSON-able) with its fingerprint.

    Raises MsRejected for a defect of the MS, SelectionNotInMs when the run's selection matches
    nothing in a sound MS, MsReadUnstable when reading failed in a way that says nothing about the
    MS. A failed read is tried once more: a defect fails the same way twice, a flaky mount rarely
    does; an error of the surroundings (is_environmental) is never taken for a defect, even when it
    repeats, as a stale NFS handle or a held lock does.
    """
    if not ms.is_dir():
        raise MsRejected(f"{ms} is not a MeasurementSet directory")
    if not (ms / "table.dat").exists():
        raise MsRejected("no table.dat: not a CASA table (an incomplete copy, or not an MS)")
    fingerprint = ms_fingerprint(ms)
    meta, first = _read_once(ms, reader)
    if first is not None:
        meta, second = _read_once(ms, reader)
        if second is not None:
            if is_environmental(first) or is_environmental(second) or _describe(first) != _describe(second):
                raise MsReadUnstable(
                    f"{ms.name}: reading it failed twice, differently or because of the file system, a "
                    f"permission or a lock ({_describe(first)}; then {_describe(second)}); not quarantined: "
                    "left in the landing area for the next night; check the mount, permissions and "
                    "other readers of the MS") from second
            if isinstance(second, MsRejected):
                raise second
            raise MsRejected(f"cannot be opened: {_describe(second)}") from second
    if ms_fingerprint(ms) != fingerprint:
        # Something wrote to the MS while we read it: its metadata may describe neither version.
        raise MsReadUnstable(f"{ms.name} changed while ingest read it; not quarantined: retry when the "
                             "copy has finished")
    validate_metadata(meta, spw=spw, field=field)
    meta["fingerprint"] = fingerprint
    return meta


# Files ---------------------------------------------------------------------------------------

def write_json_atomic(path: Path, data: Any) -> Path:
    return write_json(path, data, indent=2, sort_keys=True, default=str)


def _move_whole(src: Path, dst: Path) -> None:
    """Move `src` to `dst` so that `dst` holds all of it or is as it was (absent, or an empty folder).

    Within one filesystem a rename; across filesystems (quarantine on another disk) a copy to a
    hidden name beside `dst`, renamed once complete, and only then the source removed. A copy
    that fails (a full disk) is removed again and the source stays where it was. Links inside are
    copied as links, never as what they point to.
    """
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # `dst` is this call's own name (free, or the empty folder _reserve_name made for it), so putting
    # the copy in place replaces nothing of anyone else's.
    is_tree = src.is_dir() and not src.is_symlink()
    with staged(dst) as partial:
        if is_tree:
            shutil.copytree(src, partial, symlinks=True)
        else:
            shutil.copy2(src, partial, follow_symlinks=False)
    if is_tree:
        shutil.rmtree(src)
    else:
        src.unlink()


def _reserve_name(directory: Path, name: str) -> Path:
    """Create and return an empty folder `directory`/`name` (or `name`.1, .2, ...) no one has yet.

    mkdir succeeds for one process only, so two ingests never pick the same name; an MS quarantined
    twice keeps both copies. A name with a reason file but no folder (left by an older version) is
    not taken either.
    """
    n = 0
    while True:
        candidate = directory / (name if n == 0 else f"{name}.{n}")
        n += 1
        if candidate.with_name(candidate.name + REASON_SUFFIX).exists():
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def quarantine(ms: Path, quarantine_dir: Path, reason: str, marker_suffix: str | None) -> QuarantinedMs:
    """Move the MS (and its marker) aside with a reason file; nothing is deleted.

    Safe with another ingest doing the same at once: the MS is first claimed by renaming it to a
    hidden name in the landing area (atomic; the loser gets MsTakenElsewhere and touches nothing),
    then an empty folder is reserved in the quarantine, the reason file is written beside it, and the
    MS is renamed onto the reserved folder. A move that fails (a full quarantine disk) removes only
    what this call created and puts the MS back under its name, whole; the error says where space is
    missing.
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    claimed = ms.with_name(f".{ms.name}.quarantining-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(ms, claimed)
    except FileNotFoundError as exc:
        raise MsTakenElsewhere(f"{ms.name} left the landing area before it could be quarantined "
                               "(another ingest quarantined it)") from exc
    except OSError as exc:
        raise QuarantineFailed(
            f"{ms.name} could not be claimed for quarantine ({exc.strerror or exc}); it stays in the landing "
            "area, whole. Fix the landing area's permissions and rerun the task.") from exc
    target: Path | None = None
    reason_path: Path | None = None
    try:
        target = _reserve_name(quarantine_dir, ms.name)
        reason_path = target.with_name(target.name + REASON_SUFFIX)
        # Written before the move, so that an interrupted move still leaves the explanation beside
        # whatever arrived.
        write_json_atomic(reason_path, {
            "ms": ms.name,
            "original_path": str(ms),
            "quarantined_at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "what_to_do": "fix or re-transfer the MeasurementSet and move it back into the landing area "
                          "(with its completion marker)",
        })
        if claimed.is_symlink() or not claimed.is_dir():
            # Only a folder can be renamed onto the reserved empty folder; anything else (which the
            # scan never hands over, but a caller may) takes the name once the folder is gone.
            target.rmdir()
        _move_whole(claimed, target)
    except OSError as exc:
        if reason_path is not None:
            reason_path.unlink(missing_ok=True)
        if target is not None:
            with contextlib.suppress(OSError):
                target.rmdir()  # only while still the empty folder this call reserved
        _put_back(claimed, ms)
        raise QuarantineFailed(
            f"{ms.name} could not be moved to quarantine {quarantine_dir} ({exc.strerror or exc}); it stays in "
            "the landing area, whole. Free space there (or fix its permissions) and rerun the task.") from exc
    if marker_suffix:
        marker = marker_path(ms, marker_suffix)
        if marker.exists():
            try:
                _move_whole(marker, marker_path(target, marker_suffix))
            except OSError:
                # The MS is quarantined with its reason; a marker left in the landing area names
                # an MS that is gone there, which ingest ignores.
                pass
    return QuarantinedMs(name=ms.name, original_path=str(ms), quarantine_path=str(target),
                         reason_path=str(reason_path), reason=reason)


def _put_back(claimed: Path, ms: Path) -> None:
    """Give a claimed MS its landing name again; if a new copy took that name meanwhile, keep it claimed."""
    if ms.exists():
        return
    with contextlib.suppress(OSError):
        os.rename(claimed, ms)


def ledger_entry(ledger_dir: Path, ms_name: str) -> Path:
    return ledger_dir / f"{ms_name}.json"


def record_imaged(ledger_dir: Path, ms_name: str, info: dict[str, Any]) -> Path:
    """Remember that this MS was imaged, so the next night's ingest skips it."""
    return write_json_atomic(ledger_entry(ledger_dir, ms_name),
                             {"ms": ms_name, "recorded_at": datetime.now(UTC).isoformat(), **info})


def _measures_warnings(meta: dict) -> list[str]:
    end_s = meta.get("time_end_mjd_s")
    if end_s is None:
        return []

    return measures_warnings(current_status(), float(end_s) / 86400.0)


def _accept(ms: Path, meta: dict, metadata_dir: Path) -> IngestedMs:
    meta_path = write_json_atomic(metadata_dir / f"{ms.name}.metadata.json", meta)
    warnings = _measures_warnings(meta)
    return IngestedMs(name=ms.name, path=str(ms.resolve()), metadata_path=str(meta_path),
                      size_bytes=meta.get("size_bytes"), nrows=meta.get("nrows"),
                      nspw=len(meta.get("spws") or []), nfield=len(meta.get("fields") or []),
                      fingerprint=meta.get("fingerprint"), warnings=warnings)


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
    decisions: list[tuple[Path, dict | MsRejected]] = []
    not_selected: list[str] = []
    if not landing_dir.is_dir():
        raise FileNotFoundError(f"landing area {landing_dir} does not exist: create it or set landing_dir "
                                "in the pipeline template")
    for ms in sorted(landing_dir.glob(pattern)):
        refusal = landing_name_problem(ms)
        if refusal:
            # Reported every night until someone renames or replaces it; never moved, never followed.
            report.refused.append(SkippedMs(name=ms.name, path=str(ms), why=refusal))
            continue
        if not ms.is_dir():
            continue
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
            decisions.append((ms, inspect_ms(ms, reader, spw=spw, field=field)))
        except SelectionNotInMs as exc:
            not_selected.append(f"{ms.name}: {exc}")
        except MsRejected as exc:
            decisions.append((ms, exc))
        except (MsReadUnstable, MsChangedError) as exc:
            if not ms.exists():
                report.taken_elsewhere.append(SkippedMs(
                    name=ms.name, path=str(ms), why="left the landing area while ingest read it (the other "
                    "nightly ingest quarantined it)"))
            else:
                # Not this MS's fault, and no reason to hold back the others: it waits for the next night.
                report.unreadable.append(SkippedMs(name=ms.name, path=str(ms), why=str(exc)))
    # Decide about every MS before acting on any: a run whose own parameters are wrong leaves the
    # landing area as it was.
    if not_selected:
        raise SelectionNotInMs(
            "the run's selection (spw=" + repr(spw) + ", field=" + repr(field) + ") matches nothing in "
            + "; ".join(not_selected) + ". Fix spw/field in the run's parameters (or the template's "
            "overrides) or leave them empty; no MeasurementSet was moved.")
    for ms, outcome in decisions:
        if isinstance(outcome, MsRejected):
            try:
                report.quarantined.append(quarantine(
                    ms, quarantine_dir, str(outcome), marker_suffix if completion == "marker" else None))
            except MsTakenElsewhere as exc:
                report.taken_elsewhere.append(SkippedMs(name=ms.name, path=str(ms), why=str(exc)))
        else:
            report.accepted.append(_accept(ms, outcome, metadata_dir))
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
