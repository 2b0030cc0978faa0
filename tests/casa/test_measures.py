"""CASA's measures data: a site's own CASA configuration and measures copy are used, and an MS
observed after the measures end is reported by ingest and by `pclean measures status`.

The stale copy is real: the installed measures with the Earth-orientation predictions cut before
the simulated MS's date (2024-03-20), the way a site's copy looks when nobody refreshes it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.casa.test_runtime import _child_env

pytestmark = pytest.mark.casa

CUT_MJD = 60300.0  # 2023-12-22: predictions end three months before the MS was observed


@pytest.fixture(scope="module")
def stale_copy(casa_runtime, tmp_path_factory) -> Path:
    """A measures folder: links to the installed tables, but IERSpredict ends at CUT_MJD."""
    import casatools

    src = Path(casa_runtime.measures_path)
    copy = tmp_path_factory.mktemp("measures") / "site-measures"
    (copy / "geodetic").mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "geodetic":
            (copy / entry.name).symlink_to(entry)
    for entry in (src / "geodetic").iterdir():
        if entry.name != "IERSpredict":
            (copy / "geodetic" / entry.name).symlink_to(entry)
    tb = casatools.table()
    tb.open(str(src / "geodetic" / "IERSpredict"))
    try:
        tb.copy(str(copy / "geodetic" / "IERSpredict"), deep=True, valuecopy=True)
    finally:
        tb.close()
    tb.open(str(copy / "geodetic" / "IERSpredict"), nomodify=False)
    try:
        mjd = tb.getcol("MJD")
        tb.removerows([i for i, m in enumerate(mjd) if m > CUT_MJD])
    finally:
        tb.close()
    return copy


def _pclean(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "pclean_provider.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_installed_measures_dates(casa_runtime):
    from pclean_provider.casa.measures_info import read_status

    status = read_status(casa_runtime.measures_path)
    assert status.eop_measured_until_mjd < status.eop_predicted_until_mjd
    assert status.leap_seconds_table_date and status.leap_seconds_table_date >= "2017-01-01"
    assert any("predicted until" in line for line in status.describe())


def test_stale_site_copy_is_used_and_said(small_ms, stale_copy, tmp_path):
    # The operator's measures copy ([pclean] measures_path) is what CASA uses ...
    env = _child_env(tmp_path / "home", PCLEAN_MEASURES_PATH=str(stale_copy))
    status = _pclean(["measures", "status", "--vis", small_ms.ms], env, tmp_path / "status")
    assert status.returncode == 3, status.stderr
    assert f"measures {stale_copy}" in status.stdout
    assert "predicted until 2023-12-22" in status.stdout
    assert "after the measures' Earth-orientation predictions end (2023-12-22)" in status.stdout
    # ... and ingest accepts the MS but says why its frame conversions may be off.
    ingest = _pclean(["ingest", "--vis", small_ms.ms, "--metadata-dir", str(tmp_path / "meta")], env,
                     tmp_path / "ingest")
    assert ingest.returncode == 0, ingest.stderr
    assert f"warning      {Path(small_ms.ms).name}: the MS was observed until 2024-03-20" in ingest.stdout
    assert "pclean measures update" in ingest.stdout


def test_site_casa_configuration_keeps_its_measures(small_ms, stale_copy, tmp_path):
    # A site whose own casasiteconfig.py names its measures: pclean's generated configuration runs
    # it first and keeps what it chose (and the MS is judged against those measures).
    site = tmp_path / "casasiteconfig.py"
    site.write_text(f"measurespath = {str(stale_copy)!r}\nmeasures_auto_update = False\ndata_auto_update = False\n")
    env = _child_env(tmp_path / "home", CASASITECONFIG=str(site))
    status = _pclean(["measures", "status", "--vis", small_ms.ms], env, tmp_path / "status")
    assert status.returncode == 3, status.stderr
    assert f"measures {stale_copy}" in status.stdout
    # Without a site configuration, the installed measures: the same MS is within them.
    plain = _pclean(["measures", "status", "--vis", small_ms.ms], _child_env(tmp_path / "home2"), tmp_path / "p")
    assert plain.returncode == 0, plain.stderr
    assert "within the measures" in plain.stdout and str(stale_copy) not in plain.stdout


def test_update_without_a_site_copy_is_refused(tmp_path):
    env = _child_env(tmp_path / "home")
    proc = _pclean(["measures", "update"], env, tmp_path)
    assert proc.returncode == 2
    assert "give --path DIR or set [pclean] measures_path" in proc.stderr


def test_a_measures_path_without_tables_names_the_setting(tmp_path):
    env = _child_env(tmp_path / "home", PCLEAN_MEASURES_PATH=str(tmp_path / "empty"))
    proc = _pclean(["measures", "status"], env, tmp_path)
    assert proc.returncode == 2
    assert "PCLEAN_MEASURES_PATH" in proc.stderr and "no 'geodetic' folder" in proc.stderr
