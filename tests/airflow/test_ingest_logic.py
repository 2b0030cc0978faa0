"""Ingest rules without CASA: completeness, quarantine with a reason, the imaged ledger, selections.

The metadata reader is replaced by a function returning what read_ms_metadata would, because
these tests are about the decisions ingest takes; tests/airflow/test_ingest_casa.py opens real MSs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pclean_provider.pipeline import ingest
from pclean_provider.pipeline.notify import notify_task_failure, read_notifications
from pclean_provider.pipeline.pipeline_template import load_templates

GOOD = {"nrows": 100, "size_bytes": 1234, "spws": [{"id": 0, "nchan": 8}],
        "fields": [{"id": 0, "name": "target"}]}


def fake_ms(landing: Path, name: str, marker: bool = True) -> Path:
    ms = landing / name
    (ms / "ANTENNA").mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"x")
    (ms / "ANTENNA" / "table.dat").write_bytes(b"y")
    if marker:
        ingest.marker_path(ms, ".complete").write_text("")
    return ms


def reader_for(table: dict[str, dict | Exception]):
    def read(path: str):
        value = table[Path(path).name]
        if isinstance(value, Exception):
            raise value
        return value
    return read


def run(tmp_path, reader, **kw):
    return ingest.ingest_landing_area(
        tmp_path / "landing", quarantine_dir=tmp_path / "quarantine", metadata_dir=tmp_path / "meta",
        ledger_dir=tmp_path / "ledger", reader=reader, **kw)


def test_marker_policy_takes_only_finished_transfers(tmp_path):
    fake_ms(tmp_path / "landing", "a.ms")
    fake_ms(tmp_path / "landing", "copying.ms", marker=False)
    report = run(tmp_path, reader_for({"a.ms": GOOD}))
    assert [m.name for m in report.accepted] == ["a.ms"]
    assert [m.name for m in report.incomplete] == ["copying.ms"]
    assert "copying.ms.complete" in report.incomplete[0].why
    meta = json.loads(Path(report.accepted[0].metadata_path).read_text())
    assert meta["nrows"] == 100 and meta["fields"][0]["name"] == "target"


def test_quiet_period_policy_waits_for_changes_to_stop(tmp_path):
    ms = fake_ms(tmp_path / "landing", "b.ms", marker=False)
    now = time.time()
    report = run(tmp_path, reader_for({"b.ms": GOOD}), completion="quiet_period", quiet_period_s=60, now=now)
    assert [m.name for m in report.incomplete] == ["b.ms"]
    old = now - 3600
    for p in [ms, *ms.rglob("*")]:
        os.utime(p, (old, old))
    report = run(tmp_path, reader_for({"b.ms": GOOD}), completion="quiet_period", quiet_period_s=60, now=now)
    assert [m.name for m in report.accepted] == ["b.ms"]


@pytest.mark.parametrize("broken, expected", [
    (RuntimeError("Table file table.f0 is corrupt"), "cannot be opened: RuntimeError: Table file"),
    ({**GOOD, "nrows": 0}, "no rows"),
    ({**GOOD, "spws": []}, "no spectral windows"),
    ({**GOOD, "fields": []}, "no fields"),
])
def test_broken_ms_is_quarantined_with_its_reason_and_nothing_deleted(tmp_path, broken, expected):
    fake_ms(tmp_path / "landing", "good.ms")
    bad = fake_ms(tmp_path / "landing", "bad.ms")
    report = run(tmp_path, reader_for({"good.ms": GOOD, "bad.ms": broken}))
    assert [m.name for m in report.accepted] == ["good.ms"]
    (q,) = report.quarantined
    assert expected in q.reason
    assert not bad.exists() and not (tmp_path / "landing" / "bad.ms.complete").exists()
    moved = Path(q.quarantine_path)
    assert (moved / "ANTENNA" / "table.dat").read_bytes() == b"y"  # moved whole, not deleted
    assert (tmp_path / "quarantine" / "bad.ms.complete").exists()
    reason = json.loads(Path(q.reason_path).read_text())
    assert expected in reason["reason"] and reason["original_path"] == str(bad)


def test_quarantining_the_same_name_twice_keeps_both(tmp_path):
    for _ in range(2):
        fake_ms(tmp_path / "landing", "bad.ms")
        run(tmp_path, reader_for({"bad.ms": {**GOOD, "nrows": 0}}))
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir() if p.is_dir()) == ["bad.ms", "bad.ms.1"]


def test_not_a_table_is_quarantined_without_opening(tmp_path):
    ms = tmp_path / "landing" / "junk.ms"
    ms.mkdir(parents=True)
    ingest.marker_path(ms, ".complete").write_text("")
    report = run(tmp_path, reader_for({}))
    assert "no table.dat" in report.quarantined[0].reason


def landing_state(landing: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(landing)): (p.stat().st_size, p.stat().st_mtime_ns) for p in landing.rglob("*")}


def test_selection_typo_refuses_the_run_and_moves_nothing(tmp_path):
    fake_ms(tmp_path / "landing", "a.ms")
    fake_ms(tmp_path / "landing", "b.ms")
    before = landing_state(tmp_path / "landing")
    with pytest.raises(ingest.SelectionNotInMs, match=r"spw 3 does not exist.*no MeasurementSet was moved"):
        run(tmp_path, reader_for({"a.ms": GOOD, "b.ms": GOOD}), spw="0:2~5,3", field="target")
    with pytest.raises(ingest.SelectionNotInMs, match="field 'other' does not exist"):
        run(tmp_path, reader_for({"a.ms": GOOD, "b.ms": GOOD}), field="other")
    assert landing_state(tmp_path / "landing") == before
    assert not (tmp_path / "quarantine").exists() and not (tmp_path / "meta").exists()
    report = run(tmp_path, reader_for({"a.ms": GOOD, "b.ms": GOOD}), spw="0", field="0")
    assert [m.name for m in report.accepted] == ["a.ms", "b.ms"]


def test_selection_is_checked_only_on_a_sound_ms(tmp_path):
    # A real defect still quarantines, whatever the selection says.
    fake_ms(tmp_path / "landing", "bad.ms")
    report = run(tmp_path, reader_for({"bad.ms": {**GOOD, "nrows": 0}}), field="other")
    assert "no rows" in report.quarantined[0].reason


def test_a_read_that_fails_once_is_retried(tmp_path):
    fake_ms(tmp_path / "landing", "a.ms")
    calls = []

    def flaky(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return GOOD

    report = run(tmp_path, flaky)
    assert [m.name for m in report.accepted] == ["a.ms"] and len(calls) == 2


@pytest.mark.parametrize("errors", [
    [OSError(5, "Input/output error"), OSError(5, "Input/output error")],
    [RuntimeError("stale file handle"), RuntimeError("table.f1 truncated")],
])
def test_an_unreliable_read_leaves_the_ms_for_the_next_night(tmp_path, errors):
    fake_ms(tmp_path / "landing", "a.ms")
    fake_ms(tmp_path / "landing", "b.ms")
    before = landing_state(tmp_path / "landing")
    pending = list(errors)

    def read(path):
        if Path(path).name == "b.ms" and pending:
            raise pending.pop(0)
        return GOOD

    report = run(tmp_path, read)
    assert [m.name for m in report.accepted] == ["a.ms"]  # the others are imaged
    (unreadable,) = report.unreadable
    assert unreadable.name == "b.ms" and "not quarantined" in unreadable.why
    assert landing_state(tmp_path / "landing") == before and not (tmp_path / "quarantine").exists()


# As casatools words errors of the file system or of locking in the RuntimeErrors it raises.
@pytest.mark.parametrize("message", [
    "Table /landing/b.ms/ANTENNA: cannot open table.f0: Stale file handle",
    "RegularFile::open: /landing/b.ms/table.dat: Permission denied",
    "Table /landing/b.ms cannot be locked: it is used by another process",
    "cannot open SPECTRAL_WINDOW: Input/output error",
])
def test_an_environmental_error_twice_is_not_a_defect_of_the_ms(tmp_path, message):
    fake_ms(tmp_path / "landing", "a.ms")
    b = fake_ms(tmp_path / "landing", "b.ms")

    def read(path):
        if Path(path).name == "b.ms":
            raise RuntimeError(message)  # the same error both times: a stale mount stays stale
        return GOOD

    report = run(tmp_path, read)
    assert not report.quarantined and b.is_dir() and ingest.marker_path(b, ".complete").exists()
    assert [m.name for m in report.accepted] == ["a.ms"]
    (unreadable,) = report.unreadable
    assert message in unreadable.why and "next" in unreadable.why
    # A content defect repeated the same way still quarantines.
    report = run(tmp_path, reader_for({"a.ms": GOOD, "b.ms": RuntimeError("Table /b.ms/FIELD does not exist")}))
    assert [q.name for q in report.quarantined] == ["b.ms"]


def _racing_ingest(root: str, barrier, out) -> None:
    """One DAG's ingest in its own process; both reach the quarantine step at the same moment."""
    landing = Path(root) / "landing"
    last = sorted(p.name for p in landing.glob("*.ms"))[-1]

    def read(path):
        if Path(path).name == last:
            barrier.wait(timeout=60)
        return {**GOOD, "nrows": 0}

    try:
        report = run(Path(root), read)
        out.put(("ok", report.model_dump(mode="json")))
    except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails with it
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def test_two_ingests_quarantine_the_same_landing_area_at_once(tmp_path):
    import multiprocessing

    names = [f"bad{i:02d}.ms" for i in range(12)]
    for name in names:
        fake_ms(tmp_path / "landing", name)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racing_ingest, args=(str(tmp_path), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [status for status, _ in results] == ["ok", "ok"], results
    reports = [r for _, r in results]
    quarantined = [q for r in reports for q in r["quarantined"]]
    # Each MS quarantined exactly once, by one of the two, the other saying who took it.
    assert sorted(q["name"] for q in quarantined) == names
    assert sorted(s["name"] for r in reports for s in r["taken_elsewhere"]) == names
    q_dir = tmp_path / "quarantine"
    assert sorted(p.name for p in q_dir.iterdir() if p.is_dir()) == names
    for q in quarantined:
        assert (Path(q["quarantine_path"]) / "ANTENNA" / "table.dat").read_bytes() == b"y"
        assert json.loads(Path(q["reason_path"]).read_text())["reason"] == q["reason"]
    assert not list((tmp_path / "landing").iterdir())  # nothing left behind: no claim, no marker
    assert not [p for p in q_dir.iterdir() if p.name.startswith(".")]


def rewrite_after(path: Path, reference: Path) -> None:
    """Write `path` until its change time is past `reference`'s (the kernel's clock ticks coarsely)."""
    for _ in range(100_000):
        path.write_bytes(b"redo")
        if path.stat().st_ctime_ns > reference.stat().st_ctime_ns:
            return
    raise AssertionError("the change time did not advance")


def test_leftover_marker_does_not_accept_a_redo_being_copied(tmp_path):
    ms = fake_ms(tmp_path / "landing", "a.ms")
    marker = ingest.marker_path(ms, ".complete")
    # A redo is being copied over the first copy, keeping the source's (old) mtimes as rsync -a does.
    rewrite_after(ms / "ANTENNA" / "table.dat", marker)
    old = time.time() - 3600
    os.utime(ms / "ANTENNA" / "table.dat", (old, old))
    report = run(tmp_path, reader_for({"a.ms": GOOD}))
    assert not report.accepted and "older than files of the MS" in report.incomplete[0].why
    marker.write_text("")  # the redo's transfer finished and wrote its marker
    assert [m.name for m in run(tmp_path, reader_for({"a.ms": GOOD})).accepted] == ["a.ms"]


def test_marker_with_a_fingerprint_must_match_the_ms(tmp_path):
    ms = fake_ms(tmp_path / "landing", "a.ms")
    marker = ingest.marker_path(ms, ".complete")
    marker.write_text(json.dumps({"fingerprint": "sha256:not-this-one"}))
    report = run(tmp_path, reader_for({"a.ms": GOOD}))
    assert "another fingerprint" in report.incomplete[0].why
    marker.write_text(json.dumps({"fingerprint": ingest.ms_fingerprint(ms)}))
    assert [m.name for m in run(tmp_path, reader_for({"a.ms": GOOD})).accepted] == ["a.ms"]


def test_fingerprint_is_recorded_and_a_changed_ms_is_refused(tmp_path):
    ms = fake_ms(tmp_path / "landing", "a.ms")
    (ms / "table.lock").write_bytes(b"lock")
    (accepted,) = run(tmp_path, reader_for({"a.ms": GOOD})).accepted
    meta = json.loads(Path(accepted.metadata_path).read_text())
    assert meta["fingerprint"] == accepted.fingerprint == ingest.ms_fingerprint(ms)
    (ms / "table.lock").write_bytes(b"another reader")  # opening the MS is not changing it
    ingest.verify_against_metadata(ms, accepted.metadata_path, "imaging")
    (ms / "ANTENNA" / "table.dat").write_bytes(b"rewritten by a redo copy")
    with pytest.raises(ingest.MsChangedError, match=r"changed since ingest.*imaging refuses it"):
        ingest.verify_against_metadata(ms, accepted.metadata_path, "imaging")


def test_already_imaged_is_skipped_unless_redo(tmp_path):
    fake_ms(tmp_path / "landing", "a.ms")
    ingest.record_imaged(tmp_path / "ledger", "a.ms", {"archive": "/somewhere"})
    report = run(tmp_path, reader_for({"a.ms": GOOD}))
    assert not report.accepted and report.already_imaged[0].name == "a.ms"
    assert "redo" in report.already_imaged[0].why
    report = run(tmp_path, reader_for({"a.ms": GOOD}), redo=True)
    assert [m.name for m in report.accepted] == ["a.ms"]


def test_explicit_vis_is_checked_but_never_moved(tmp_path):
    ms = fake_ms(tmp_path / "elsewhere", "x.ms", marker=False)
    with pytest.raises(ingest.MsRejected, match="no rows"):
        ingest.ingest_one(ms, metadata_dir=tmp_path / "meta", reader=reader_for({"x.ms": {**GOOD, "nrows": 0}}))
    assert ms.exists()
    with pytest.raises(ingest.MsRejected, match="does not exist"):
        ingest.ingest_one(tmp_path / "nope.ms", metadata_dir=tmp_path / "meta", reader=reader_for({}))


def test_missing_landing_area_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="landing_dir"):
        run(tmp_path, reader_for({}))


def test_failure_notification_names_ms_task_and_reason(tmp_path):
    class TI:
        dag_id, run_id, task_id, map_index, try_number = "nightly_cube_imaging", "r1", "qa", 1, 2
        rendered_map_index = "night2.ms"
        log_url = None

    note = notify_task_failure({"ti": TI(), "exception": ValueError("rms is NaN"), "params": {}},
                               directory=tmp_path)
    assert (note.ms, note.task_id, note.map_index) == ("night2.ms", "qa", 1)
    (saved,) = read_notifications(tmp_path)
    assert saved.reason == "ValueError: rms is NaN" and saved.ms == "night2.ms"


def test_shipped_templates_load_and_name_two_pipelines():
    templates = {t.dag_id: t for t in load_templates()}
    assert set(templates) == {"nightly_cube_imaging", "nightly_continuum_imaging"}
    assert templates["nightly_cube_imaging"].kind == "cube"
    assert templates["nightly_continuum_imaging"].kind == "continuum"


def test_run_conf_keys_override_the_template(tmp_path):
    from pclean_provider.pipeline.run_settings import settings_for_run

    (t,) = [t for t in load_templates() if t.dag_id == "nightly_cube_imaging"]
    base = settings_for_run(t, {}, "scheduled__2026-01-02", data_root=tmp_path)
    assert base.landing_dir == str(tmp_path / "landing") and base.vis is None
    # The shipped templates pin no cluster type: the connection (pclean_dask_default) decides.
    assert base.overrides["specmode"] == "cube" and base.cluster_type is None
    assert "cluster_type" not in base.cluster_overrides()
    # Conf paths lie in the data roots, work_dir and archive_dir in the template's work and archive areas
    # (tests/unit/test_conf_policy.py and test_trigger_form_gaps.py have the refusals); the cluster type is
    # one the template lets a run choose.
    t = t.model_copy(update={"cluster": t.cluster.model_copy(update={"conf_types": ["slurm"]})})
    root = tmp_path.resolve()
    s = settings_for_run(t, {"vis": f"{root}/data/x.ms", "preset": "spectral_line_cube", "overrides": {"nchan": 16},
                             "work_dir": f"{root}/work/w", "archive_dir": "archive/a", "cluster": "slurm",
                             "cluster_options": {"nworkers": 8}, "redo": True, "qa_min_score": 0.9},
                         "manual__1", data_root=root)
    assert (s.vis, s.preset, s.work_dir, s.archive_dir, s.redo, s.qa_min_score) == (
        f"{root}/data/x.ms", "spectral_line_cube", f"{root}/work/w", f"{root}/archive/a", True, 0.9)
    assert s.overrides["nchan"] == 16 and s.overrides["specmode"] == "cube"  # merged, not replaced
    assert s.cluster_overrides() == {"cluster_type": "slurm", "nworkers": 8}
    assert s.run_dir == f"{root}/work/w/nightly_cube_imaging/runs/manual__1"
    assert settings_for_run(t, {"preset": "none"}, "r", data_root=tmp_path).preset is None


def test_failure_notification_finds_the_ms_of_an_operator_task(tmp_path):
    class TI:
        dag_id, run_id, task_id, map_index, try_number = "nightly_cube_imaging", "r2", "image_subcube", 3, 1
        rendered_map_index = "ch 4-7 1.400505-1.403505 GHz"
        log_url = None

    class SubcubeTask:
        spec = {"index": 1, "vis": "/data/landing/night_b.ms", "imagename": "/w/night_b.cube.part1"}

    note = notify_task_failure({"ti": TI(), "task": SubcubeTask(), "exception": RuntimeError("worker lost")},
                               directory=tmp_path)
    assert (note.ms, note.task_id, note.reason) == ("night_b.ms", "image_subcube", "RuntimeError: worker lost")


def test_a_name_too_long_is_refused_and_the_night_goes_on(tmp_path):
    fake_ms(tmp_path / "landing", "a.ms")
    long = fake_ms(tmp_path / "landing", "n" * 237 + ".ms")  # 240 characters, as a transfer may name it
    report = run(tmp_path, reader_for({"a.ms": GOOD, long.name: GOOD}))
    assert [m.name for m in report.accepted] == ["a.ms"]
    (refused,) = report.refused
    assert refused.name == long.name and "240 bytes" in refused.why and "rename it" in refused.why
    assert long.is_dir() and not report.quarantined


def test_a_symlinked_ms_is_refused_never_followed(tmp_path):
    elsewhere = fake_ms(tmp_path / "elsewhere", "real.ms", marker=False)
    link = tmp_path / "landing" / "linked.ms"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    ingest.marker_path(link, ".complete").write_text("")
    fake_ms(tmp_path / "landing", "a.ms")
    # Broken, were it read: a followed link would be quarantined, its target moved or copied away.
    report = run(tmp_path, reader_for({"a.ms": GOOD, "linked.ms": {**GOOD, "nrows": 0}}))
    assert [m.name for m in report.accepted] == ["a.ms"] and not report.quarantined
    (refused,) = report.refused
    assert refused.name == "linked.ms" and "symbolic link" in refused.why and "copy the MeasurementSet" in refused.why
    assert link.is_symlink() and (elsewhere / "ANTENNA" / "table.dat").read_bytes() == b"y"
