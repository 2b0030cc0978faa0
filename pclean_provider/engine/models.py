"""What crosses process boundaries in the cube engine: small JSON-able models, never image data.

The Airflow operators `.expand()` over `CubePlan.specs` and pass `SubcubeResult`s through XCom,
so every field is a path, a number or a short string.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pclean_provider.casa.iteration import STOP_REASONS

ConcatMode = Literal["auto", "paged", "virtual", "movevirtual"]

# Two channel grids are "the same" to this relative precision. CASA's frame conversion (e.g. TOPO ->
# LSRK) of one and the same cube differs between processes at the mHz level (~1e-12 relative,
# measured: it depends on what the process did with casatools before), far below any channel width.
FREQUENCY_RTOL = 1e-9


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubcubeSpec(_Model):
    """One sub-cube: a contiguous channel range of the full cube, imaged by one tclean run."""

    index: int = Field(description="Position in the cube, 0-based; concatenation follows it.")
    nparts: int = Field(description="Number of sub-cubes in the plan.")
    chan_start: int = Field(description="First channel in the full cube (0-based, inclusive).")
    chan_stop: int = Field(description="One past the last channel in the full cube.")
    nchan: int
    image_chan_start: int = Field(-1, description="First channel tclean images (< chan_start when padded; "
                                  "-1: same as chan_start).")
    image_chan_stop: int = Field(-1, description="One past the last channel tclean images (-1: chan_stop).")
    start_hz: float = Field(description="Frequency of the first channel, exactly as CASA's grid has it.")
    width_hz: float = Field(description="Channel increment of the full cube's grid.")
    frame: str = Field(description="Spectral reference frame of the grid (tclean's outframe).")
    frequencies_hz: list[float] = Field(description="Expected frequency of every channel (for checks).")
    vis: str | list[str] = Field(description="Absolute path(s) of the MeasurementSet(s).")
    imagename: str = Field(description="Absolute image name of the full cube.")
    subcube_dir: str = Field(description="Absolute folder of this sub-cube's products and CASA log.")
    niter: int = Field(description="This sub-cube's share of the cube's niter.")
    tclean_kwargs: dict[str, Any] = Field(
        description="The keyword arguments of this sub-cube's tclean run (imagename set at run time).")
    cube_tclean_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="The full cube's tclean keywords: the sub-cube redefines the cube's "
        "grid in its own process before imaging (see plan.localize_start).")
    estimated_memory_bytes: int = 0

    @property
    def product_prefix(self) -> str:
        # A name unique across sub-cubes: movevirtual moves the parts into one folder by base name.
        return f"{self.subcube_dir}/{self.product_basename}"

    @property
    def product_basename(self) -> str:
        return self.subcube_dir.rstrip("/").rsplit("/", 1)[-1]

    @property
    def padded(self) -> bool:
        return (self.image_chan_start not in (-1, self.chan_start)) or (
            self.image_chan_stop not in (-1, self.chan_stop))

    @property
    def key(self) -> str:
        return f"subcube-{self.index:04d}"


class CubePlan(_Model):
    """The whole cube: its CASA-defined grid and how it is split."""

    imagename: str
    workdir: str = Field(description="Absolute folder holding the sub-cube folders.")
    nchan: int
    frequencies_hz: list[float]
    width_hz: float
    frame: str
    restfreq_hz: float | None = None
    niter: int
    niter_sharing: str = Field(description="How niter was shared among sub-cubes, in words.")
    restoringbeam: str | list[str] | list[float] = ""
    nworkers: int
    cube_chunksize: int
    worker_memory_bytes: int | None = None
    estimated_memory_bytes_per_subcube: int = 0
    tclean_kwargs: dict[str, Any] = Field(default_factory=dict,
                                          description="The full cube's tclean keywords (paths absolute).")
    specs: list[SubcubeSpec]


class SubcubeResult(_Model):
    """What one sub-cube run produced (paths and numbers)."""

    index: int
    chan_start: int
    chan_stop: int
    nchan: int
    frequencies_hz: list[float]
    product_prefix: str
    products: list[str] = Field(description="Product suffixes that exist, e.g. ['.image', '.psf'].")
    niter: int
    iterations: int
    nmajor_done: int = 0
    stop_code: int | None = None
    stop_reason: str = ""
    peak_residual: float | None = None
    seconds: float
    peak_rss_bytes: int
    host: str
    pid: int
    casa_log: str


class ConcatResult(_Model):
    imagename: str
    mode: str
    products: dict[str, str] = Field(description="Product suffix -> absolute path of the full cube's image.")
    nchan: int
    common_beam: dict[str, float] | None = None
    kept_subcubes: bool
    seconds: float


class PcleanResult(_Model):
    """Summary of one pclean() call."""

    imagename: str
    specmode: str
    parallel: bool = Field(description="Imaged on Dask workers (False: in this process, also when a parallel "
                           "cube was kept here; see in_process_reason).")
    in_process_reason: str | None = Field(None, description="Why a cube asked for in parallel was imaged in this "
                                          "process (too small for the cluster's start-up), with the figures; None "
                                          "when it ran as asked.")
    products: dict[str, str] = {}
    iterations: int = 0
    stop_reason: str = ""
    seconds: float = 0.0
    nworkers: int = 0
    nsubcubes: int = 0
    subcubes: list[SubcubeResult] = []
    concat: ConcatResult | None = None
    continuum: dict[str, Any] | None = None
    cube_loop: dict[str, Any] | None = Field(None, description="The exact cube loop's record (iterations, "
                                             "stop, per-stage seconds, rebuilt sessions).")
    summary: dict[str, Any] = Field(default_factory=dict, description=(
        "What tclean returns: the iteration summary's scalars (iterdone, nmajordone, stopcode, "
        "stopDescription, niter, cycleniter, threshold, nsigma, ...); read as result['iterdone']."))

    # tclean returns a dict, and scripts written for it read ret['iterdone'] or ret.get('stopcode'):
    # the result answers those reads from `summary` (its other fields stay attributes).
    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __contains__(self, key: object) -> bool:
        return key in self.summary

    def get(self, key: str, default: Any = None) -> Any:
        return self.summary.get(key, default)

    def keys(self):
        return self.summary.keys()


def tclean_summary(niter: int, iteration_summary: dict[str, Any] | None) -> dict[str, Any]:
    """tclean's return record from a run's iteration summary (the iterbot's scalars).

    With niter=0 tclean builds no iteration controller and returns a fixed record (one major cycle,
    no iterations, stop code 3); with niter > 0 it returns the iterbot's summary plus the stop
    code's description. tclean's per-cycle matrices (summaryminor, summarymajor) are not rebuilt.
    """
    if niter <= 0:
        return {"iterdone": 0, "niter": 0, "nmajordone": 1, "stopcode": 3, "cycleniter": 0,
                "cyclethreshold": 0, "nsigma": 0.0, "maxpsfsidelobe": 0}

    out = dict(iteration_summary or {})
    if int(out.get("stopcode", 0) or 0) > 0:
        out["stopDescription"] = STOP_REASONS.get(int(out["stopcode"]))
    return out
