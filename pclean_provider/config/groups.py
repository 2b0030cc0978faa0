"""tclean's parameters, one pydantic model per parameter group.

Names, types and defaults are those of casatasks.tclean 6.7 (checked against the installed
signature by tests/casa/test_config_tclean_signature.py), so that a tclean call moves to pclean
unchanged. The descriptions are what ``pclean --help`` prints. Checks that need a single value
live here; checks across groups live in ``model.PcleanConfig``.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pclean_provider.config.quantities import parse_angle_arcsec, parse_flux_jy

StrOrList = str | list[str]

# tclean's spectral modes, each fact written once so that the config's checks and the cube engine's
# preflight cannot drift apart: which modes exist, which make one continuum plane, which make a cube,
# and which of those cubes the cube engine makes.
Specmode = Literal["mfs", "cont", "cube", "cubedata", "cubesource", "mvc"]
MFS_SPECMODES: tuple[Specmode, ...] = ("mfs", "cont")  # 'cont' is tclean's other name for 'mfs'
CUBE_SPECMODES: tuple[Specmode, ...] = ("cube", "cubedata", "cubesource")
# A 'cubesource' cube is tclean's alone: the cube engine's preflight sends it to casatasks.tclean.
CUBE_ENGINE_SPECMODES: tuple[Specmode, ...] = ("cube", "cubedata")
# Deconvolvers that only make sense on a single multi-frequency plane (tclean refuses mtmfs with a cube).
MFS_ONLY_DECONVOLVERS = ("mtmfs",)


class _Group(BaseModel):
    # Numbers in YAML (spw: 0, field: 3) become strings as casatasks' own coercion does.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        # pydantic would quietly read True as 1 (cell=True -> 1 arcsec); tclean's types refuse it.
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{value!r} is not valid here; this parameter is not true/false")
        return value


def _admits_bool(annotation: object) -> bool:
    if annotation is bool:
        return True
    return any(_admits_bool(a) for a in get_args(annotation))


def _check_paths(info: ValidationInfo) -> bool:
    # Configs built where the data is not mounted (a DAG parsed on the scheduler) opt out explicitly.
    return (info.context or {}).get("check_paths") is not False


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


class Selection(_Group):
    vis: StrOrList = Field("", description="MeasurementSet(s) to image: one path or a list of paths.")
    selectdata: bool = Field(True, description="Apply the data selection below.")
    field: StrOrList = Field("", description="Field ids or names ('' = all), e.g. '0~2' or '3C286'; "
                             "a list gives one selection per MeasurementSet.")
    spw: StrOrList = Field("", description="Spectral windows and channels ('' = all), e.g. '0:5~60'.")
    timerange: StrOrList = Field("", description="Time range to select ('' = all).")
    uvrange: StrOrList = Field("", description="uv-distance range to select, e.g. '>1klambda' ('' = all).")
    antenna: StrOrList = Field("", description="Antennas or baselines to select ('' = all).")
    scan: StrOrList = Field("", description="Scan numbers to select ('' = all).")
    observation: str | int = Field("", description="Observation ids to select ('' = all).")
    intent: StrOrList = Field("", description="Scan intents to select ('' = all).")
    datacolumn: str = Field("corrected", description="Column to image: 'corrected' (falls back to 'data' "
                            "when absent) or 'data'.")

    @field_validator("vis")
    @classmethod
    def _vis_exists(cls, value: StrOrList, info: ValidationInfo) -> StrOrList:
        paths = [value] if isinstance(value, str) else list(value)
        if isinstance(value, list) and not value:
            raise ValueError("the list of MeasurementSets is empty; give at least one path")
        resolved = []
        for path in paths:
            if path == "":
                if isinstance(value, list):
                    raise ValueError("an empty path in the list of MeasurementSets; remove it")
                resolved.append(path)
                continue
            full = _absolute(path)
            if _check_paths(info) and not os.path.isdir(full):
                if os.path.exists(full):
                    raise ValueError(f"{path!r} is a file, not a MeasurementSet (a directory); "
                                     "give the .ms directory itself")
                raise ValueError(f"MeasurementSet {path!r} does not exist (looked for {full}); "
                                 "fix the path or create it with `pclean simulate`")
            resolved.append(full)
        # Absolute from here on: the config crosses to workers whose working directory differs.
        return resolved[0] if isinstance(value, str) else resolved


class Image(_Group):
    imagename: str = Field("", description="Prefix of the output images (<imagename>.image, .residual, ...).")
    imsize: int | list[int] = Field([100], description="Image size in pixels: n, [n] or [nx, ny].")
    cell: str | float | list[str] | list[float] = Field(
        [], description="Pixel size: '8arcsec', ['1arcsec', '2arcsec'] or a number of arcsec.")
    phasecenter: str | int = Field("", description="Image centre: a field id or 'J2000 19h59m28.5 "
                                   "+40d44m01.5' ('' = the first selected field).")
    stokes: Literal["I", "IQUV", "UV", "RRLL", "IQ", "V", "pseudoI", "QU", "YY", "RR", "Q", "U", "IV",
                    "XX", "XXYY", "LL"] = Field("I", description="Stokes planes to make.")
    projection: str = Field("SIN", description="Sky projection of the image (SIN, NCP, ...).")
    startmodel: StrOrList = Field("", description="Model image(s) to start deconvolution from.")

    @field_validator("imagename")
    @classmethod
    def _imagename_absolute(cls, value: str) -> str:
        # Absolute from here on: sub-cube workers write next to it from other directories.
        return _absolute(value) if value else value

    @field_validator("imsize")
    @classmethod
    def _imsize_positive(cls, value: int | list[int]) -> int | list[int]:
        sizes = [value] if isinstance(value, int) else value
        if not 1 <= len(sizes) <= 2:
            raise ValueError(f"{value!r} must be one size or two sizes [nx, ny]")
        if any(size <= 0 for size in sizes):
            raise ValueError(f"{value!r} must be positive, e.g. imsize=[256, 256]")
        return value

    @field_validator("cell", mode="before")
    @classmethod
    def _cell_one_type(cls, value: object) -> object:
        # tclean takes a list of strings or a list of numbers, never a mix: give numbers their unit.
        if isinstance(value, list | tuple):
            kinds = {isinstance(v, str) for v in value}
            if kinds == {True, False}:
                return [v if isinstance(v, str) or isinstance(v, bool) else f"{v}arcsec" for v in value]
            return list(value)
        return value

    @field_validator("cell")
    @classmethod
    def _cell_parsable(cls, value: str | float | list[str] | list[float]) -> str | float | list[str] | list[float]:
        cells = value if isinstance(value, list) else [value]
        if len(cells) > 2:
            raise ValueError(f"{value!r} must be one cell size or two [x, y]")
        for cell in cells:
            if parse_angle_arcsec(cell) <= 0:
                raise ValueError(f"{cell!r} must be a positive angle, e.g. cell='1arcsec'")
        return value

    def shape(self) -> tuple[int, int]:
        """(nx, ny) as tclean expands imsize."""
        sizes = [self.imsize] if isinstance(self.imsize, int) else self.imsize
        return (sizes[0], sizes[-1])

    def cell_arcsec(self) -> tuple[float, float] | None:
        """(x, y) pixel size in arcsec, or None when cell is not set."""
        cells = self.cell if isinstance(self.cell, list) else [self.cell]
        if not cells:
            return None
        return (parse_angle_arcsec(cells[0]), parse_angle_arcsec(cells[-1]))


class Spectral(_Group):
    specmode: Specmode = Field(
        "mfs", description="'mfs'/'cont' (one continuum plane), 'cube' (channels in outframe), 'cubedata' "
        "(data frame), 'cubesource' (source frame) or 'mvc' (multi-term via cube).")
    reffreq: str = Field("", description="Reference frequency of mfs/mtmfs images ('' = middle of the "
                         "selected band).")
    nchan: int = Field(-1, description="Channels of the output cube (-1 = all selected channels).")
    start: str | int | float | dict[str, str | float] = Field(
        "", description="First cube channel: a channel number, a frequency ('1.1GHz') or a velocity "
        "('15343km/s'), or a quantity record ({'value': 1.1, 'unit': 'GHz'}) as tclean takes.")
    width: str | int | float | dict[str, str | float] = Field(
        "", description="Cube channel width: channels, a frequency ('0.1MHz') or a velocity ('10km/s'), "
        "or a quantity record.")
    outframe: str = Field("LSRK", description="Spectral frame of start and width.")
    veltype: str = Field("radio", description="Velocity definition (radio, optical, ...).")
    restfreq: StrOrList = Field([], description="Rest frequency (or list) for velocity axes, e.g. '1.42GHz'.")
    interpolation: Literal["nearest", "linear", "cubic"] = Field(
        "linear", description="How visibilities are regridded onto the cube channels.")

    @field_validator("start", "width")
    @classmethod
    def _quantity_record(cls, value):
        # tclean's start/width are variants: a string, a number or a quantity record.
        if isinstance(value, dict):
            if set(value) != {"value", "unit"} or isinstance(value["value"], str) or not isinstance(value["unit"], str):
                raise ValueError(f"{value!r} is not a quantity record; give {{'value': <number>, 'unit': "
                                 "'<unit>'}, e.g. {'value': 1.1, 'unit': 'GHz'}, or a string such as '1.1GHz'")
            return {"value": float(value["value"]), "unit": value["unit"]}
        return value

    @field_validator("nchan")
    @classmethod
    def _nchan_valid(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"{value} is not a channel count; use -1 (all channels) or a positive number")
        return value


class Gridding(_Group):
    gridder: Literal["widefield", "wproject", "awphpg", "imagemosaic", "standard", "awproject",
                     "wprojectft", "mosaicft", "ft", "ftmosaic", "mosaic", "awprojectft", "gridft",
                     "awp2"] = Field("standard", description="Gridding algorithm (standard, wproject, "
                                     "widefield, mosaic, awproject, awp2).")
    facets: int = Field(1, description="Facets per side for gridder='widefield'.")
    psfphasecenter: str | int = Field("", description="Separate phase centre for the PSF of a mosaic.")
    wprojplanes: int = Field(1, description="w-projection planes (-1 = chosen from the data).")
    vptable: str = Field("", description="Voltage-pattern table for mosaic/awproject primary beams.")
    mosweight: bool = Field(True, description="Weight each mosaic field independently.")
    aterm: bool = Field(True, description="awproject: use the antenna aperture (A-term).")
    psterm: bool = Field(False, description="awproject: use the prolate spheroidal term.")
    wbawp: bool = Field(True, description="awproject: frequency-dependent A-projection.")
    conjbeams: bool = Field(False, description="awproject/mosaic: grid with conjugate beams.")
    cfcache: str = Field("", description="Directory for awproject convolution functions.")
    usepointing: bool = Field(False, description="awproject: use the POINTING table.")
    computepastep: float = Field(360.0, description="Parallactic-angle step (deg) for new convolution functions.")
    rotatepastep: float = Field(360.0, description="Parallactic-angle step (deg) for rotating them.")
    pointingoffsetsigdev: list[float] = Field(
        [], description="Pointing-offset thresholds (arcsec) for awproject with usepointing.")


class Weighting(_Group):
    weighting: Literal["briggsabs", "briggs", "briggsbwtaper", "natural", "radial", "superuniform",
                       "uniform"] = Field("natural", description="Visibility weighting scheme.")
    robust: float = Field(0.5, ge=-2.0, le=2.0, description="Briggs robustness, -2 (uniform) to 2 (natural).")
    noise: str = Field("1.0Jy", description="Noise level for weighting='briggsabs'.")
    npixels: int = Field(0, description="Cells over which uniform weights are computed (0 = one cell).")
    uvtaper: list[str] = Field([""], description="Gaussian uv taper: [] or ['10arcsec'] or "
                               "[bmaj, bmin, bpa].")
    perchanweightdensity: bool = Field(True, description="Compute Briggs weight density per channel "
                                       "(cube) rather than once for all channels.")

    @field_validator("noise")
    @classmethod
    def _noise_flux(cls, value: str) -> str:
        parse_flux_jy(value)
        return value


class Deconvolution(_Group):
    deconvolver: Literal["clarkstokes_exp", "mtmfs", "mem", "clarkstokes", "hogbom", "clark_exp",
                         "clark", "asp", "multiscale"] = Field(
        "hogbom", description="Minor-cycle algorithm (hogbom, clark, multiscale, mtmfs, mem, asp, ...).")
    scales: list[int] | list[float] = Field([], description="Multiscale scale sizes in pixels, e.g. 0 5 15.")
    nterms: int = Field(2, description="Taylor terms for deconvolver='mtmfs' (1 or more).")
    smallscalebias: float = Field(0.0, description="Bias towards small scales in multiscale clean.")
    fusedthreshold: float = Field(0.0, description="asp: threshold (Jy) for switching to Hogbom.")
    largestscale: int = Field(-1, description="asp: largest scale in pixels (-1 = no limit).")
    restoration: bool = Field(True, description="Make the restored image.")
    restoringbeam: StrOrList = Field([], description="Restoring beam: [] (fitted per plane), 'common' "
                                     "or ['10arcsec', '8arcsec', '30deg'].")
    pbcor: bool = Field(False, description="Also write a primary-beam corrected image.")
    usemask: Literal["user", "pb", "auto-multithresh"] = Field(
        "user", description="Masking: 'user' (mask below), 'pb' (pbmask) or 'auto-multithresh'.")
    mask: StrOrList = Field("", description="Mask image(s), region file(s) or region text.")
    pbmask: float = Field(0.0, description="Primary-beam level below which to mask (usemask='pb').")
    sidelobethreshold: float = Field(3.0, description="auto-multithresh: mask threshold in units of the "
                                     "PSF sidelobe level times the peak residual.")
    noisethreshold: float = Field(5.0, description="auto-multithresh: mask threshold in units of the noise.")
    lownoisethreshold: float = Field(1.5, description="auto-multithresh: threshold (noise units) for "
                                     "growing the mask.")
    negativethreshold: float = Field(0.0, description="auto-multithresh: threshold (noise units) for "
                                     "negative emission (0 = off).")
    smoothfactor: float = Field(1.0, description="auto-multithresh: mask smoothing in beams.")
    minbeamfrac: float = Field(0.3, description="auto-multithresh: smallest mask region kept, in beams.")
    cutthreshold: float = Field(0.01, description="auto-multithresh: cut level after smoothing.")
    growiterations: int = Field(75, description="auto-multithresh: binary-dilation iterations when growing.")
    dogrowprune: bool = Field(True, description="auto-multithresh: prune small regions after growing.")
    minpercentchange: float = Field(-1.0, description="auto-multithresh: stop updating the mask below "
                                    "this change in percent (-1 = never).")
    verbose: bool = Field(False, description="auto-multithresh: log mask statistics per channel.")
    fastnoise: bool = Field(True, description="auto-multithresh: fast (unmasked) noise estimate.")

    @field_validator("nterms")
    @classmethod
    def _nterms_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} is less than 1; use nterms=1 (flat spectrum) or 2 and more")
        return value


class Iteration(_Group):
    niter: int = Field(0, description="Total minor-cycle iterations (0 = make dirty images only).")
    gain: float = Field(0.1, description="Loop gain of the minor cycle.")
    threshold: str | float = Field(0.0, description="Stopping flux, e.g. '0.1mJy' or a number of Jy.")
    nsigma: float = Field(0.0, description="Stopping threshold in units of the robust residual rms (0 = off).")
    cycleniter: int = Field(-1, description="Most iterations per minor cycle (-1 = niter).")
    cyclefactor: float = Field(1.0, description="Scales the minor-cycle threshold from the PSF sidelobes.")
    minpsffraction: float = Field(0.05, description="Lower bound of the PSF fraction for the cycle threshold.")
    maxpsffraction: float = Field(0.8, description="Upper bound of the PSF fraction for the cycle threshold.")
    interactive: bool = Field(False, description="Interactive masking in a viewer (not available in pclean).")
    nmajor: int = Field(-1, description="Most major cycles (-1 = no limit).")
    fullsummary: bool = Field(False, description="Return the full per-channel summary from tclean.")

    @field_validator("threshold")
    @classmethod
    def _threshold_flux(cls, value: str | float) -> str | float:
        if parse_flux_jy(value) < 0:
            raise ValueError(f"{value!r} is negative; use 0 or a positive flux such as '0.1mJy'")
        return value

    @field_validator("nmajor")
    @classmethod
    def _nmajor_valid(cls, value: int) -> int:
        if value < -1:
            raise ValueError(f"{value} is reserved by tclean; use -1 (no limit) or 0 and more")
        return value

    @field_validator("interactive")
    @classmethod
    def _not_interactive(cls, value: bool) -> bool:
        # Workers have no display: interactive cleaning would hang the job instead of failing.
        if value:
            raise ValueError("interactive cleaning is not available in pclean; set interactive=False and "
                             "use mask= or usemask='auto-multithresh'")
        return value


class Normalization(_Group):
    pblimit: float = Field(0.2, description="Primary-beam level below which images are blanked.")
    normtype: str = Field("flatnoise", description="Mosaic normalisation: 'flatnoise', 'flatsky' or 'pbsquare'.")
    psfcutoff: float = Field(0.35, description="PSF level down to which the restoring beam is fitted.")


class Misc(_Group):
    outlierfile: str = Field("", description="File describing outlier fields to image alongside.")
    restart: bool = Field(True, description="Reuse existing images with the same imagename.")
    savemodel: Literal["none", "virtual", "modelcolumn"] = Field(
        "none", description="Save the model visibilities: 'none', 'virtual' or 'modelcolumn'.")
    calcres: bool = Field(True, description="Compute the initial residual image.")
    calcpsf: bool = Field(True, description="Compute the PSF.")


ConcatMode = Literal["auto", "paged", "virtual", "movevirtual"]
CubeEngine = Literal["sessions", "independent"]


class Extras(_Group):
    """pclean's own knobs, beyond tclean's parameters."""

    parallel: bool = Field(False, description="Image on a Dask cluster (cube: channel chunks; continuum: "
                           "major-cycle gridding) instead of in this process.")
    cube_chunksize: int = Field(-1, description="Channels per sub-cube task (-1 = one sub-cube per worker, "
                                "1 = one per channel).")
    cube_engine: CubeEngine = Field(
        "sessions", description="Cube engine: 'sessions' (sub-cube imagers kept on the workers, one "
        "iteration controller for the whole cube: equal to serial tclean) or 'independent' (every "
        "sub-cube a whole tclean run: exact only for niter=0).")
    relayout_ms: bool | Literal["auto"] = Field(
        "auto", description="Parallel cube (exact loop): before the sessions start, copy each MS into the cube's work "
        "folder with tiles of a few channels and image the copy (same values, same images); each worker then "
        "reads only its channels, so the bytes read stay near serial tclean's as workers grow. Costs one pass "
        "over the data and the MS's size on disk until the run ends; skipped (with a warning) when it would not "
        "fit. 'auto': only for a cleaned cube in 4 sessions or more, where the bytes read without it pass 3x "
        "serial tclean's (at 2 sessions the copy's gain in time was within this machine's noise).")
    keep_subcubes: bool = Field(False, description="Keep the sub-cube images after concatenation.")
    keep_cluster: bool = Field(
        False, description="With parallel=True: keep the local or SLURM cluster this call starts and reuse "
        "it for later pclean() calls in this process with the same cluster settings (its workers keep CASA "
        "loaded, so a small image does not pay the start-up again). Stopped at interpreter exit or by "
        "pclean_provider.engine.kept_cluster.close_kept_clusters().")
    in_process_below_s: float = Field(
        5.0, description="A parallel cube on a cluster this call starts itself (local or SLURM, keep_cluster "
        "included; never a caller's client, cluster_type='address' or cube_engine='independent'): image it in "
        "this process instead, as parallel=False does, when the time the cluster could save (serial tclean's "
        "estimated seconds x (1 - 1/workers)) is below this many seconds. The default covers a local cluster's "
        "start with CASA in its workers (2.4 s measured on 2 cores) and its sessions' set-up; raise it where "
        "clusters start slowly (SLURM jobs that queue: their usual wait). A live kept cluster counts 2 s. "
        "0: always use the cluster.")
    keep_partimages: bool = Field(False, description="Keep the continuum partial images after gathering.")
    concat_mode: ConcatMode = Field(
        "auto", description="Cube concatenation: 'auto' (from keep_subcubes), 'paged' (copy), 'virtual' "
        "(reference the sub-cubes) or 'movevirtual' (move them into the output).")

    @field_validator("in_process_below_s")
    @classmethod
    def _in_process_below_valid(cls, value: float) -> float:
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"{value} is not a number of seconds; use 0 (always image a parallel cube on the "
                             "cluster) or a positive number of seconds, e.g. in_process_below_s=5")
        return value

    @field_validator("cube_chunksize")
    @classmethod
    def _chunksize_valid(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError(f"{value} is not a chunk size; use -1 (one sub-cube per worker) or a positive "
                             "number of channels")
        return value


# Order as tclean lists them; the group name is also the key in grouped YAML files.
TCLEAN_GROUPS: dict[str, type[_Group]] = {
    "selection": Selection,
    "image": Image,
    "spectral": Spectral,
    "gridding": Gridding,
    "weighting": Weighting,
    "deconvolution": Deconvolution,
    "iteration": Iteration,
    "normalization": Normalization,
    "misc": Misc,
}
