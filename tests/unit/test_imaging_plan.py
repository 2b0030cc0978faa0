"""The imaging plan's rules on made-up MeasurementSets (no CASA): targets, cell, size, gridder, budget."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pclean_provider.casa.ms_survey import FieldFacts, MsSurvey, SpwFacts
from pclean_provider.config.plan_policy import PlanPolicy
from pclean_provider.engine.beam_estimate import ARCSEC_PER_RAD, estimate_beam, imaging_weights
from pclean_provider.engine.imaging_plan import (
    fast_fft_size,
    pb_radius_arcsec,
    plan_from_survey,
    round_cell_arcsec,
    selection_ids,
    source_stem,
)

C = 299_792_458.0


def disk_uv(radius_m: float, n: int = 20000, seed: int = 1) -> np.ndarray:
    """uvw (metres) filling a disk uniformly, w small."""
    rng = np.random.default_rng(seed)
    r = radius_m * np.sqrt(rng.random(n))
    phi = 2 * math.pi * rng.random(n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), 0.01 * r * np.cos(phi)])


def survey(*, fields=None, spws=None, dish=25.0, radius_m=1000.0, uv_fields=None, good=None, n=20000,
           w_scale=0.01) -> MsSurvey:
    fields = fields or [FieldFacts(0, "M51", 0, 3.5, 0.8, "J2000", ())]
    spws = spws or [SpwFacts(0, "spw0", 16, 1.4e9, 1.415e9, 1e6)]
    uvw = disk_uv(radius_m, n)
    uvw[2] *= w_scale / 0.01
    ids = uv_fields if uv_fields is not None else [f.id for f in fields]
    uv_field = np.array([ids[i % len(ids)] for i in range(n)])
    uv_spw = np.array([spws[i % len(spws)].id for i in range(n)])
    good = good if good is not None else {(f.id, s.id): 100 for f in fields for s in spws}
    return MsSurvey(path="/data/x.ms", telescope="TEST", nrows=n, fields=fields, spws=spws,
                    dish_diameters_m=[dish] * 10, good_rows=good, uvw_m=uvw, uv_weight=np.ones(n),
                    uv_field=uv_field, uv_spw=uv_spw)


def plan(s, kind="cube", pinned=None, **policy):
    flat = {"weighting": "natural", "robust": 0.5, "uvtaper": [""], "niter": 100, **(pinned or {})}
    return plan_from_survey(s, kind=kind, flat=flat, pinned=dict(pinned or {}), policy=PlanPolicy(**policy))


def test_beam_of_a_filled_disk_is_the_airy_main_lobe():
    # A uniformly filled uv disk of radius R (wavelengths) has PSF 2 J1(x)/x, x = 2 pi R theta: half
    # power at x = 2.2152, so FWHM = 0.7051 / R radians.
    uvw = disk_uv(1.0, 50000)
    beam = estimate_beam(uvw[0] * 1e4, uvw[1] * 1e4, np.ones(50000))
    expected = 2 * 2.2152 / (2 * math.pi * 1e4) * ARCSEC_PER_RAD
    assert beam.minor_arcsec == pytest.approx(expected, rel=0.02)
    assert beam.major_arcsec == pytest.approx(expected, rel=0.02)


def test_an_elongated_coverage_gives_an_elongated_beam_along_the_short_axis():
    uvw = disk_uv(1.0, 40000)
    u, v = uvw[0] * 2e4, uvw[1] * 1e4  # twice as long east-west: the beam is long north-south
    beam = estimate_beam(u, v, np.ones(len(u)))
    assert beam.major_arcsec / beam.minor_arcsec == pytest.approx(2.0, rel=0.05)
    assert abs(beam.pa_deg) < 5.0


def test_uniform_weighting_sharpens_a_centrally_concentrated_coverage():
    rng = np.random.default_rng(3)
    r = 1e4 * rng.random(30000) ** 2  # many short baselines
    phi = 2 * math.pi * rng.random(30000)
    u, v, w = r * np.cos(phi), r * np.sin(phi), np.ones(30000)
    natural = estimate_beam(u, v, w)
    uniform = estimate_beam(u, v, imaging_weights(u, v, w, weighting="uniform", robust=0, fov_rad=0.01))
    briggs = estimate_beam(u, v, imaging_weights(u, v, w, weighting="briggs", robust=0.5, fov_rad=0.01))
    assert uniform.minor_arcsec < briggs.minor_arcsec < natural.minor_arcsec


def test_cell_is_a_fifth_of_the_beam_and_the_image_covers_the_primary_beam():
    s = survey(radius_m=1000.0)
    p = plan(s)
    (t,) = p.targets
    beam_minor = t.beam_estimate_arcsec[1]
    cell = float(t.parameters["cell"].removesuffix("arcsec"))
    assert beam_minor / 5.0 * 0.9 <= cell <= beam_minor / 5.0
    assert beam_minor / cell >= 3
    pb = 1.13 * C / 1.4e9 / 25.0 * ARCSEC_PER_RAD
    assert t.pb_fwhm_arcsec == pytest.approx(pb, rel=1e-3)
    nx, ny = t.parameters["imsize"]
    assert nx * cell >= 2 * pb_radius_arcsec(pb, 0.2) and nx == ny
    assert t.parameters["gridder"] == "standard" and t.parameters["phasecenter"] == 0
    assert t.parameters["nsigma"] == 3.0
    assert {d.name for d in t.decisions} >= {"target", "field", "spw", "phasecenter", "beam", "cell", "imsize",
                                             "gridder", "stopping"}
    assert all(d.reason for d in t.decisions)


def test_the_cell_follows_the_array_and_the_band():
    compact = plan(survey(radius_m=500.0)).targets[0]
    extended = plan(survey(radius_m=18000.0)).targets[0]
    ka = plan(survey(radius_m=500.0, spws=[SpwFacts(0, "ka", 8, 33e9, 33.1e9, 1e7)])).targets[0]

    def cell(t):
        return float(t.parameters["cell"].removesuffix("arcsec"))

    assert cell(extended) < cell(compact) / 20
    assert cell(ka) < cell(compact) / 20
    # Ka band: the primary beam shrinks with frequency too, so the pixel count stays similar.
    assert ka.pb_fwhm_arcsec < compact.pb_fwhm_arcsec / 20


def test_calibrators_are_skipped_by_intent_and_imaged_apart_when_asked():
    fields = [FieldFacts(0, "J1331+3030", 0, 3.5, 0.53, "J2000", ("CALIBRATE_BANDPASS", "CALIBRATE_FLUX")),
              FieldFacts(1, "J1407+2827", 1, 3.7, 0.49, "J2000", ("CALIBRATE_PHASE",)),
              FieldFacts(2, "NGC5457", 2, 3.68, 0.95, "J2000", ("OBSERVE_TARGET",))]
    s = survey(fields=fields)
    p = plan(s)
    assert [t.label for t in p.targets] == ["NGC5457"]
    assert p.targets[0].role == "science"
    assert {x.label for x in p.skipped} == {"J1331+3030", "J1407+2827"}
    assert all("calibrator" in x.reason and "plan.targets: all" in x.reason for x in p.skipped)
    everything = plan(s, targets="all")
    assert [t.label for t in everything.targets] == ["J1331+3030 (calibrator)", "J1407+2827 (calibrator)",
                                                     "NGC5457"]
    assert len({t.slug for t in everything.targets}) == 3


def test_an_ms_without_intents_images_each_source():
    fields = [FieldFacts(0, "A", 0, 1.0, 0.5, "J2000", ()), FieldFacts(1, "B", 1, 2.0, 0.5, "J2000", ())]
    p = plan(survey(fields=fields))
    assert [t.label for t in p.targets] == ["A", "B"] and not p.skipped
    assert "no intents" in p.targets[0].decision("target").reason


def test_pointings_of_one_source_are_one_mosaic_target():
    pb = 1.13 * C / 1.4e9 / 25.0  # radians
    fields = [FieldFacts(i, f"M31_{i}", 5, 0.2 + i * 0.5 * pb, 0.7, "J2000", ("OBSERVE_TARGET",)) for i in range(3)]
    p = plan(survey(fields=fields))
    (t,) = p.targets
    assert t.fields == [0, 1, 2] and t.pointings == 3 and t.source_name == "M31"
    assert t.parameters["gridder"] == "mosaic" and t.parameters["field"] == "0,1,2"
    assert t.parameters["phasecenter"].startswith("J2000 ")
    nx, ny = t.parameters["imsize"]
    cell = float(t.parameters["cell"].removesuffix("arcsec"))
    # The union: one beam wider than a single pointing along RA, by the pointings' spread.
    assert nx > ny and nx * cell >= 2 * 0.5 * pb * math.cos(0.7) * ARCSEC_PER_RAD


def test_fully_flagged_data_are_skipped_before_imaging():
    fields = [FieldFacts(0, "A", 0, 1.0, 0.5, "J2000", ()), FieldFacts(1, "B", 1, 2.0, 0.5, "J2000", ())]
    spws = [SpwFacts(0, "s0", 8, 1.4e9, 1.41e9, 1e6)]
    p = plan(survey(fields=fields, spws=spws, good={(0, 0): 10}))
    assert [t.label for t in p.targets] == ["A"]
    (skip,) = p.skipped
    assert skip.label == "B" and "no unflagged data" in skip.reason
    nothing = plan(survey(fields=fields, spws=spws, good={}))
    assert not nothing.targets and len(nothing.skipped) == 2


def test_cubes_per_spw_and_continuum_over_all_spws():
    spws = [SpwFacts(0, "wide", 8, 1.4e9, 1.47e9, 1e7), SpwFacts(1, "narrow", 64, 1.42e9, 1.4208e9, 1.25e4)]
    s = survey(spws=spws)
    cube = plan(s, kind="cube")
    assert [t.label for t in cube.targets] == ["M51 spw 0", "M51 spw 1"]
    assert [t.parameters["spw"] for t in cube.targets] == ["0", "1"]
    cont = plan(s, kind="continuum")
    assert [t.parameters["spw"] for t in cont.targets] == ["0,1"]


def test_pinned_parameters_win_and_say_so():
    p = plan(survey(), pinned={"cell": "8arcsec", "imsize": 256, "gridder": "wproject", "threshold": "1mJy",
                               "field": "0", "spw": "0:2~5"})
    (t,) = p.targets
    assert t.parameters["cell"] == "8arcsec" and t.parameters["imsize"] == [256, 256]
    assert t.parameters["gridder"] == "wproject" and t.parameters["spw"] == "0:2~5"
    assert "nsigma" not in t.parameters
    for name in ("cell", "imsize", "gridder", "spw", "field", "stopping"):
        assert t.decision(name).source == "pinned", name
    assert "pixels across" in t.decision("cell").reason


def test_an_oversized_cube_is_cut_and_the_cut_recorded():
    spws = [SpwFacts(0, "s", 4000, 1.4e9, 1.8e9, 1e5)]
    p = plan(survey(spws=spws, radius_m=30000.0), max_cube_gb=2.0)
    (t,) = p.targets
    nx, ny = t.parameters["imsize"]
    assert t.capped and t.decision("imsize").source == "capped"
    assert 4.0 * nx * ny * 4000 <= 2.0e9
    assert "budget" in t.decision("imsize").reason
    small = plan(survey(spws=spws, radius_m=30000.0), max_imsize=512).targets[0]
    assert max(small.parameters["imsize"]) <= 512 and "max_imsize" in small.decision("imsize").reason


def test_long_baselines_at_low_frequency_choose_w_projection():
    low = [SpwFacts(0, "p", 8, 3.0e8, 3.1e8, 1e6)]
    p = plan(survey(spws=low, radius_m=30000.0, w_scale=0.5, dish=25.0), max_imsize=100000, max_cube_gb=1e4,
             max_products_gb=1e5)
    t = p.targets[0]
    assert t.parameters["gridder"] == "wproject" and t.parameters["wprojplanes"] == -1
    assert "w-term" in t.decision("gridder").reason


def test_the_plan_is_deterministic():
    a = plan(survey()).model_dump(mode="json")
    b = plan(survey()).model_dump(mode="json")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_small_helpers():
    assert [fast_fft_size(n) for n in (100, 250, 257, 1000)] == [100, 250, 270, 1000]
    assert fast_fft_size(101) % 2 == 0
    assert round_cell_arcsec(0.3427) == 0.34 and round_cell_arcsec(5.67) == 5.6 and round_cell_arcsec(123.0) == 120
    assert selection_ids("0,2~3") == [0, 2, 3] and selection_ids("1:4~9;12~14") == [1]
    assert selection_ids("3C286", {0: "3C286", 1: "X"}) == [0] and selection_ids("3C*") is None
    assert source_stem("M31_03") == "M31" and source_stem("NGC253-1") == "NGC253" and source_stem("3C286") == "3C286"


def test_auxiliary_windows_and_calibration_scans_of_a_science_field_are_not_targets():
    spws = [SpwFacts(0, "WVR#NOMINAL", 4, 183e9, 184e9, 2e9 / 4),
            SpwFacts(1, "X1#ALMA_RB_03#BB_1#SW-01#FULL_RES", 64, 100e9, 100.1e9, 1.5e6),
            SpwFacts(2, "X1#ALMA_RB_03#BB_1#SW-01#CH_AVG", 1, 100e9, 100e9, 1e8),
            SpwFacts(3, "X1#ALMA_RB_03#BB_2#SW-01#FULL_RES", 64, 102e9, 102.1e9, 1.5e6)]
    fields = [FieldFacts(0, "Orion", 0, 1.46, -0.09, "ICRS", ("CALIBRATE_ATMOSPHERE", "OBSERVE_TARGET"))]
    s = survey(fields=fields, spws=spws, dish=12.0)
    # The atmosphere scans gave spw 3 data too; the science scans only spw 1.
    s.science_rows = {(0, 1): 50, (0, 2): 50}
    p = plan(s)
    assert [t.parameters["spw"] for t in p.targets] == ["1"]
    assert "left out" in p.targets[0].decision("spw").reason


def test_an_all_sky_primary_beam_stops_at_the_horizon():
    low = [SpwFacts(0, "lwa", 8, 50e6, 51e6, 2.4e4)]
    p = plan(survey(spws=low, dish=2.0, radius_m=200.0), max_imsize=100000, max_cube_gb=1e4, max_products_gb=1e5)
    t = p.targets[0]
    nx, _ = t.parameters["imsize"]
    cell = float(t.parameters["cell"].removesuffix("arcsec"))
    assert nx * cell <= 2.0 * ARCSEC_PER_RAD * 1.05 and "horizon" in t.decision("imsize").reason


def test_the_row_stride_samples_every_baseline():
    from pclean_provider.casa.ms_survey import sample_stride

    assert sample_stride(1000, 200_000, nantennas=10, ndd=4) == 1
    # 10 antennas: 45 baselines; a plain stride of 10 would see 9 of them at every dump.
    stride = sample_stride(1_944_000, 200_000, nantennas=10, ndd=4)
    assert stride >= 10 and 45 % stride and 55 % stride and 4 % stride
    rows = np.arange(0, 1_944_000, stride)
    assert len(np.unique(rows % 45)) == 45
    assert len(rows) <= 200_000 * 1.2


def test_a_large_uv_sample_is_thinned_without_losing_baselines():
    # 45 baselines x many dumps, ordered as an MS is: a regular step would alias with the baselines.
    nbl, ndump = 45, 6000
    rng = np.random.default_rng(5)
    base_u, base_v = rng.normal(0, 5e3, nbl), rng.normal(0, 5e3, nbl)
    base_u[0], base_v[0] = 3e4, 0.0  # one long baseline the beam depends on
    u, v = np.tile(base_u, ndump), np.tile(base_v, ndump)
    full = estimate_beam(u[: nbl * 100], v[: nbl * 100], np.ones(nbl * 100))
    thinned = estimate_beam(u, v, np.ones(len(u)))
    assert thinned.points == 100_000
    assert thinned.minor_arcsec == pytest.approx(full.minor_arcsec, rel=0.03)
