"""QA metrics, scoring and the gate on plain arrays and models (no CASA)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pclean_provider.pipeline import qa_metrics as m
from pclean_provider.pipeline.qa import load_truth
from pclean_provider.pipeline.qa_models import (
    BeamInfo,
    Convergence,
    Limits,
    ProductMetrics,
    QaReport,
    QaThresholds,
    Sensitivity,
    band_of,
)
from pclean_provider.pipeline.qa_scores import _ranges, score_product


def test_robust_sigma_ignores_bright_outliers():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 2.0, 20000)
    noise[:200] = 1000.0  # 1 % of pixels are a bright source
    assert m.robust_sigma(noise) == pytest.approx(2.0, rel=0.03)
    assert np.std(noise) > 50  # what a plain std would have said


def test_emission_free_excludes_source_and_its_surroundings():
    rng = np.random.default_rng(2)
    plane = rng.normal(0, 1.0, (64, 64))
    plane[30:33, 30:33] += 100.0
    free = m.emission_free(plane, np.ones_like(plane, bool), None, emission_sigma=5.0, grow_pixels=3)
    assert not free[31, 31] and not free[31, 35]  # the source and a pixel beside it
    assert free[5, 5]
    assert m.robust_sigma(plane[free]) == pytest.approx(1.0, rel=0.05)


def test_emission_free_honours_clean_mask():
    plane = np.zeros((32, 32)) + np.random.default_rng(3).normal(0, 1, (32, 32))
    mask = np.zeros((32, 32))
    mask[0:8, 0:8] = 1
    free = m.emission_free(plane, np.ones_like(plane, bool), mask, 5.0, grow_pixels=1)
    assert not free[3, 3] and not free[8, 4] and free[20, 20]


def test_beam_outliers_flags_one_channel_not_the_frequency_trend():
    freqs = np.linspace(1.38e9, 1.42e9, 16)
    major = list(30.0 * 1.4e9 / freqs)  # beams shrink with frequency: not an outlier
    minor = list(20.0 * 1.4e9 / freqs)
    major[5] *= 1.4
    assert m.beam_outliers(major, minor, freqs, 5.0, 0.03) == [5]
    major[5] /= 1.4
    assert m.beam_outliers(major, minor, freqs, 5.0, 0.03) == []


def test_beam_outliers_flags_a_channel_without_beam():
    freqs = np.linspace(1e9, 1.01e9, 5)
    assert m.beam_outliers([10, 10, None, 10, 10], [8, 8, None, 8, 8], freqs, 5.0, 0.03) == [2]


@pytest.mark.parametrize(
    "value,band",
    [(0.0, "optimal"), (0.05, "optimal"), (0.07, "suboptimal"), (0.2, "warning"), (0.5, "error"), (None, "error")],
)
def test_score_bands_lower_is_better(value, band):
    limits = Limits(ideal=0, good=0.05, fair=0.1, poor=0.25, worst=1.0)
    assert band_of(m.score_from_limits(value, limits)) == band


def test_score_higher_is_better_and_monotone():
    limits = QaThresholds().dynamic_range
    values = [1, 5, 20, 100, 1000, 5000]
    scores = [m.score_from_limits(v, limits) for v in values]
    assert scores == sorted(scores)
    assert scores[0] == 0.0 and scores[-1] == 1.0
    assert m.score_from_limits(100, limits) == pytest.approx(0.9)


def test_limits_must_be_monotone():
    with pytest.raises(ValidationError, match="strictly one way"):
        Limits(ideal=0, good=1, fair=0.5, poor=2, worst=3)


def test_band_edges():
    assert [band_of(x) for x in (0.0, 0.329, 0.33, 0.659, 0.66, 0.899, 0.9, 1.0)] == [
        "error", "error", "warning", "warning", "suboptimal", "suboptimal", "optimal", "optimal",
    ]


def test_theoretical_rms_per_channel_uses_overlapping_weights():
    ms_freqs = np.array([1.0e9, 1.001e9, 1.002e9, 1.003e9])
    widths = np.full(4, 1e6)
    wsum = np.array([100.0, 100.0, 400.0, 0.0])
    # Image channel covering exactly the first two MS channels: 200 weight units.
    out = m.theoretical_rms_per_channel(np.array([1.0005e9, 1.002e9, 1.0025e9]), 2e6, ms_freqs, widths, wsum, 2.0)
    assert out[0] == pytest.approx(2.0 / np.sqrt(200.0))
    # Centred on MS channel 2: all of it, and half of each neighbour (100 and 0 weight).
    assert out[1] == pytest.approx(2.0 / np.sqrt(400.0 + 50.0))
    assert out[2] == pytest.approx(2.0 / np.sqrt(400.0))
    assert m.theoretical_rms_total(wsum, 2.0) == pytest.approx(2.0 / np.sqrt(600))


def test_expected_flux_power_law():
    assert m.expected_flux(1.0, 1.4e9, 2.8e9, -1.0) == pytest.approx(0.5)


def test_load_truth_reads_simulator_layout(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(
        '{"ref_freq_hz": 1.4e9, "sources": [{"name": "p", "ra_deg": 1, "dec_deg": 2, "flux_jy": 3, '
        '"spectral_index": -0.7, "shape": "point"}]}'
    )
    (src,) = load_truth(path)
    assert src["ref_freq_hz"] == 1.4e9 and src["spectral_index"] == -0.7 and src["shape"] == "point"
    from pclean_provider.pipeline.qa import QaInputError

    with pytest.raises(QaInputError, match="truth="):
        load_truth(tmp_path / "missing.json")


def _metrics(**conv) -> ProductMetrics:
    convergence = dict(model_flux_jy=1.0, model_nonzero_pixels=10, mask_pixels=100, mask_fraction=0.1,
                       cleaned_nothing=False)
    convergence.update(conv)
    return ProductMetrics(
        imagename="/x/p", kind="cube", image="/x/p.image", residual="/x/p.residual", unit="Jy/beam",
        shape=[64, 64, 1, 10], nchan=10, cell_arcsec=[5, 5], freq_min_hz=1e9, freq_max_hz=1.01e9, peak=1.0,
        peak_pixel=[32, 32, 3], peak_ra_deg=180, peak_dec_deg=40, rms_emission_free=0.001, rms_residual=0.001,
        dynamic_range=1000, residual_peak=0.004, residual_peak_to_rms=4, beam_median=BeamInfo(
            major_arcsec=20, minor_arcsec=15, pa_deg=0), deviant_beam_channels=[2, 3, 4, 8], channels=[],
        convergence=Convergence(**convergence), sensitivity=Sensitivity(
            theoretical_rms_jy=None, measured_rms_jy=0.001, ratio=None, method="n/a"),
    )


def test_empty_model_scores_error_and_gate_sends_to_review():
    pm = _metrics(model_flux_jy=0.0, model_nonzero_pixels=0, cleaned_nothing=True, niter=0)
    scores = score_product(pm, QaThresholds())
    conv = next(s for s in scores if s.metric == "clean_convergence")
    assert conv.band == "error" and "nothing was cleaned (niter=0)" in conv.message
    beam = next(s for s in scores if s.metric == "beam_outlier_fraction")
    assert beam.value == pytest.approx(0.4) and "2-4, 8" in beam.message and beam.band == "error"
    overall = min(s.score for s in scores)
    report = QaReport(created_utc="now", imagename="/x/p", kind="cube", thresholds=QaThresholds(), metrics=pm,
                      scores=scores, overall_score=overall, overall_band=band_of(overall))
    assert report.gate() == "review"
    assert report.gate(min_score=0.0) == "archive"
    # The model round-trips through JSON as it does between processes (the DAG's gate reads qa.json).
    assert QaReport.model_validate_json(report.model_dump_json()).gate() == "review"


def test_report_load_from_folder(tmp_path):
    pm = _metrics()
    scores = score_product(pm, QaThresholds())
    report = QaReport(created_utc="now", imagename="/x/p", kind="cube", thresholds=QaThresholds(
        min_score_for_archive=0.5), metrics=pm, scores=scores, overall_score=0.6, overall_band="warning")
    (tmp_path / "qa.json").write_text(report.model_dump_json())
    loaded = QaReport.load(tmp_path)
    assert loaded.gate() == "archive" and loaded.gate(0.7) == "review"


def test_clean_run_scores_optimal_convergence():
    scores = score_product(_metrics(), QaThresholds())
    conv = next(s for s in scores if s.metric == "clean_convergence")
    assert conv.band == "optimal"


def test_ranges_text():
    assert _ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_primary_beam_above_one_names_the_channels():
    assert m.primary_beam_above([1.0, 1.0, 12.45, None, 1.005, 1.2], limit=1.01) == [2, 5]
    assert m.primary_beam_above([], limit=1.01) == []


def test_weight_jumps_flag_a_channel_apart_from_both_neighbours_not_a_step():
    # Channel 3 holds three times its neighbours' weight (a chunk weighted on its own): flagged.
    assert m.weight_jumps([100, 101, 99, 300, 100, 98], max_ratio=1.5) == [3]
    # A step between two spws of different widths moves no channel away from both sides.
    assert m.weight_jumps([100, 100, 100, 200, 200, 200], max_ratio=1.5) == []
    # Channels without weight (blank, flagged) are not jumps, and do not make their neighbours one.
    assert m.weight_jumps([100, 0, 100, 101, 0.0, 99], max_ratio=1.5) == []
    # An edge channel is judged on its one neighbour.
    assert m.weight_jumps([40, 100, 101, 100], max_ratio=1.5) == [0]


def test_channel_consistency_scores_name_channels_and_send_a_beam_above_one_to_review():
    pm = _metrics().model_copy(update=dict(pb_peak_max=12.45, pb_above_one_channels=[7],
                                           sumwt_jump_channels=[3, 4, 5]))
    scores = score_product(pm, QaThresholds())
    pb = next(s for s in scores if s.metric == "pb_peak")
    assert pb.band == "error" and "channel(s) 7" in pb.message and "12.45" in pb.message
    jumps = next(s for s in scores if s.metric == "sumwt_jumps")
    assert jumps.band == "suboptimal" and "3-5" in jumps.message
    overall = min(s.score for s in scores)
    report = QaReport(created_utc="now", imagename="/x/p", kind="cube", thresholds=QaThresholds(), metrics=pm,
                      scores=scores, overall_score=overall, overall_band=band_of(overall))
    assert report.gate() == "review"
    # A beam that peaks at 1 everywhere is said to, and consistent weights add no score.
    fine = score_product(_metrics().model_copy(update=dict(pb_peak_max=1.0)), QaThresholds())
    assert next(s for s in fine if s.metric == "pb_peak").band == "optimal"
    assert not [s for s in fine if s.metric == "sumwt_jumps"]


def test_cube_model_flux_is_the_channel_with_the_most_not_a_sum():
    from pclean_provider.pipeline.qa import _convergence, _Scan
    from pclean_provider.pipeline.qa_models import ChannelMetrics

    channels = [ChannelMetrics(channel=i, freq_hz=1e9 + i, rms_residual=0.01, rms_emission_free=0.01, peak=1.0,
                               residual_peak=0.02, model_flux=flux) for i, flux in enumerate((0.5, 2.0, 0.7))]
    scan = _Scan(channels=channels, deviant=[], peak=1.0, peak_pixel=(0, 0, 0), peak_map=None, residual_sample=None,
                 rms_free_all=0.01, model_flux=3.2, model_nonzero=30, mask_pixels=None, mask_total=None)
    conv = _convergence(channels, scan, {"iterdone": 40, "stopcode": 2}, QaThresholds(), has_model=True)
    assert conv.model_flux_jy == 2.0 and conv.model_flux_channel == 1 and conv.iterations == 40
    message = next(s for s in score_product(_metrics(**conv.model_dump()), QaThresholds())
                   if s.metric == "clean_convergence").message
    assert "2 Jy in channel 1 (the most of any)" in message and "40 iterations" in message
