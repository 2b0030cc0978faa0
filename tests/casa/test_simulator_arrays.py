"""The simulator's observatory variety: real array layouts, several targets with intents, flags, spw widths.

The default MeasurementSet is pinned to values the simulator wrote before these options existed,
so tests and cached references built on it stay valid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

# Small enough that each simulation takes well under a second or two.
SMALL = dict(nchan=4, hours=0.5, integration_s=120.0, noise_jy=0.0)

CALIBRATED_NIGHT = [
    {"name": "J1331+3030", "intents": ["CALIBRATE_FLUX", "CALIBRATE_BANDPASS"], "offset_ra_deg": 5.0,
     "offset_dec_deg": -3.0, "flux_jy": 15.0},
    {"name": "J1150+4100", "intents": ["CALIBRATE_PHASE", "CALIBRATE_AMPLI"], "offset_ra_deg": -2.0,
     "offset_dec_deg": 1.0, "flux_jy": 2.0},
    {"name": "NGC1", "intents": ["OBSERVE_TARGET"], "pointings": 3},
    {"name": "NGC2", "offset_ra_deg": 1.0, "sources": [{"name": "s", "flux_jy": 0.3, "offset_ra_arcsec": 20.0}]},
]


def _cols(ms: str, *names: str, sub: str = "") -> list[np.ndarray]:
    import casatools

    tb = casatools.table()
    tb.open(ms + (f"/{sub}" if sub else ""))
    try:
        return [tb.getcol(n) for n in names]
    finally:
        tb.close()


def _nrows(ms: str, sub: str) -> int:
    import casatools

    tb = casatools.table()
    tb.open(f"{ms}/{sub}")
    try:
        return int(tb.nrows())
    finally:
        tb.close()


def _cfg_longest_baseline(name: str) -> float:
    from pclean_provider.casa.simulator import _array_config_dir, parse_array_cfg

    rows = parse_array_cfg((_array_config_dir() / f"{name}.cfg").read_text()).rows
    return max(math.dist(a[:3], b[:3]) for a in rows for b in rows)


@pytest.mark.casa
def test_default_ms_is_what_it_always_was(small_ms):
    ms = small_ms.ms
    assert small_ms.nrows == 7920
    names, stations, dishes = _cols(ms, "NAME", "STATION", "DISH_DIAMETER", sub="ANTENNA")
    assert list(names) == ["N01", "N02", "N03", "N04", "E01", "E02", "E03", "E04", "W01", "W02", "W03", "W04"]
    assert list(stations)[:2] == ["PN01", "PN02"]
    assert set(dishes) == {25.0}
    assert list(_cols(ms, "TELESCOPE_NAME", sub="OBSERVATION")[0]) == ["VLA"]
    assert list(_cols(ms, "CORR_TYPE", sub="POLARIZATION")[0].ravel()) == [5, 8]  # RR LL
    uvw, data, state_id, scan = _cols(ms, "UVW", "DATA", "STATE_ID", "SCAN_NUMBER")
    np.testing.assert_allclose(uvw[:, 0], [-28.23841221, -179.81033697, -21.0405734], atol=1e-6)
    np.testing.assert_allclose(uvw[:, 100], [250.3606147, 925.90546752, 118.72792698], atol=1e-6)
    np.testing.assert_allclose(data[:, 0, 0], [0.5308705 - 0.27667108j, 0.52384365 - 0.28221691j], atol=1e-6)
    assert float(np.hypot(uvw[0], uvw[1]).max()) == pytest.approx(1558.8452811395093, abs=1e-6)
    assert _cols(ms, "CHAN_FREQ", sub="SPECTRAL_WINDOW")[0][0, 0] == 1384500000.0
    assert list(_cols(ms, "NAME", sub="FIELD")[0]) == ["TARGET"]
    # No intents of ours: only the simulator's own generic STATE row, one scan.
    assert list(_cols(ms, "OBS_MODE", sub="STATE")[0]) == ["OBSERVE_TARGET.ON_SOURCE"]
    assert set(state_id) == {0} and set(scan) == {1}
    truth = json.loads(Path(small_ms.truth).read_text())
    assert truth["array"]["name"] is None and truth["array"]["dish_diameter_m"] == 25.0
    assert truth["phase_center"]["dec_deg"] == pytest.approx(40.0)


@pytest.mark.casa
@pytest.mark.parametrize(
    ("array", "antennas", "telescope", "dish", "ref_freq_hz"),
    [("vla.a", None, "VLA", 25.0, 1.5e9), ("alma.cycle10.8", 10, "ALMA", 12.0, 230e9)],
)
def test_real_array_layout(casa_runtime, tmp_path, array, antennas, telescope, dish, ref_freq_hz):
    from pclean_provider.casa.simulator import simulate_ms

    r = simulate_ms(tmp_path / "a.ms", array=array, antennas=antennas, ref_freq_hz=ref_freq_hz,
                    chan_width_hz=ref_freq_hz * 1e-4, **SMALL)
    names, dishes = _cols(r.ms, "NAME", "DISH_DIAMETER", sub="ANTENNA")
    assert list(_cols(r.ms, "TELESCOPE_NAME", sub="OBSERVATION")[0]) == [telescope]
    assert set(dishes) == {dish}
    uvw, data = _cols(r.ms, "UVW", "DATA")
    longest = float(np.sqrt((uvw**2).sum(axis=0)).max())
    # The longest baseline of the configuration survives any antenna selection (UVW is a rotation).
    assert longest == pytest.approx(_cfg_longest_baseline(array), abs=0.5)
    if array == "vla.a":
        assert len(names) == 27 and "W08" in set(names)
        assert 35.0e3 < longest < 37.0e3
        assert list(_cols(r.ms, "CORR_TYPE", sub="POLARIZATION")[0].ravel()) == [5, 8]
    else:
        assert len(names) == 10
        assert 8.0e3 < longest < 9.0e3
        assert list(_cols(r.ms, "CORR_TYPE", sub="POLARIZATION")[0].ravel()) == [9, 12]  # XX YY
    # The default sky's 1 Jy point sits at the phase centre, where the primary beam is 1; the
    # others add at most their 0.7 Jy (at 230 GHz they lie outside ALMA's 25 arcsec beam).
    assert 0.9 < float(np.abs(data).max()) < 1.75
    truth = json.loads(Path(r.truth).read_text())
    assert truth["array"]["dish_diameter_m"] == dish
    pb = 1.13 * 299_792_458.0 / ref_freq_hz / dish * 180 / math.pi * 3600
    assert truth["imaging_hint"]["primary_beam_fwhm_arcsec"] == pytest.approx(pb)
    assert "default" in truth["array"]["primary_beam"]


@pytest.mark.casa
def test_southern_array_default_declination_and_airy_beam(casa_runtime, tmp_path):
    """MeerKAT at -30.7 deg: the default phase centre transits high, and its beam (unknown to
    casatools) is an Airy disk that attenuates an off-axis source instead of zeroing the data."""
    from pclean_provider.casa.simulator import simulate_ms

    pb = 1.13 * 299_792_458.0 / 1.5e9 / 12.0 * 180 / math.pi * 3600
    r = simulate_ms(tmp_path / "mk.ms", array="meerkat", antennas=8, ref_freq_hz=1.5e9,
                    sources=[{"name": "off", "flux_jy": 1.0, "offset_dec_arcsec": 0.5 * pb}], **SMALL)
    truth = json.loads(Path(r.truth).read_text())
    assert truth["phase_center"]["dec_deg"] == pytest.approx(-36.0)
    assert "Airy" in truth["array"]["primary_beam"]
    # Every integration of every baseline is above the elevation limit.
    assert r.nrows == 28 * 15
    amp = float(np.abs(_cols(r.ms, "DATA")[0]).mean())
    assert 0.3 < amp < 0.65  # half a FWHM off axis: about half the flux
    # An ALMA configuration's default declination too.
    a = simulate_ms(tmp_path / "alma.ms", array="alma.cycle10.1.cfg", antennas=6, ref_freq_hz=100e9, **SMALL)
    assert a.phasecenter.endswith("-28d00m00.000s") and a.nrows == 15 * 15


@pytest.mark.casa
@pytest.mark.parametrize(
    ("array", "ref_freq_hz"),
    [(None, 1.5e9), ("vla.d", 6e9), ("vla.c", 33e9), ("alma.cycle10.1", 100e9), ("atca_6a", 6e9),
     ("aca.cycle10", 230e9)],
)
def test_bands(casa_runtime, tmp_path, array, ref_freq_hz):
    from pclean_provider.casa.simulator import simulate_ms

    r = simulate_ms(tmp_path / "b.ms", array=array, antennas=6, ref_freq_hz=ref_freq_hz, nspw=2,
                    spw_chan_widths_hz=[ref_freq_hz * 4e-4, ref_freq_hz * 5e-5],
                    sources=[{"name": "p", "flux_jy": 1.0}], **SMALL)
    freqs, widths = _cols(r.ms, "CHAN_FREQ", "CHAN_WIDTH", sub="SPECTRAL_WINDOW")
    assert list(widths[0]) == pytest.approx([ref_freq_hz * 4e-4, ref_freq_hz * 5e-5])
    lo = freqs[0, 0] - widths[0, 0] / 2
    hi = freqs[-1, 1] + widths[-1, 1] / 2
    assert (lo + hi) / 2 == pytest.approx(ref_freq_hz)
    np.testing.assert_allclose(np.abs(_cols(r.ms, "DATA")[0]), 1.0, rtol=1e-4)
    truth = json.loads(Path(r.truth).read_text())
    assert [s["chan_width_hz"] for s in truth["spws"]] == pytest.approx([ref_freq_hz * 4e-4, ref_freq_hz * 5e-5])


@pytest.mark.casa
def test_targets_with_intents_mosaic_and_one_flagged(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import simulate_ms

    r = simulate_ms(tmp_path / "night.ms", antennas=8, nspw=2, spw_chan_widths_hz=[1e6, 125e3],
                    targets=CALIBRATED_NIGHT, flagged="NGC2", nchan=4, hours=1.0, integration_s=60.0, noise_jy=0.0)
    assert r.nfields == 6
    names, source_id = _cols(r.ms, "NAME", "SOURCE_ID", sub="FIELD")
    assert list(names) == ["J1331+3030", "J1150+4100", "NGC1_00", "NGC1_01", "NGC1_02", "NGC2"]
    assert list(source_id) == [0, 1, 2, 2, 2, 3]  # the mosaic's pointings share one source
    src_names, src_ids = _cols(r.ms, "NAME", "SOURCE_ID", sub="SOURCE")
    assert list(src_names) == ["J1331+3030", "J1150+4100", "NGC1", "NGC2"] and list(src_ids) == [0, 1, 2, 3]
    (modes,) = _cols(r.ms, "OBS_MODE", sub="STATE")
    assert list(modes) == [
        "CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_BANDPASS#ON_SOURCE",
        "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_AMPLI#ON_SOURCE",
        "OBSERVE_TARGET#ON_SOURCE",
    ]
    field, state, scan, time, flag, flag_row, data = _cols(
        r.ms, "FIELD_ID", "STATE_ID", "SCAN_NUMBER", "TIME", "FLAG", "FLAG_ROW", "DATA")
    expected_state = {0: 0, 1: 1, 2: 2, 3: 2, 4: 2, 5: 2}
    assert {int(f): int(s) for f, s in zip(field, state, strict=True)} == expected_state
    # Scans: numbered 1, 2, ... in time, one field each, both spws sharing the number.
    assert sorted(set(scan)) == list(range(1, len(set(scan)) + 1))
    for s in set(scan):
        assert len(set(field[scan == s])) == 1
    firsts = [time[scan == s].min() for s in sorted(set(scan))]
    assert firsts == sorted(firsts)
    # Calibrators interleave with the science pointings, each seen more than once.
    assert [int(field[scan == s][0]) for s in sorted(set(scan))][:7] == [0, 1, 2, 3, 4, 5, 0]
    # Calibrators are points of their flux at their field centre.
    assert np.abs(data[:, :, field == 0]).mean() == pytest.approx(15.0, rel=1e-4)
    assert np.abs(data[:, :, field == 1]).mean() == pytest.approx(2.0, rel=1e-4)
    # Only NGC2 is flagged.
    assert flag[:, :, field == 5].all() and flag_row[field == 5].all()
    assert not flag[:, :, field != 5].any() and not flag_row[field != 5].any()
    (widths,) = _cols(r.ms, "CHAN_WIDTH", sub="SPECTRAL_WINDOW")
    assert list(widths[0]) == [1e6, 125e3]
    truth = json.loads(Path(r.truth).read_text())
    by_name = {t["name"]: t for t in truth["targets"]}
    assert by_name["NGC1"]["field_ids"] == [2, 3, 4] and by_name["NGC2"]["flagged"]
    assert by_name["J1331+3030"]["calibrator"] and not by_name["NGC1"]["calibrator"]
    assert truth["imaging_hint"]["target"] == "NGC1"
    assert {s["target"] for s in truth["sources"]} == {"J1331+3030", "J1150+4100", "NGC1", "NGC2"}


@pytest.mark.casa
def test_fully_flagged_and_intentless(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import simulate_ms

    r = simulate_ms(tmp_path / "flagged.ms", antennas=5, flagged="all", **SMALL)
    flag, flag_row = _cols(r.ms, "FLAG", "FLAG_ROW")
    assert flag.all() and flag_row.all() and r.nrows > 0
    assert json.loads(Path(r.truth).read_text())["simulation"]["flagged"] == "all"
    # Targets without intents: no STATE rows at all, as some real data have.
    r = simulate_ms(tmp_path / "plain.ms", antennas=5, targets=[{"name": "A", "intents": []},
                                                                 {"name": "B", "intents": [], "offset_dec_deg": 2.0}],
                    **SMALL)
    assert _nrows(r.ms, "STATE") == 0
    assert set(_cols(r.ms, "STATE_ID")[0]) == {-1}
    assert not _cols(r.ms, "FLAG")[0].any()


@pytest.mark.casa
def test_bad_options_are_named(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import SimulationError, simulate_ms

    with pytest.raises(SimulationError, match=r"array='nosuch'.*vla\.a"):
        simulate_ms(tmp_path / "x.ms", array="nosuch")
    with pytest.raises(SimulationError, match="coordsys=UTM"):
        simulate_ms(tmp_path / "x.ms", array="carma.a")
    with pytest.raises(SimulationError, match="spw_chan_widths_hz"):
        simulate_ms(tmp_path / "x.ms", nspw=1, spw_chan_widths_hz=[1e6, 125e3])
    with pytest.raises(SimulationError, match=r"flagged='nope'.*TARGET"):
        simulate_ms(tmp_path / "x.ms", flagged="nope", antennas=5, **SMALL)
    with pytest.raises(SimulationError, match="pointings"):
        simulate_ms(tmp_path / "x.ms", fields=3, targets=[{"name": "A"}])
    with pytest.raises(SimulationError, match="intent"):
        simulate_ms(tmp_path / "x.ms", targets=[{"name": "A", "intents": ["calibrate phase"]}])
    with pytest.raises(SimulationError, match="unique"):
        simulate_ms(tmp_path / "x.ms", targets=[{"name": "A"}, {"name": "A"}])
    assert not (tmp_path / "x.ms").exists()


def test_parse_array_cfg_and_antenna_selection():
    from pclean_provider.casa.simulator import SimulationError, parse_array_cfg, select_antennas

    text = (
        "# observatory = ACA\n# coordsys=LOC (local tangent plane)\n# x y z diam station antenna\n"
        "0 0 0 7. N601 CM01 # a comment\n\n100 0 0 7. N602\n-50 10 0 12.\n0 300 0 7. J501 CM04\n"
    )
    parsed = parse_array_cfg(text)
    assert (parsed.observatory, parsed.coordsys) == ("ACA", "LOC")
    assert parsed.rows[0] == (0.0, 0.0, 0.0, 7.0, "CM01", "N601")
    assert parsed.rows[1][4:] == (None, "N602") and parsed.rows[2][3:] == (12.0, None, None)
    with pytest.raises(SimulationError, match="line 2"):
        parse_array_cfg("# coordsys=XYZ\n1 2 three 4\n")
    # A line of antennas: the two ends always stay, the rest spread from the centre outwards.
    positions = [(float(x), 0.0, 0.0) for x in range(-10, 11)]
    picked = select_antennas(positions, 5)
    assert len(picked) == 5 and 0 in picked and 20 in picked
    assert picked == select_antennas(positions, 5)
    assert select_antennas(positions, None) == list(range(21))
    assert select_antennas(positions, 99) == list(range(21))


@pytest.mark.casa
def test_cli_simulate_with_array_targets_and_widths(casa_runtime, tmp_path, capsys):
    from pclean_provider.cli.main import main

    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        "  - {name: J0538-4405, intents: [CALIBRATE_BANDPASS, CALIBRATE_FLUX], offset_ra_deg: 3, flux_jy: 5}\n"
        "  - {name: SCI, intents: [OBSERVE_TARGET], pointings: 2}\n"
    )
    out = tmp_path / "cli.ms"
    argv = ["simulate", str(out), "--array", "alma.cycle10.1", "--antennas", "6", "--nchan", "4", "--hours", "0.3",
            "--integration", "120", "--ref-freq", "100GHz", "--spw-chan-widths", "1MHz,125kHz", "--dec", "-30",
            "--targets", str(targets), "--flagged", "SCI", "--noise", "0", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nspw"] == 2 and result["nfields"] == 3
    truth = json.loads((tmp_path / "cli.truth.json").read_text())
    assert truth["array"]["name"] == "alma.cycle10.1" and truth["array"]["antennas"] == 6
    assert truth["phase_center"]["dec_deg"] == pytest.approx(-30.0)
    assert [s["chan_width_hz"] for s in truth["spws"]] == [1e6, 125e3]
    assert [t["flagged"] for t in truth["targets"]] == [False, True]
    assert main(["simulate", str(tmp_path / "bad.ms"), "--array", "nosuch"]) == 2
    assert "array='nosuch'" in capsys.readouterr().err
