"""`pclean ingest` on real simulated MeasurementSets: a good one, a half-copied one, a broken one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.casa

REPO = Path(__file__).resolve().parents[2]


def pclean(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pclean_provider.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def night(casa_runtime, tmp_path_factory):
    from pclean_provider.casa.simulator import simulate_ms

    root = tmp_path_factory.mktemp("night")
    landing = root / "landing"
    good = simulate_ms(landing / "good.ms", nchan=4, hours=0.25, seed=3).ms
    Path(good + ".complete").write_text("")
    # A copy still in progress: no completion marker yet.
    shutil.copytree(good, landing / "copying.ms")
    # A broken one: complete marker, but its SPECTRAL_WINDOW subtable never arrived.
    broken = landing / "broken.ms"
    shutil.copytree(good, broken)
    shutil.rmtree(broken / "SPECTRAL_WINDOW")
    (landing / "broken.ms.complete").write_text("")
    return root


def test_landing_area_scan_accepts_quarantines_and_waits(night):
    report_file = night / "report.json"
    proc = pclean("ingest", str(night / "landing"), "--report", str(report_file), cwd=night)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    assert [m["name"] for m in report["accepted"]] == ["good.ms"]
    assert [m["name"] for m in report["incomplete"]] == ["copying.ms"]
    (q,) = report["quarantined"]
    assert q["name"] == "broken.ms" and "SPECTRAL_WINDOW" in q["reason"]
    assert (night / "quarantine" / "broken.ms" / "table.dat").exists()
    assert "SPECTRAL_WINDOW" in json.loads(Path(q["reason_path"]).read_text())["reason"]
    meta = json.loads(Path(report["accepted"][0]["metadata_path"]).read_text())
    assert meta["nrows"] > 0 and meta["spws"][0]["nchan"] == 4
    assert meta["fields"][0]["ra_deg"] is not None and meta["antennas"]
    assert meta["time_end_mjd_s"] > meta["time_start_mjd_s"]
    assert not list(night.glob("casa-*.log")), "CASA's log must not land in the working directory"
    assert "accepted     good.ms" in proc.stdout


def test_explicit_vis_with_missing_field_is_refused_with_exit_3(night):
    good = night / "landing" / "good.ms"
    proc = pclean("ingest", "--vis", str(good), "--field", "NOPE", "--metadata-dir", str(night / "m2"), cwd=night)
    assert proc.returncode == 3
    assert "field 'NOPE' does not exist" in proc.stderr
    assert good.exists()


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_selection_typo_leaves_the_landing_area_as_it_was(night):
    landing = night / "landing"
    before = _state(landing)
    quarantined = sorted(p.name for p in (night / "quarantine").glob("*")) if (night / "quarantine").exists() else []
    proc = pclean("ingest", str(landing), "--field", "NGC_TYPO", "--report", str(night / "typo.json"), cwd=night)
    assert proc.returncode == 2, proc.stderr
    assert "field 'NGC_TYPO' does not exist" in proc.stderr and "no MeasurementSet was moved" in proc.stderr
    assert _state(landing) == before
    now = sorted(p.name for p in (night / "quarantine").glob("*")) if (night / "quarantine").exists() else []
    assert now == quarantined


def test_fingerprint_survives_casa_reading_and_catches_a_redo_copy(night, tmp_path):
    from pclean_provider.pipeline import ingest

    landing = tmp_path / "landing"
    ms = landing / "redo.ms"
    shutil.copytree(night / "landing" / "good.ms", ms)
    Path(str(ms) + ".complete").write_text("")
    report_file = tmp_path / "r.json"
    proc = pclean("ingest", str(landing), "--report", str(report_file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (accepted,) = json.loads(report_file.read_text())["accepted"]
    # CASA opened every table (its lock files were touched): still the MS ingest checked, still complete.
    ingest.verify_against_metadata(ms, accepted["metadata_path"], "imaging")
    assert ingest.is_complete(ms, "marker", ".complete", 0)[0]
    # A redo is copied over it (keeping the source's mtimes, as rsync -a does); the old marker stays:
    # not complete, and imaging refuses the old record.
    shutil.rmtree(ms / "ANTENNA")
    shutil.copytree(night / "landing" / "good.ms" / "ANTENNA", ms / "ANTENNA")
    complete, why = ingest.is_complete(ms, "marker", ".complete", 0)
    assert not complete and "older than files of the MS" in why
    # The same data again is the same MS; a half-copied table file is not.
    ingest.verify_against_metadata(ms, accepted["metadata_path"], "imaging")
    half = ms / "ANTENNA" / "table.f0"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    with pytest.raises(ingest.MsChangedError, match="changed since ingest"):
        ingest.verify_against_metadata(ms, accepted["metadata_path"], "imaging")


def test_landing_names_never_share_products_hold_back_the_night_or_steer_qa(night, tmp_path):
    """Real MSs under awkward names: two that sanitise alike, one 240 characters long, a symlink."""
    from pclean_provider.dags.tasks.prepare import _target_items
    from pclean_provider.pipeline.pipeline_template import load_templates
    from pclean_provider.pipeline.run_settings import settings_for_run

    landing = tmp_path / "landing"
    landing.mkdir()
    good = night / "landing" / "good.ms"
    for name in ("a b.ms", "a_b.ms", "n" * 237 + ".ms"):
        shutil.copytree(good, landing / name)
        (landing / (name + ".complete")).write_text("")
    (landing / "linked.ms").symlink_to(good, target_is_directory=True)
    (landing / "linked.ms.complete").write_text("")
    # A truth file arriving with the data: it must not steer QA.
    (landing / "a_b.truth.json").write_text(json.dumps({"sources": [{"ra_deg": 0, "dec_deg": 0, "flux_jy": 99}]}))
    report_file = tmp_path / "report.json"
    proc = pclean("ingest", str(landing), "--report", str(report_file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    assert sorted(m["name"] for m in report["accepted"]) == ["a b.ms", "a_b.ms"]
    refused = {r["name"]: r["why"] for r in report["refused"]}
    assert "symbolic link" in refused["linked.ms"] and "240 bytes" in refused["n" * 237 + ".ms"]
    assert not report["quarantined"] and good.is_dir() and (landing / "linked.ms").is_symlink()

    (t,) = [t for t in load_templates() if t.dag_id == "nightly_cube_imaging"]
    s = settings_for_run(t, {}, "manual__1", data_root=tmp_path)
    plan = {"ms": "", "kind": "cube", "telescope": "", "skipped": [],
            "targets": [{"slug": "target", "label": "target", "parameters": {}}]}
    items = [item for m in report["accepted"] for item in _target_items(
        t, s, {"name": m["name"], "vis": m["path"], "metadata_path": m["metadata_path"]}, plan)]
    for key in ("product_id", "product_dir", "imagename", "review_folder"):
        assert len({item[key] for item in items}) == 2, [item[key] for item in items]
    # An MS 'a' with targets 'b' and 'c' beside the MS 'a_b': four products, four archive ids.
    two_targets = {**plan, "targets": [{"slug": slug, "label": slug, "parameters": {}} for slug in ("b", "c")]}
    accepted_a_b = next(m for m in report["accepted"] if m["name"] == "a_b.ms")
    items += _target_items(t, s, {"name": "a.ms", "vis": accepted_a_b["path"],
                                  "metadata_path": accepted_a_b["metadata_path"]}, two_targets)
    for key in ("product_id", "product_dir", "imagename", "review_folder"):
        assert len({item[key] for item in items}) == 4, [item[key] for item in items]
    assert "a_b_cube" in {item["product_id"] for item in items}
    assert not [item for item in items if item.get("truth")]
