"""MeasurementSet metadata read from the simulator's output, and clear errors for non-MS paths."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.casa


def test_small_ms_metadata(small_ms):
    from pclean_provider.casa.msinfo import MsMetadata, read_ms_metadata

    meta = read_ms_metadata(small_ms.ms)
    assert meta.path == small_ms.ms
    assert meta.nrows == small_ms.nrows == 7920
    assert meta.size_bytes > 1_000_000
    [spw] = meta.spws
    assert spw.nchan == 32
    # 32 x 1 MHz channels centred on 1.4 GHz: channel centres 1384.5 ... 1415.5 MHz.
    assert spw.first_freq_hz == pytest.approx(1384.5e6)
    assert spw.last_freq_hz == pytest.approx(1415.5e6)
    assert spw.chan_width_hz == pytest.approx(1e6)
    assert spw.total_bandwidth_hz == pytest.approx(32e6)
    assert spw.frame == "TOPO"
    [field] = meta.fields
    assert (field.ra_deg, field.dec_deg) == (pytest.approx(180.0), pytest.approx(40.0))
    assert len(meta.antennas) == 12 and len(set(meta.antennas)) == 12
    assert meta.telescope == "VLA"
    assert meta.observation_ids == [0]
    assert meta.data_columns == ["DATA"]
    assert meta.correlations == ["RR", "LL"]
    # 120 integrations of 30 s: first and last time stamps are 119 x 30 s apart.
    assert meta.time_end_mjd_s - meta.time_start_mjd_s == pytest.approx(119 * 30.0, abs=1e-3)
    assert meta.time_start_utc.startswith("2024-03-20T") and meta.time_start_utc.endswith("Z")
    assert meta.time_start_utc < meta.time_end_utc
    # Crosses process boundaries as JSON.
    again = MsMetadata.model_validate_json(meta.model_dump_json())
    assert again == meta
    assert json.loads(meta.model_dump_json())["spws"][0]["nchan"] == 32


def test_two_spw_metadata(two_spw_ms):
    from pclean_provider.casa.msinfo import read_ms_metadata

    meta = read_ms_metadata(two_spw_ms.ms)
    assert [s.id for s in meta.spws] == [0, 1]
    assert [s.nchan for s in meta.spws] == [8, 8]
    assert meta.total_channels == 16
    # Contiguous windows: the second starts one channel after the first ends.
    assert meta.spws[1].first_freq_hz - meta.spws[0].last_freq_hz == pytest.approx(1e6)
    assert (meta.spws[0].first_freq_hz + meta.spws[1].last_freq_hz) / 2 == pytest.approx(1.4e9)
    assert meta.nrows == two_spw_ms.nrows == 2 * 66 * 120


@pytest.mark.parametrize("kind", ["missing", "file", "plain_dir", "other_table"])
def test_not_a_measurement_set(kind, tmp_path, small_ms):
    from pclean_provider.casa.msinfo import NotAMeasurementSetError, read_ms_metadata

    path = {
        "missing": tmp_path / "nothing.ms",
        "file": tmp_path / "notes.txt",
        "plain_dir": tmp_path / "folder.ms",
        # A casacore table that is not an MS: the simulator's component list.
        "other_table": small_ms.componentlist,
    }[kind]
    if kind == "file":
        path.write_text("not a table")
    if kind == "plain_dir":
        path.mkdir()
    with pytest.raises(NotAMeasurementSetError) as info:
        read_ms_metadata(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)


def test_damaged_ms_is_reported(tmp_path, small_ms):
    import shutil

    from pclean_provider.casa.msinfo import NotAMeasurementSetError, read_ms_metadata

    broken = tmp_path / "broken.ms"
    shutil.copytree(small_ms.ms, broken)
    (broken / "table.dat").write_bytes(b"garbage")
    with pytest.raises(NotAMeasurementSetError, match="broken.ms"):
        read_ms_metadata(broken)


def test_an_ms_another_process_holds_write_locked_is_read_without_waiting(small_ms, tmp_path):
    """A real second process holds the MS's write lock for good (a transfer still writing, a hung CASA
    session): the metadata read (ingest's, plan's) must not wait for it."""
    import shutil
    import subprocess
    import sys

    from pclean_provider.casa.ms_survey import survey_ms
    from pclean_provider.casa.msinfo import read_ms_metadata
    from pclean_provider.casa.runtime import casa_env

    ms = tmp_path / "locked.ms"
    shutil.copytree(small_ms.ms, ms)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, casatools; tb = casatools.table(); "
         "tb.open(sys.argv[1], nomodify=False, lockoptions={'option': 'permanentwait'}); tb.lock(write=True); "
         "print('locked', flush=True); sys.stdin.read()", str(ms)],
        env={**os.environ, **casa_env()}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Before the fix this waited for the lock for ever (the test's timeout ended it).
        meta = read_ms_metadata(ms)
        assert meta.nrows == small_ms.nrows
        assert survey_ms(ms).fields
    finally:
        holder.kill()
        holder.wait()
