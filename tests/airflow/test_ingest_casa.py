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
