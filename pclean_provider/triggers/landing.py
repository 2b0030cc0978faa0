"""Watch a pipeline's landing area and fire when a complete MeasurementSet has arrived.

``LandingAreaTrigger`` is an event trigger (Airflow 3's ``BaseEventTrigger``): a pipeline DAG puts it
in an ``AssetWatcher`` on the asset of its landing area and is scheduled on "cron OR that asset", so
an MS that lands at 02:05 is imaged then, not the next night. The triggerer runs it for as long as
the DAG is unpaused; it never ends by itself and yields one event per poll that found new MSs (one
event, so MSs that land together make one run rather than one run each).

What "complete" means is the ingest's rule (``pipeline.ingest.is_complete``: the transfer's marker,
or a quiet period), so the watcher and the run it starts never disagree about an MS.

It fires at most once per MS: before yielding, it writes ``<state_dir>/<name>.json`` with the MS's
fingerprint (the marker's modification and change times, or the ingest's content identity), and
an MS whose state file holds the same fingerprint, or that the ledger already lists as imaged, is
passed over. The state is on
disk, not in the trigger, because the triggerer restarts and re-creates triggers. Writing before
the yield trades a lost event on a triggerer crash in that instant (the nightly schedule still
takes the MS) for never starting a second run for the same MS. An MS moved back into the landing
area after quarantine carries a new marker, so it fires again.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from pclean_provider.atomic_files import write_json
from pclean_provider.pipeline.ingest import (
    MsChangedError,
    is_complete,
    ledger_entry,
    marker_path,
    ms_fingerprint,
)


def fingerprint(ms: Path, completion: str, marker_suffix: str) -> str:
    """Changes when the MS is transferred again, never when it is only read (CASA rewrites its lock
    files on every open, and the run this trigger starts opens the MS).

    With markers, the marker's times: every transfer writes it anew, and its change time moves even
    for a copy that keeps the source's modification times (cp -p, rsync -a). Without, the ingest's
    content identity (table files' sizes and times, lock files left out)."""
    if completion == "marker":
        marker = marker_path(ms, marker_suffix).stat()
        return f"marker:{marker.st_mtime_ns}:{marker.st_ctime_ns}"
    return ms_fingerprint(ms)


def state_file(state_dir: Path, ms_name: str) -> Path:
    return state_dir / f"{ms_name}.json"


def new_arrivals(landing_dir: str, *, state_dir: str, ledger_dir: str, pattern: str = "*.ms",
                 completion: str = "marker", marker_suffix: str = ".complete",
                 quiet_period_s: float = 120.0, record: bool = True) -> list[dict[str, str]]:
    """Complete MSs in the landing area that were neither announced nor imaged yet; with ``record``
    each is written to the state folder so that the next call passes it over."""
    landing, state, ledger = Path(landing_dir), Path(state_dir), Path(ledger_dir)
    if not landing.is_dir():
        return []  # not created yet: ingest says so in the nightly run; the watcher just waits
    found = []
    for ms in sorted(p for p in landing.glob(pattern) if p.is_dir()):
        # Cheapest first: imaged and announced MSs stay in the landing area, and the completeness
        # check walks the whole MS.
        if ledger_entry(ledger, ms.name).exists():
            continue
        seen = state_file(state, ms.name)
        try:
            mark = fingerprint(ms, completion, marker_suffix)  # no marker yet: FileNotFoundError
            if _announced(seen) == mark:
                continue
            complete, _ = is_complete(ms, completion, marker_suffix, quiet_period_s)
        except (FileNotFoundError, MsChangedError):  # not complete, or moved away meanwhile
            continue
        if not complete:
            continue
        if record:
            write_json(seen, {"ms": ms.name, "path": str(ms), "fingerprint": mark,
                              "announced_utc": datetime.now(UTC).isoformat()}, indent=2)
        found.append({"ms": ms.name, "path": str(ms)})
    return found


def _announced(seen: Path) -> str | None:
    try:
        return json.loads(seen.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None  # never announced, or a state file we cannot read: announce it


class LandingAreaTrigger(BaseEventTrigger):
    """Yield ``{"landing_dir", "arrived": [{"ms", "path"}, ...]}`` whenever complete MSs have newly
    arrived in ``landing_dir``; poll every ``poll_interval`` seconds, for ever.

    :param landing_dir: the pipeline's landing area (absolute).
    :param state_dir: where the trigger remembers the MSs it announced (one JSON file each).
    :param ledger_dir: the pipeline's ledger of imaged MSs (``pipeline.ingest.record_imaged``).
    :param pattern, completion, marker_suffix, quiet_period_s: the template's ingest policy.
    :param poll_interval: seconds between scans.
    """

    def __init__(self, landing_dir: str, state_dir: str, ledger_dir: str, pattern: str = "*.ms",
                 completion: str = "marker", marker_suffix: str = ".complete",
                 quiet_period_s: float = 120.0, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.landing_dir = landing_dir
        self.state_dir = state_dir
        self.ledger_dir = ledger_dir
        self.pattern = pattern
        self.completion = completion
        self.marker_suffix = marker_suffix
        self.quiet_period_s = quiet_period_s
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "landing_dir": self.landing_dir, "state_dir": self.state_dir, "ledger_dir": self.ledger_dir,
            "pattern": self.pattern, "completion": self.completion, "marker_suffix": self.marker_suffix,
            "quiet_period_s": self.quiet_period_s, "poll_interval": self.poll_interval,
        })

    def _scan(self) -> list[dict[str, str]]:
        return new_arrivals(self.landing_dir, state_dir=self.state_dir, ledger_dir=self.ledger_dir,
                            pattern=self.pattern, completion=self.completion,
                            marker_suffix=self.marker_suffix, quiet_period_s=self.quiet_period_s)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                # A folder walk on a shared filesystem can take a while: off the triggerer's loop.
                arrived = await asyncio.to_thread(self._scan)
            except (PermissionError, NotADirectoryError):
                raise  # a wrong mount or path: fail visibly in the UI instead of polling for ever
            except OSError as exc:  # an NFS hiccup heals itself; try again next time
                self.log.warning("cannot scan the landing area %s (%s); next try in %s s",
                                 self.landing_dir, exc, self.poll_interval)
                arrived = []
            if arrived:
                self.log.info("arrived in %s: %s", self.landing_dir, ", ".join(a["ms"] for a in arrived))
                yield TriggerEvent({"landing_dir": self.landing_dir, "arrived": arrived})
            await asyncio.sleep(self.poll_interval)


def state_dir_for(work_dir: str | os.PathLike[str], dag_id: str) -> Path:
    """Where a pipeline's watcher keeps its announcements: beside its ledger and metadata."""
    return Path(work_dir) / dag_id / "arrivals"
