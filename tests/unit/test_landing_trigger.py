"""The landing-area watcher: fires for complete MSs only, once per MS, and again for a re-transfer.

Real folders and files; the trigger's own asyncio loop (no triggerer needed for its logic; the live
standalone test runs it in a real triggerer)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - the trigger imports Airflow: point it at the test home first
from pclean_provider.pipeline.ingest import record_imaged
from pclean_provider.triggers.landing import LandingAreaTrigger, new_arrivals


def fake_ms(landing: Path, name: str, marker: bool = True) -> Path:
    """Folder shaped like an MS (the watcher never opens it; ingest does)."""
    ms = landing / name
    ms.mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"x")
    if marker:
        mark(ms)
    return ms


def mark(ms: Path, at: float | None = None) -> None:
    marker = ms.with_name(ms.name + ".complete")
    marker.write_text("")
    newest = max(p.stat().st_mtime for p in [ms, *ms.iterdir()])
    when = at if at is not None else newest + 1
    os.utime(marker, (when, when))  # written last by the transfer, as a real one would


@pytest.fixture()
def areas(tmp_path):
    return {"landing_dir": str(tmp_path / "landing"), "state_dir": str(tmp_path / "work" / "arrivals"),
            "ledger_dir": str(tmp_path / "work" / "ledger")}


def scan(areas) -> list[str]:
    return [a["ms"] for a in new_arrivals(areas["landing_dir"], state_dir=areas["state_dir"],
                                          ledger_dir=areas["ledger_dir"])]


def test_only_complete_ms_fire_and_each_only_once(areas):
    landing = Path(areas["landing_dir"])
    assert scan(areas) == []  # no landing area yet: wait, do not fail
    fake_ms(landing, "a.ms")
    half = fake_ms(landing, "b.ms", marker=False)
    (landing / "notes.ms").write_text("a file, not an MS")
    assert scan(areas) == ["a.ms"]
    assert scan(areas) == []  # announced: never again for the same transfer
    mark(half)
    assert scan(areas) == ["b.ms"]
    assert sorted(p.name for p in Path(areas["state_dir"]).iterdir()) == ["a.ms.json", "b.ms.json"]


def test_imaged_ms_are_passed_over_and_a_retransfer_fires_again(areas):
    landing = Path(areas["landing_dir"])
    record_imaged(Path(areas["ledger_dir"]), "old.ms", {"run_id": "r0"})
    fake_ms(landing, "old.ms")
    again = fake_ms(landing, "again.ms")
    assert scan(areas) == ["again.ms"]
    # The MS came back (fixed after quarantine, copied again): a new marker is a new arrival.
    mark(again, at=again.with_name("again.ms.complete").stat().st_mtime + 60)
    assert scan(areas) == ["again.ms"]


def test_without_markers_reading_the_ms_never_fires_again_but_rewriting_it_does(areas):
    landing = Path(areas["landing_dir"])
    ms = fake_ms(landing, "q.ms", marker=False)

    def quiet() -> list[str]:
        return [a["ms"] for a in new_arrivals(areas["landing_dir"], state_dir=areas["state_dir"],
                                              ledger_dir=areas["ledger_dir"], completion="quiet_period",
                                              quiet_period_s=0)]

    assert quiet() == ["q.ms"]
    (ms / "table.lock").write_bytes(b"opened")  # what CASA does whenever the run opens the MS
    assert quiet() == []
    (ms / "table.dat").write_bytes(b"a new copy")  # another size: another content identity
    assert quiet() == ["q.ms"]


def test_the_trigger_yields_one_event_per_poll_with_every_new_ms(areas):
    landing = Path(areas["landing_dir"])
    fake_ms(landing, "n1.ms")
    fake_ms(landing, "n2.ms")
    trigger = LandingAreaTrigger(**areas, poll_interval=0.05)
    classpath, kwargs = trigger.serialize()
    assert classpath == "pclean_provider.triggers.landing.LandingAreaTrigger"
    rebuilt = LandingAreaTrigger(**kwargs)  # what the triggerer does with the stored kwargs

    async def first_events(n: int) -> list:
        events, stream = [], rebuilt.run()
        try:
            for _ in range(n):
                events.append(await asyncio.wait_for(anext(stream), timeout=10))
        finally:
            await stream.aclose()
        return events

    (event,) = asyncio.run(first_events(1))
    assert event.payload["landing_dir"] == areas["landing_dir"]
    assert [a["ms"] for a in event.payload["arrived"]] == ["n1.ms", "n2.ms"]
    fake_ms(landing, "n3.ms")
    (event,) = asyncio.run(first_events(1))  # a new trigger (a restarted triggerer) knows n1, n2
    assert [a["ms"] for a in event.payload["arrived"]] == ["n3.ms"]


def test_an_asset_watcher_accepts_it():
    from airflow.sdk import Asset, AssetWatcher

    trigger = LandingAreaTrigger(landing_dir="/l", state_dir="/s", ledger_dir="/g")
    asset = Asset(name="p.landing", uri="file:///l", watchers=[AssetWatcher(name="p_landing", trigger=trigger)])
    assert asset.watchers[0].trigger is trigger
