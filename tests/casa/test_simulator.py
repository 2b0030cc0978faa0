"""The simulator: determinism, truth file, bad input, the CLI, and that tclean recovers the sky.

Tolerances: the injected 1 Jy point sits at the phase centre, exactly on the image's reference
pixel, where the primary beam is 1 and the mfs image is referenced to the truth's ref_freq_hz;
after CLEAN the peak must come back within 5 % (noise and sidelobes of the other sources
contribute well under 1 %, so a wrong flux scale, spectral reference or position would fail it).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.casa

TINY = dict(antennas=5, nchan=4, hours=0.1, integration_s=30.0)


def _data(ms: str) -> np.ndarray:
    import casatools

    tb = casatools.table()
    tb.open(ms)
    try:
        return tb.getcol("DATA")
    finally:
        tb.close()


def test_default_result(small_ms):
    from pathlib import Path

    r = small_ms
    for p in (r.ms, r.truth, r.componentlist):
        assert Path(p).is_absolute() and Path(p).exists()
    # 12 antennas -> 66 baselines, 1 h at 30 s -> 120 integrations.
    assert r.nrows == 66 * 120
    assert (r.nchan, r.nspw, r.nfields) == (32, 1, 1)
    assert 64 <= r.suggested_imsize <= 256
    cell = float(r.suggested_cell.removesuffix("arcsec"))
    # The cell samples the resolution with at least 4 pixels per beam.
    assert r.beam_estimate_arcsec / cell >= 4.0
    # No scratch columns: like raw telescope data, DATA only.
    import casatools

    tb = casatools.table()
    tb.open(r.ms)
    try:
        cols = set(tb.colnames())
    finally:
        tb.close()
    assert "DATA" in cols and "CORRECTED_DATA" not in cols and "MODEL_DATA" not in cols


def test_truth_file_matches_component_list(small_ms):
    import casatools

    truth = json.loads(open(small_ms.truth).read())
    assert truth["ref_freq_hz"] == 1.4e9
    assert truth["phase_center"]["ra_deg"] == pytest.approx(180.0)
    assert truth["phase_center"]["dec_deg"] == pytest.approx(40.0)
    lo, hi = truth["freq_range_hz"]
    assert (lo + hi) / 2 == pytest.approx(1.4e9)
    by_name = {s["name"]: s for s in truth["sources"]}
    assert set(by_name) == {"point", "gaussian", "weak_point"}
    point, gauss = by_name["point"], by_name["gaussian"]
    assert point["shape"] == "point" and point["flux_jy"] == 1.0 and point["spectral_index"] == -0.7
    assert gauss["shape"] == "gaussian"
    assert (gauss["major_arcsec"], gauss["minor_arcsec"], gauss["pa_deg"]) == (60.0, 40.0, 30.0)
    assert truth["imaging_hint"]["imsize"] == small_ms.suggested_imsize

    cl = casatools.componentlist()
    cl.open(small_ms.componentlist)
    try:
        assert cl.length() == len(truth["sources"])
        for i, src in enumerate(truth["sources"]):
            direction = cl.getrefdir(i)
            assert math.degrees(direction["m0"]["value"]) % 360 == pytest.approx(src["ra_deg"], abs=1e-9)
            assert math.degrees(direction["m1"]["value"]) == pytest.approx(src["dec_deg"], abs=1e-9)
            assert cl.getfluxvalue(i)[0] == pytest.approx(src["flux_jy"])
            assert cl.getspectrum(i)["type"] == "Spectral Index"
    finally:
        cl.done()


def test_same_seed_same_data_other_seed_other_noise(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import simulate_ms

    a = simulate_ms(tmp_path / "a.ms", seed=3, noise_jy=0.1, **TINY)
    b = simulate_ms(tmp_path / "b.ms", seed=3, noise_jy=0.1, **TINY)
    c = simulate_ms(tmp_path / "c.ms", seed=4, noise_jy=0.1, **TINY)
    clean = simulate_ms(tmp_path / "clean.ms", seed=3, noise_jy=0.0, **TINY)
    da, db, dc, d0 = (_data(r.ms) for r in (a, b, c, clean))
    assert da.shape == d0.shape and da.size > 0
    np.testing.assert_array_equal(da, db)
    assert not np.array_equal(da, dc)
    # The noise is what was asked for: rms 0.1 Jy per real/imaginary part.
    noise = (da - d0).ravel()
    assert np.std(noise.real) == pytest.approx(0.1, rel=0.1)
    assert np.std(noise.imag) == pytest.approx(0.1, rel=0.1)
    assert json.loads(open(a.truth).read())["simulation"]["seed"] == 3


def test_tclean_recovers_the_point_source(small_ms, tmp_path):
    import casatasks
    import casatools

    from pclean_provider.casa.runtime import set_casa_log

    set_casa_log(tmp_path / "tclean.log")
    imagename = str(tmp_path / "img")
    casatasks.tclean(
        vis=small_ms.ms, imagename=imagename, imsize=small_ms.suggested_imsize, cell=small_ms.suggested_cell,
        phasecenter=small_ms.phasecenter, specmode="mfs", gridder="standard", deconvolver="hogbom",
        weighting="briggs", robust=0.5, niter=300, threshold="2mJy", pbcor=True,
    )
    truth = json.loads(open(small_ms.truth).read())
    ia = casatools.image()
    ia.open(imagename + ".image")
    try:
        px = ia.getchunk()[:, :, 0, 0]
        cs = ia.coordsys()
        reffreq = cs.referencevalue()["numeric"][3]
        # The brightest pixel is the injected point, at the image centre (the phase centre).
        peak_xy = np.unravel_index(np.argmax(px), px.shape)
        assert tuple(int(v) for v in peak_xy) == (small_ms.suggested_imsize // 2,) * 2
        for src in truth["sources"]:
            if src["shape"] != "point":
                continue
            world = [math.radians(src["ra_deg"]), math.radians(src["dec_deg"]), 1.0, reffreq]
            x, y = (int(round(v)) for v in cs.topixel(world)["numeric"][:2])
            peak = float(px[x - 1 : x + 2, y - 1 : y + 2].max())
            tol = 0.05 if src["name"] == "point" else 0.10
            assert peak == pytest.approx(src["flux_jy"], rel=tol), src["name"]
        cs.done()
    finally:
        ia.close()
    # TOPO data imaged in LSRK: the reference moves by the Doppler shift (|v| < 30 km/s, 1e-4).
    assert reffreq == pytest.approx(truth["ref_freq_hz"], rel=1e-4)


def test_spectral_line_shows_in_a_cube(casa_runtime, tmp_path):
    import casatasks
    import casatools

    from pclean_provider.casa.runtime import set_casa_log
    from pclean_provider.casa.simulator import simulate_ms

    r = simulate_ms(
        tmp_path / "line.ms", antennas=8, nchan=12, hours=0.5, seed=5, noise_jy=0.001,
        sources=[{"name": "faint", "flux_jy": 0.01}],
        spectral_line={"peak_flux_jy": 0.8, "fwhm_hz": 3e6, "offset_ra_arcsec": 40.0, "offset_dec_arcsec": 0.0},
        freq_frame="LSRK",
    )
    truth = json.loads(open(r.truth).read())
    line = next(s for s in truth["sources"] if s["line"])
    assert line["line"]["center_freq_hz"] == 1.4e9 and line["line"]["fwhm_hz"] == 3e6
    set_casa_log(tmp_path / "tclean.log")
    imagename = str(tmp_path / "cube")
    # The dirty cube: for an isolated point its peak is the source's flux (PSF peak 1), which tests
    # the simulated spectrum without CLEAN's restoring-beam effects on a sparse 8-antenna PSF.
    casatasks.tclean(vis=r.ms, imagename=imagename, imsize=64, cell=r.suggested_cell, specmode="cube",
                     gridder="standard", niter=0)
    ia = casatools.image()
    ia.open(imagename + ".image")
    try:
        cube = ia.getchunk()[:, :, 0, :]
        cs = ia.coordsys()
        x, y = (int(round(v)) for v in cs.topixel(
            [math.radians(line["ra_deg"]), math.radians(line["dec_deg"]), 1.0, 1.4e9])["numeric"][:2])
        freqs = [cs.toworld([0, 0, 0, k])["numeric"][3] for k in range(cube.shape[2])]
        cs.done()
    finally:
        ia.close()
    spectrum = cube[x - 1 : x + 2, y - 1 : y + 2, :].max(axis=(0, 1))
    sigma = 3e6 / (2 * math.sqrt(2 * math.log(2)))
    expected = [0.8 * math.exp(-0.5 * ((f - 1.4e9) / sigma) ** 2) for f in freqs]
    # Line channels follow the Gaussian profile within 5 % of the line peak; far channels are empty.
    assert int(np.argmax(spectrum)) == int(np.argmax(expected))
    np.testing.assert_allclose(spectrum, expected, atol=0.05 * 0.8)


def test_sources_from_yaml_and_mosaic_with_spaced_spws(casa_runtime, tmp_path):
    from pclean_provider.casa.msinfo import read_ms_metadata
    from pclean_provider.casa.simulator import simulate_ms

    src = tmp_path / "sky.yaml"
    src.write_text(
        "sources:\n"
        "  - {name: a, flux_jy: 2.0, spectral_index: -0.5, offset_ra_arcsec: 30, offset_dec_arcsec: -20}\n"
        "  - {name: b, shape: gaussian, flux_jy: 1.0, ra_deg: 180.01, dec_deg: 40.01,"
        " major_arcsec: 20, minor_arcsec: 10, pa_deg: 45}\n"
    )
    r = simulate_ms(tmp_path / "mos.ms", fields=3, nspw=2, spw_gap_hz=4e6, sources=src, seed=1, **TINY)
    truth = json.loads(open(r.truth).read())
    assert [s["name"] for s in truth["sources"]] == ["a", "b"]
    assert truth["sources"][1]["ra_deg"] == pytest.approx(180.01)
    meta = read_ms_metadata(r.ms)
    assert len(meta.fields) == 3 == r.nfields
    assert len({(round(f.ra_deg, 6), round(f.dec_deg, 6)) for f in meta.fields}) == 3
    s0, s1 = meta.spws
    assert s1.first_freq_hz - s0.last_freq_hz == pytest.approx(4e6 + 1e6)
    # Every field was observed in every spw.
    import casatools

    tb = casatools.table()
    tb.open(r.ms)
    try:
        pairs = {(int(f), int(d)) for f, d in zip(tb.getcol("FIELD_ID"), tb.getcol("DATA_DESC_ID"), strict=True)}
    finally:
        tb.close()
    assert pairs == {(f, d) for f in range(3) for d in range(2)}
    # The suggested image covers the mosaic's pointings.
    cell = float(r.suggested_cell.removesuffix("arcsec"))
    far = max(math.hypot(f["offset_ra_arcsec"], f["offset_dec_arcsec"]) for f in truth["fields"])
    assert r.suggested_imsize * cell / 2 > far


def test_bad_input_is_named_and_nothing_is_overwritten(casa_runtime, tmp_path):
    from pclean_provider.casa.simulator import SimulationError, simulate_ms

    with pytest.raises(SimulationError, match="nchan"):
        simulate_ms(tmp_path / "x.ms", nchan=0)
    with pytest.raises(SimulationError, match="antennas"):
        simulate_ms(tmp_path / "x.ms", antennas=2)
    with pytest.raises(SimulationError, match="sources"):
        simulate_ms(tmp_path / "x.ms", sources=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{not json")
    with pytest.raises(SimulationError, match="bad.json"):
        simulate_ms(tmp_path / "x.ms", sources=bad)
    with pytest.raises(SimulationError, match="major_arcsec"):
        simulate_ms(tmp_path / "x.ms", sources=[{"name": "g", "shape": "gaussian", "flux_jy": 1}])
    assert not (tmp_path / "x.ms").exists()

    first = simulate_ms(tmp_path / "keep.ms", seed=1, **TINY)
    before = _data(first.ms)
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_ms(tmp_path / "keep.ms", seed=2, **TINY)
    np.testing.assert_array_equal(_data(first.ms), before)
    second = simulate_ms(tmp_path / "keep.ms", seed=2, overwrite=True, **TINY)
    assert not np.array_equal(_data(second.ms), before)
    # No temporary folders are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "keep.cl", "keep.ms", "keep.truth.json"]


def test_cli_simulate(casa_runtime, tmp_path, capsys):
    from pclean_provider.cli.main import main

    out = tmp_path / "cli.ms"
    argv = ["simulate", str(out), "--antennas", "5", "--nchan", "4", "--hours", "0.1", "--seed", "9",
            "--spw-width", "8MHz", "--line", "peak_flux_jy=0.3,fwhm_hz=2MHz"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert str(tmp_path / "cli.truth.json") in printed
    assert "cell=" in printed and "imsize=" in printed
    truth = json.loads((tmp_path / "cli.truth.json").read_text())
    assert truth["spws"][0]["chan_width_hz"] == 2e6
    assert truth["simulation"]["seed"] == 9
    assert any(s["line"] and s["line"]["peak_flux_jy"] == 0.3 for s in truth["sources"])
    # Existing output: refused without --overwrite, with a message naming the fix.
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ms"] == str(out) and result["nrows"] > 0
