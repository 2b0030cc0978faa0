"""The QA report's data model: thresholds in, metrics and scores out (all JSON-able).

Scores follow the observatories' convention: a number in [0, 1] and a band, error below 0.33,
warning below 0.66, suboptimal below 0.9, optimal at or above 0.9. The product's overall score
is the lowest of its scores, because one bad metric is enough to send a product to review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Band = Literal["error", "warning", "suboptimal", "optimal"]
BAND_EDGES = {"error": 0.33, "warning": 0.66, "suboptimal": 0.9}
# (text, background) of each band wherever a score is shown: qa.html and the plugin's QA pages.
BAND_COLOURS = {
    "optimal": ("#1b7f3b", "#e3f4e8"),
    "suboptimal": ("#2c5aa0", "#e4ecf8"),
    "warning": ("#b36b00", "#fdf0dc"),
    "error": ("#b3261e", "#fbe3e1"),
}


def band_of(score: float) -> Band:
    if score < BAND_EDGES["error"]:
        return "error"
    if score < BAND_EDGES["warning"]:
        return "warning"
    if score < BAND_EDGES["suboptimal"]:
        return "suboptimal"
    return "optimal"


class Limits(BaseModel):
    """Where a metric crosses from one band to the next.

    ``ideal`` scores 1.0, ``good`` 0.9, ``fair`` 0.66, ``poor`` 0.33 and ``worst`` 0.0, linear
    in between. The values run either upwards (lower is better) or downwards (higher is better).
    """

    model_config = ConfigDict(extra="forbid")
    ideal: float
    good: float
    fair: float
    poor: float
    worst: float

    @model_validator(mode="after")
    def _monotone(self) -> Limits:
        seq = [self.ideal, self.good, self.fair, self.poor, self.worst]
        up = all(a < b for a, b in zip(seq, seq[1:], strict=False))
        down = all(a > b for a, b in zip(seq, seq[1:], strict=False))
        if not (up or down):
            raise ValueError(
                f"limits must run strictly one way (ideal, good, fair, poor, worst), got {seq}; "
                "for a lower-is-better metric use increasing values, for higher-is-better decreasing"
            )
        return self


class QaThresholds(BaseModel):
    """Scoring thresholds; pipeline templates pass their own, the defaults suit small test data."""

    model_config = ConfigDict(extra="forbid")
    # peak / emission-free rms (higher is better)
    dynamic_range: Limits = Limits(ideal=1000, good=100, fair=20, poor=5, worst=1)
    # max |residual| / residual rms (lower is better): uncleaned flux left behind
    residual_peak_to_rms: Limits = Limits(ideal=3, good=6, fair=10, poor=30, worst=100)
    # measured rms / theoretical natural-weight sensitivity (lower is better)
    rms_to_theoretical: Limits = Limits(ideal=1.0, good=1.6, fair=3.0, poor=10.0, worst=50.0)
    # fraction of channels whose beam deviates (lower is better)
    beam_outlier_fraction: Limits = Limits(ideal=0.0, good=0.02, fair=0.1, poor=0.3, worst=1.0)
    # |recovered / true flux - 1| (lower is better) for point sources ...
    flux_error: Limits = Limits(ideal=0.0, good=0.05, fair=0.1, poor=0.25, worst=1.0)
    # ... and for extended ones, whose flux an interferometer partly resolves out
    extended_flux_error: Limits = Limits(ideal=0.0, good=0.1, fair=0.2, poor=0.4, worst=1.0)
    # position offset of a truth source in pixels (lower is better)
    position_offset_pix: Limits = Limits(ideal=0.0, good=0.5, fair=1.0, poor=3.0, worst=10.0)
    # robust outlier test for channel beams: |x - median| > beam_outlier_sigma * 1.4826 * MAD
    # and more than beam_outlier_min_fraction away from the median (beams vary a little anyway)
    beam_outlier_sigma: float = Field(5.0, gt=0)
    beam_outlier_min_fraction: float = Field(0.03, ge=0)
    # pixels brighter than this many robust sigmas (and their surroundings) count as emission
    emission_sigma: float = Field(5.0, gt=0)
    # a channel whose residual peak exceeds this many sigmas with an empty model was not cleaned
    uncleaned_peak_sigma: float = Field(6.0, gt=0)
    # pixels across the restoring beam's minor axis: fewer than the minimum undersample the beam
    # (CLEAN and the beam fit break down), more than the maximum only cost memory and time
    pixels_per_beam_min: float = Field(3.0, gt=0)
    pixels_per_beam_max: float = Field(25.0, gt=0)
    # what a suggested cell aims at, and what scores 1.0 from here up to twice this
    pixels_per_beam_target: float = Field(5.0, gt=0)
    # the image's edge must reach the primary beam down to this level (0.5: its half power)
    pb_edge_level_max: float = Field(0.5, gt=0, lt=1)
    # a single-pointing image wider than this many primary-beam FWHMs images mostly noise
    image_width_pb_max: float = Field(4.0, gt=0)
    # a channel whose primary beam peaks above this is flagged (a normalised beam peaks at 1)
    pb_peak_max: float = Field(1.01, gt=1)
    # a channel whose sum of weights differs from both neighbours by more than this factor is flagged
    sumwt_jump_max: float = Field(1.5, gt=1)
    # products whose overall score is below this go to review, not to the archive
    min_score_for_archive: float = Field(0.66, ge=0, le=1)

    @model_validator(mode="after")
    def _pixels_per_beam_order(self) -> QaThresholds:
        if not self.pixels_per_beam_min <= self.pixels_per_beam_target <= self.pixels_per_beam_max:
            raise ValueError(
                f"pixels_per_beam_min ({self.pixels_per_beam_min}) <= pixels_per_beam_target "
                f"({self.pixels_per_beam_target}) <= pixels_per_beam_max ({self.pixels_per_beam_max}) must hold"
            )
        return self


class Score(BaseModel):
    metric: str
    value: float | None
    unit: str
    score: float = Field(ge=0, le=1)
    band: Band
    applies_to: str
    message: str


class BeamInfo(BaseModel):
    major_arcsec: float
    minor_arcsec: float
    pa_deg: float


class ChannelMetrics(BaseModel):
    channel: int
    freq_hz: float
    rms_residual: float | None
    rms_emission_free: float | None
    theoretical_rms: float | None = None
    peak: float | None
    residual_peak: float | None
    model_flux: float | None = None
    beam: BeamInfo | None = None
    beam_deviant: bool = False


class SourceRecovery(BaseModel):
    name: str
    shape: str = "point"
    true_ra_deg: float
    true_dec_deg: float
    expected_flux_jy: float
    recovered_flux_jy: float | None
    flux_ratio: float | None
    offset_pix: float | None
    offset_arcsec: float | None
    method: str
    channels_used: int
    true_pixel: list[float] = []  # x, y
    found_pixel: list[float] = []  # x, y (median over the fitted channels)


class Convergence(BaseModel):
    model_flux_jy: float | None  # of the image; of its channel with the most, for a cube
    model_flux_channel: int | None = None  # that channel (cubes)
    model_nonzero_pixels: int | None
    mask_pixels: int | None
    mask_fraction: float | None
    iterations: int | None = None
    niter: int | None = None
    stop_code: int | None = None
    stop_reason: str | None = None
    cleaned_nothing: bool
    uncleaned_channels: list[int] = []


class Sensitivity(BaseModel):
    theoretical_rms_jy: float | None
    measured_rms_jy: float | None
    ratio: float | None
    method: str
    nvis: int | None = None


class GridMetrics(BaseModel):
    """How the image grid fits the data: pixels across the beam and primary-beam coverage.

    Measured on the product itself (its cell, its restoring beams, its .pb), so the checks
    hold whether or not an imaging plan chose the grid.
    """

    cell_arcsec: float  # the coarser of the two axes: the one that undersamples first
    imsize: list[int]  # nx, ny
    beam_minor_arcsec: float | None  # smallest fitted minor axis over the channels; None: none fitted
    beam_minor_channel: int | None = None
    pixels_per_beam: float  # beam_minor_arcsec / cell_arcsec; 0 when no beam could be fitted
    beam_note: str | None = None  # why a beam was left out or missing
    pb_image: str | None = None
    pb_channel: int | None = None  # the lowest frequency channel: the widest primary beam
    pb_peak: float | None = None  # the .pb at the pointing centre
    pb_edge: float | None = None  # the largest .pb on the image border
    pb_fwhm_arcsec: float | None = None
    pb_fwhm_source: str | None = None  # how pb_fwhm_arcsec was found
    image_width_arcsec: float
    image_width_pb: float | None = None  # image width / primary-beam FWHM
    needed_imsize: list[int] | None = None  # smallest nx, ny whose edges reach pb_edge_level_max
    gridder: str | None = None  # from the imaging plan, when there is one


class ProductMetrics(BaseModel):
    imagename: str
    kind: Literal["cube", "mfs"]
    image: str
    residual: str | None
    unit: str
    shape: list[int]
    nchan: int
    cell_arcsec: list[float]
    freq_min_hz: float
    freq_max_hz: float
    peak: float
    peak_pixel: list[int]  # x, y, channel
    peak_ra_deg: float
    peak_dec_deg: float
    rms_emission_free: float
    rms_residual: float | None
    dynamic_range: float | None
    residual_peak: float | None
    residual_peak_to_rms: float | None
    beam_median: BeamInfo | None
    deviant_beam_channels: list[int]
    channels: list[ChannelMetrics]
    convergence: Convergence
    sensitivity: Sensitivity
    sources: list[SourceRecovery] = []
    grid: GridMetrics | None = None
    # Channel-to-channel consistency of what CASA made (tclean's own products can fail it).
    pb_peak_max: float | None = None  # the largest primary-beam value over all channels
    pb_above_one_channels: list[int] = []
    sumwt_jump_channels: list[int] = []


class QaReport(BaseModel):
    """What ``pclean qa`` writes as qa.json (schema in qa.schema.json)."""

    schema_version: int = 1
    created_utc: str
    imagename: str
    kind: Literal["cube", "mfs"]
    thresholds: QaThresholds
    # None only when the product could not be judged (see not_judged_reason)
    metrics: ProductMetrics | None
    scores: list[Score]
    overall_score: float
    overall_band: Band
    # Set when there was nothing to measure (e.g. an empty image from fully flagged data): the
    # report then scores 0 (error) and the gate sends the product to review, whatever its limit.
    not_judged_reason: str | None = None
    # The imaging plan the product was made with (its parameters and the decisions behind them),
    # stored as given so that reviewers see why the grid is what it is.
    plan: dict[str, Any] | None = None
    files: dict[str, str] = {}  # name -> absolute path of what run_qa wrote

    @classmethod
    def load(cls, path) -> QaReport:
        """Read a qa.json (or the folder holding it), e.g. in the DAG's gate task."""
        p = Path(path)
        if p.is_dir():
            p = p / "qa.json"
        return cls.model_validate_json(p.read_text())

    def gate(self, min_score: float | None = None) -> Literal["archive", "review"]:
        """Decide where the product goes: ``archive`` at or above ``min_score``, else ``review``."""
        if self.not_judged_reason:
            # Nothing was measured, so no limit can vouch for the product, not even a gate of 0.
            return "review"
        limit = self.thresholds.min_score_for_archive if min_score is None else float(min_score)
        return "archive" if self.overall_score >= limit else "review"
