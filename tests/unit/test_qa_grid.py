"""The image-grid judgement on plain numbers: pixels per beam, primary-beam coverage, plan wording."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pclean_provider.pipeline import qa_metrics as m
from pclean_provider.pipeline.qa import NOTHING_IMAGED, QaInputError, load_plan
from pclean_provider.pipeline.qa_models import (
    BeamInfo,
    Convergence,
    GridMetrics,
    ProductMetrics,
    QaReport,
    QaThresholds,
    Score,
    Sensitivity,
    band_of,
)
from pclean_provider.pipeline.qa_scores import grid_scores, plan_decision, score_product

T = QaThresholds()


def _grid(**kw) -> GridMetrics:
    base = dict(cell_arcsec=0.34, imsize=[360, 360], beam_minor_arcsec=1.71, pixels_per_beam=1.71 / 0.34,
                image_width_arcsec=360 * 0.34)
    base.update(kw)
    return GridMetrics(**base)


def _by_metric(scores: list[Score], metric: str) -> Score:
    return next(s for s in scores if s.metric == metric)


def _gaussian_pb(n: int, fwhm_pix: float, centre: tuple[float, float] | None = None, pblimit: float = 0.2):
    cx, cy = centre if centre is not None else ((n - 1) / 2, (n - 1) / 2)
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pb = np.exp(-4 * math.log(2) * ((x - cx) ** 2 + (y - cy) ** 2) / fwhm_pix**2)
    return pb, pb >= pblimit  # tclean masks the .pb below its pblimit


def test_pixels_per_beam_treats_missing_and_degenerate_beams_as_none():
    assert m.pixels_per_beam(1.7, 0.34) == pytest.approx(5.0)
    assert m.pixels_per_beam(None, 8.0) == 0.0
    assert m.pixels_per_beam(0.0, 8.0) == 0.0
    assert m.pixels_per_beam(0.004, 8.0) == 0.0  # the incident's "0.00\"" beam on 8" cells


@pytest.mark.parametrize(
    "ppb,band",
    [(0.0, "error"), (2.1, "error"), (2.99, "error"), (3.0, "suboptimal"), (4.0, "suboptimal"), (5.0, "optimal"),
     (10.0, "optimal"), (20.0, "suboptimal"), (25.0, "suboptimal"), (25.5, "error"), (60.0, "error")],
)
def test_pixels_per_beam_bands(ppb, band):
    assert band_of(m.score_pixels_per_beam(ppb, 3.0, 25.0, 5.0)) == band


def test_suggested_cell_rounds_down_to_two_digits():
    assert m.suggest_cell(1.71, 5) == pytest.approx(0.34)
    assert m.format_cell(m.suggest_cell(1.71, 5)) == "0.34arcsec"
    assert m.format_cell(m.suggest_cell(61.0, 5)) == "12arcsec"
    assert m.good_imsize(361) == 384 and m.good_imsize(100) == 100 and m.good_imsize(7) == 8


def test_coarse_cell_is_an_error_naming_the_cell_to_use():
    g = _grid(cell_arcsec=0.81, pixels_per_beam=1.71 / 0.81)
    s = _by_metric(grid_scores(g, T), "pixels_per_beam")
    assert s.band == "error"
    assert s.message.startswith("2.1 pixels across the beam's minor axis (1.71\")")
    assert "set cell to at most 0.34arcsec (5 pixels per beam) or cell: auto" in s.message


def test_fine_cell_is_an_error_naming_the_cell_to_use():
    g = _grid(cell_arcsec=0.04, pixels_per_beam=1.71 / 0.04)
    s = _by_metric(grid_scores(g, T), "pixels_per_beam")
    assert s.band == "error"
    assert "cell far finer than useful" in s.message and "set cell to about 0.34arcsec" in s.message


def test_beam_that_could_not_be_fitted_is_an_error_and_uses_the_plans_estimate():
    g = _grid(cell_arcsec=8.0, beam_minor_arcsec=None, pixels_per_beam=0.0, imsize=[256, 256],
              image_width_arcsec=2048.0, beam_note="64 of 64 channel beams are under a tenth of a pixel")
    plan = {"decisions": [], "beam_estimate_arcsec": [2.4, 1.7, 30.0]}
    s = _by_metric(grid_scores(g, T, plan), "pixels_per_beam")
    assert s.band == "error" and s.score == 0.0
    assert "beam smaller than a pixel or could not be fitted" in s.message
    assert "cell 0.34arcsec" in s.message and "cell: auto" in s.message


def test_good_cell_scores_optimal():
    s = _by_metric(grid_scores(_grid(), T), "pixels_per_beam")
    assert s.band == "optimal" and "5.0 pixels" in s.message


def test_pb_coverage_of_an_image_inside_the_fwhm_estimates_the_size_needed():
    # 64 pixels on a 100-pixel FWHM primary beam: the edge is far above half power.
    pb, valid = _gaussian_pb(64, 100.0)
    cov = m.pb_coverage(pb, valid, 0.5)
    assert cov.edge > 0.7
    # The Gaussian through the centre and the edge value recovers the FWHM ...
    assert cov.fwhm_pix == pytest.approx(100.0, rel=0.03) and not cov.fwhm_measured
    # ... and the size whose edges reach 0.5 is about one FWHM (rounded up to a good FFT size).
    assert cov.needed_imsize[0] == cov.needed_imsize[1]
    assert 100 <= cov.needed_imsize[0] <= 110


def test_pb_coverage_of_a_large_image_measures_the_fwhm():
    # The incident: a ~70" primary beam on 8" cells over 256 pixels (29 FWHM across).
    pb, valid = _gaussian_pb(256, 70.2 / 8.0)
    cov = m.pb_coverage(pb, valid, 0.5)
    assert cov.edge == 0.0 and cov.needed_imsize is None  # masked border: below the pblimit
    assert cov.fwhm_measured and cov.fwhm_pix * 8.0 == pytest.approx(70.2, rel=0.1)


def test_pb_coverage_of_a_tiny_image_does_not_extrapolate():
    # 32 pixels of a 5000-pixel FWHM: the edge is at 0.9999, the flat top says nothing of the width.
    cov = m.pb_coverage(*_gaussian_pb(32, 5000.0), 0.5)
    assert cov.edge > 0.99 and cov.fwhm_pix is None and cov.needed_imsize is None
    g = _grid(pb_edge=cov.edge, pb_peak=cov.peak)
    s = _by_metric(grid_scores(g, T), "pb_edge_level")
    assert s.band == "error" and "set imsize: auto" in s.message
    # A Gaussian reaches 0.5 at one FWHM across, 0.2 at 1.52 FWHM.
    assert m.size_reaching(100.0, 0.5) == pytest.approx(100.0)
    assert m.size_reaching(100.0, 0.2) == pytest.approx(152.4, abs=0.1)


def test_pb_coverage_with_an_offset_pointing_needs_a_larger_image():
    pb, valid = _gaussian_pb(128, 150.0, centre=(80.0, 63.5))
    cov = m.pb_coverage(pb, valid, 0.5)
    centred = m.pb_coverage(*_gaussian_pb(128, 150.0), 0.5)
    assert cov.needed_imsize[0] > centred.needed_imsize[0]
    assert m.gaussian_radius(1.0, 0.5, 10.0, 0.5) == pytest.approx(10.0)
    assert m.gaussian_radius(1.0, 1.0, 10.0, 0.5) is None  # a flat profile gives no estimate
    assert m.pb_coverage(np.zeros((8, 8)), np.ones((8, 8), bool)) is None


def test_short_pb_coverage_is_an_error_with_the_imsize_to_use():
    g = _grid(pb_edge=0.83, pb_peak=1.0, pb_fwhm_arcsec=70.2, needed_imsize=[216, 216], pb_image="/x/p.pb",
              image_width_pb=360 * 0.34 / 70.2)
    s = _by_metric(grid_scores(g, T), "pb_edge_level")
    assert s.band == "error"
    assert "misses part of the primary beam FWHM 70.2\" at half power" in s.message
    assert "set imsize to at least 216" in s.message and "imsize: auto" in s.message


def test_capped_imsize_makes_short_pb_coverage_a_warning_citing_the_cap():
    g = _grid(pb_edge=0.83, pb_peak=1.0, pb_fwhm_arcsec=70.2, needed_imsize=[216, 216])
    plan = {"decisions": [
        {"name": "cell", "value": "0.34arcsec", "source": "derived", "reason": "a fifth of the beam"},
        {"name": "imsize", "value": [360, 360], "source": "capped", "reason": "the 2 GB per-channel budget"},
    ]}
    assert plan_decision(plan, "imsize")["source"] == "capped"
    s = _by_metric(grid_scores(g, T, plan), "pb_edge_level")
    assert s.band == "warning"
    assert "the imaging plan capped imsize [360, 360] (capped: the 2 GB per-channel budget)" in s.message
    # A cap on something else leaves the error in place.
    plan["decisions"][1]["source"] = "derived"
    assert _by_metric(grid_scores(g, T, plan), "pb_edge_level").band == "error"


def test_covered_primary_beam_scores_optimal():
    s = _by_metric(grid_scores(_grid(pb_edge=0.12, pb_fwhm_arcsec=40.0), T), "pb_edge_level")
    assert s.band == "optimal"


def test_image_many_primary_beams_wide_is_a_warning_with_the_fix():
    g = _grid(cell_arcsec=8.0, imsize=[256, 256], image_width_arcsec=2048.0, pb_edge=0.0, pb_fwhm_arcsec=70.2,
              pb_fwhm_source="the .pb, measured at half power", image_width_pb=2048 / 70.2)
    s = _by_metric(grid_scores(g, T), "image_width_pb")
    assert s.band == "warning"
    assert s.message.startswith("the image is 29.2 primary beams wide")
    assert "set imsize to about 18" in s.message  # 2 x 70.2" / 8" = 17.6 -> 18
    # Several pointings (a mosaic) are meant to be wide.
    assert _by_metric(grid_scores(g.model_copy(update={"gridder": "mosaic"}), T), "image_width_pb").band == "optimal"
    ok = _by_metric(grid_scores(_grid(pb_fwhm_arcsec=70.2, image_width_pb=1.74), T), "image_width_pb")
    assert ok.band == "optimal" and "1.7 primary beams wide" in ok.message


def test_zero_beams_that_agree_are_not_optimal():
    """The incident: 64 channel beams of 0.00" on 8" cells were called 'optimal'."""
    pm = ProductMetrics(
        imagename="/x/p", kind="cube", image="/x/p.image", residual="/x/p.residual", unit="Jy/beam",
        shape=[256, 256, 1, 64], nchan=64, cell_arcsec=[8.0, 8.0], freq_min_hz=33e9, freq_max_hz=34e9, peak=1.0,
        peak_pixel=[128, 128, 3], peak_ra_deg=0, peak_dec_deg=0, rms_emission_free=0.001, rms_residual=0.001,
        dynamic_range=1000, residual_peak=0.004, residual_peak_to_rms=4,
        beam_median=BeamInfo(major_arcsec=0.003, minor_arcsec=0.002, pa_deg=0), deviant_beam_channels=[],
        channels=[], convergence=Convergence(model_flux_jy=1.0, model_nonzero_pixels=10, mask_pixels=100,
                                             mask_fraction=0.1, cleaned_nothing=False),
        sensitivity=Sensitivity(theoretical_rms_jy=None, measured_rms_jy=0.001, ratio=None, method="n/a"),
        grid=_grid(cell_arcsec=8.0, beam_minor_arcsec=None, pixels_per_beam=0.0, imsize=[256, 256],
                   image_width_arcsec=2048.0),
    )
    scores = score_product(pm, T)
    beam = _by_metric(scores, "beam_outlier_fraction")
    assert beam.band == "error" and "degenerate restoring beam" in beam.message
    assert _by_metric(scores, "pixels_per_beam").band == "error"
    assert min(s.score for s in scores) < 0.33


def test_load_plan_keeps_the_fields_and_requires_decisions(tmp_path):
    plan = {"target": "J0000+0000 spw 0", "parameters": {"cell": "0.34arcsec", "imsize": [360, 360]},
            "decisions": [{"name": "cell", "value": "0.34arcsec", "source": "derived", "reason": "r"}],
            "pb_fwhm_arcsec": 70.2, "extra": {"kept": True}}
    path = tmp_path / "plan.json"
    path.write_text(__import__("json").dumps(plan))
    assert load_plan(path) == plan and load_plan(plan) == plan
    with pytest.raises(QaInputError, match="decisions"):
        load_plan({"parameters": {}})
    with pytest.raises(QaInputError, match="does not exist"):
        load_plan(tmp_path / "missing.json")


def test_not_judged_report_goes_to_review_whatever_the_gate():
    report = QaReport(
        created_utc="now", imagename="/x/empty", kind="cube", thresholds=T, metrics=None,
        scores=[Score(metric="product_content", value=0.0, unit="pixels", score=0.0, band="error",
                      applies_to="image /x/empty.image", message=NOTHING_IMAGED)],
        overall_score=0.0, overall_band="error", not_judged_reason=NOTHING_IMAGED,
        plan={"decisions": [{"name": "cell", "value": "1arcsec", "source": "pinned", "reason": "template"}]},
    )
    assert report.gate() == "review" and report.gate(min_score=0.0) == "review"
    again = QaReport.model_validate_json(report.model_dump_json())
    assert again.not_judged_reason == NOTHING_IMAGED and again.plan["decisions"][0]["source"] == "pinned"
    from pclean_provider.pipeline.report_html import render_html

    page = render_html(report)
    assert "nothing was imaged" in page and "Imaging plan" in page and "pinned" in page


def test_thresholds_keep_the_pixels_per_beam_order():
    with pytest.raises(ValueError, match="pixels_per_beam_min"):
        QaThresholds(pixels_per_beam_min=6.0)
