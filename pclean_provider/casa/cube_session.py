"""A sub-cube's imager, normalizer and deconvolver, built once on a worker and kept for the whole clean.

Serial tclean images a cube with one `synthesisimager` whose internal cube loop grids each
channel from the data that fall into it. A sub-cube session is that same imager restricted to a
contiguous channel range of the full cube: its image is defined with the full cube's coordinate
system (the reference pixel shifted to the range's first channel), so every channel has tclean's
frequency to the last bit, and with tclean's own data selection, so CASA picks, channel by
channel, the same visibilities and weights as the serial run. Measured against serial tclean on
one- and two-spw MSs, frame conversion, averaging widths and briggs/uniform weighting: dirty
images and PSFs bit-identical for every range of two or more channels. One-channel images are not
(CASA maps the data onto a single-channel image differently), so a session never holds fewer
than two channels of a cube that has two.

Some cases need the whole cube. With `perchanweightdensity=False` the weight density sums all
channels: the coordinator computes it once on the full selection and every session loads it.
Auto-multithresh thresholds scale with the PSF sidelobe level of the deconvolver's own planes:
each session's sidelobethreshold is scaled to the cube's level (`automask_alignment`). Three
cannot be split exactly and run as ONE session (exact, not parallel): `briggsbwtaper` (its taper
comes from the imager's own fractional bandwidth, which casatools offers no way to pass), the
A-projection gridder, the mosaic gridder in most cases (`mosaic_split_blocker`), and tabular
spectral axes (optical-velocity widths).

Predicting the model visibilities interpolates the model cube in frequency, so the data of a
session's edge channels take part of their model from the neighbouring session's channels. A
session's imager therefore grids a margin of one or two channels beyond its range (`model_margin`).
Imager and deconvolver share those wider images (in the session's work folder), as tclean's own
imager and deconvolver share theirs: before each major cycle the margin planes of the model get
the neighbours' own planes (each session exports the few planes its neighbours need after every
minor cycle, as one file renamed into place, so that nobody reads a model while its owner writes
it), after it the margin planes of the residual are set to zero, so the deconvolver finds nothing
to clean there and its statistics (peaks, sidelobe levels, n-sigma rms, mask sums) are those of the
session's own channels, which the controller merges. Only a few planes move per cycle, because copying whole sub-cubes in and out of separate
images costs about 2 s of every 13 s major cycle (measured on a 128-channel 512-px cube). The session's own
channels become its products once, when the loop is over (`publish`).

The deconvolver of a session cleans only its channels; every session reports its
`initminorcycle`/`executeminorcycle` records to one iteration controller (`CubeIterationControl`,
on the coordinator), which merges them as tclean merges several image fields and hands every
session the same minor-cycle controls. CASA's cube deconvolver treats each plane on its own under
those controls, so the cube stops, and cleans, as the serial one does.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from pclean_provider import atomic_files
from pclean_provider.casa import channel_planes as planes
from pclean_provider.casa import session_registry
from pclean_provider.casa.channel_planes import extract_planes
from pclean_provider.casa.cube_grid import CubeGridError, imager_parameters, select_and_define
from pclean_provider.casa.imager_session import save_model
from pclean_provider.casa.iteration import iteration_summary
from pclean_provider.casa.msinfo import NO_READ_LOCK
from pclean_provider.casa.records import decode_record, encode_record
from pclean_provider.casa.session_protocol import CUBE_SESSION_OPERATIONS, SessionOperations

# Weightings whose density depends on the data of other channels when perchanweightdensity=False.
_DENSITY_WEIGHTINGS = ("briggs", "uniform", "briggsabs")
# The copy of a session's model taken before each minor cycle: a session rebuilt after a lost
# worker restarts its minor cycle from it.
MODEL_BACKUP = ".model.before-minor"
# The own planes a session's neighbours take into their margins, exported after each minor cycle.
MODEL_EDGES = ".model-edges.npz"
# What a session's shared images become as products (its own channels), in tclean's names.
PUBLISHED = (".psf", ".sumwt", ".weight", ".pb", ".residual", ".model", ".mask", ".image", ".image.pbcor")


class CubeSessionError(RuntimeError):
    """A sub-cube session could not be set up or could not do a step (names the session and step)."""


class CubeSessionSpec(BaseModel):
    """Everything one session needs: the records tclean would build, restricted to its channels."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    part: int  # the session's index in the cube (0-based), as the session protocol names it
    nparts: int
    chan_start: int
    chan_stop: int
    selection: dict[str, dict[str, Any]]
    image: dict[str, Any]  # encoded: the sub-cube's csys, nchan and imagename (tclean's own when whole)
    gridding: dict[str, Any]
    weighting: dict[str, Any]
    normalization: dict[str, Any]
    deconvolution: dict[str, Any] | None = None
    weight_density: str | None = None
    usemask: str = "user"
    full_nchan: int = -1  # the user's nchan (-1: what the data cover), to define the full cube again
    cube_nchan: int = 0  # the full cube's channel count on the coordinator
    # The channels the imager grids, [grid_start, grid_stop): the session's own channels plus a
    # margin whose model comes from the neighbouring sessions (see `model_margin`).
    grid_start: int = -1
    grid_stop: int = -1
    # (deconvolver image name, first own channel, stop own channel, the image's first channel) of every
    # other session whose own channels fall in this session's margin.
    model_sources: list[tuple[str, int, int, int]] = []
    workdir: str
    log_dir: str | None = None

    @property
    def label(self) -> str:
        return f"sub-cube {self.part + 1}/{self.nparts} (channels {self.chan_start}-{self.chan_stop - 1})"

    @property
    def imagename(self) -> str:
        return str(self.image["imagename"])

    @property
    def whole_cube(self) -> bool:
        """The only session: its image record is tclean's own (no coordinate system, the user's nchan)."""
        return self.nparts == 1

    @property
    def has_margin(self) -> bool:
        return 0 <= self.grid_start < self.chan_start or self.grid_stop > self.chan_stop

    @property
    def grid_imagename(self) -> str:
        """The images imager and deconvolver share: the products themselves when there is no margin."""
        return grid_image_name(self.workdir, self.imagename, self.has_margin)

    @property
    def margins(self) -> list[tuple[int, int]]:
        """The margin's channel ranges [first, stop), below and above the session's own channels."""
        return [(a, b) for a, b in ((self.grid_start, self.chan_start), (self.chan_stop, self.grid_stop)) if a < b]


def grid_image_name(workdir: str, imagename: str, has_margin: bool) -> str:
    return os.path.join(workdir, "grid") if has_margin else imagename


class CubeRecords(BaseModel):
    """The whole cube as the coordinator sees it: its sessions and the iteration parameters."""

    nchan: int
    sessions: list[CubeSessionSpec]
    iteration: dict[str, Any]  # encoded iterbotsink parameters


def needs_single_session(tclean_kwargs: dict[str, Any], csys: dict[str, Any] | None = None) -> str:
    """Why this cube must be imaged as one session ('' when it can be split)."""
    if str(tclean_kwargs.get("weighting", "")) == "briggsbwtaper":
        return ("weighting='briggsbwtaper' takes its taper from the image's fractional bandwidth, which "
                "casatools computes from each imager's own frequency range")
    gridder = str(tclean_kwargs.get("gridder", "standard"))
    if gridder == "mosaic":
        blocker = mosaic_split_blocker(tclean_kwargs)
        if blocker:
            return blocker
    elif gridder.startswith("awpr"):
        return awproject_split_blocker(gridder)
    elif gridder.startswith("awp"):
        return (f"gridder={gridder!r} samples its primary-beam convolution functions over the imager's own "
                "frequency range")
    if csys is not None and "tabular" in csys.get("spectral2", {}):
        return "the spectral axis is tabular (e.g. an optical-velocity width), which a reference-pixel shift cannot split"
    return frame_aligned_width_blocker(tclean_kwargs)


def awproject_split_blocker(gridder: str) -> str:
    """Why an A-projection cube (awproject, awprojectft) runs as one session.

    Not its convolution functions: tclean fills the cache (imager_base.initializeImagers ->
    makeCFCache: drygridding, fillcfcache, reloadcfcache) with the whole cube's imager, and a
    session that loads that cache is bit-identical to tclean - when its sub-cube starts at the
    cube's first channel. A sub-cube that starts at channel k > 0 is gridded wrongly by CASA's
    A-projection machine (AWProjectWBFT2, casatools 6.7) whatever cache it uses (shared, or filled by
    its own imager): only the data channels inside the sub-cube's own frequency range are gridded,
    and into image channel (data channel - 2k) instead of (data channel - k), so its first k
    channels get the wrong data and the rest none; for k >= the sub-cube's width nothing is gridded
    ("No useful data in AWProjectWBFT. Weights all zero") and makepsf segfaults. Serial tclean with
    the same start (start= channel k of the cube) does exactly the same (measured on a 6-channel
    cube, nchan=3: k=1 gives sum of weights [w2, w3, 0], k=2 [w4, 0, 0], k=3 a crash, where w are
    the whole cube's; the same with wbawp=False, with conjbeams=True, and with aterm=True, where
    k=1 leaves the last channel empty too). A channel selection that starts past channel 0 (spw='0:3~15') fails in the
    gridder too ("ArrayBase::validateConformance"). So only the session that holds channel 0 could
    reproduce tclean; one session does (measured bit-identical, cache filled on the fly).
    """
    return (f"gridder={gridder!r}: CASA's A-projection gridder (AWProjectWBFT2) maps a sub-cube's data "
            "to the wrong channels when the sub-cube does not start at the cube's first channel "
            "(measured: the same with the whole cube's convolution-function cache), so only one session "
            "equals tclean")


# CASA narrows a cube imager's data to the channels of its own frequency range
# (SynthesisImagerVi2::tuneSelectData) unless the spectral window has fewer channels than this
# (and no model column is written).
RETUNE_MIN_SPW_CHANNELS = 30


def mosaic_split_blocker(tclean_kwargs: dict[str, Any]) -> str:
    """Why a gridder='mosaic' cube cannot be split exactly ('' when it can).

    The mosaic gridder (CASA's MosaicFT with SimplePBConvFunc/HetArrayConvFunc) makes its
    convolution functions from a list of frequencies, `interpVisFreq_p`: one primary beam per 0.5 %
    of the spectral window's top frequency (or one per frequency when there are few), all rescaled
    from the beam at the LAST frequency of the list (SimplePBConvFunc::findUsefulChannels and
    findConvFunction). With linear or cubic interpolation that list is the imager's own image
    channels, clamped to each buffer's data (FTMachine::interpolateFrequencyTogrid), so a sub-cube
    gets other beams than the whole cube (measured, 4-channel two-pointing cube in two sessions:
    0.8 % of the PSF peak, 0.6 % of the PB in the last channel). With interpolation='nearest' the
    list is the buffer's data channels, the same for every session as long as CASA does not narrow
    each imager's data to its own range, which it skips for spectral windows of fewer than
    RETUNE_MIN_SPW_CHANNELS channels (measured: bit-identical; with 32 channels, nearest too is far
    off). CASA's own chunked cube (several processes, or too little memory for one chunk) has the
    same dependence, so no split reproduces a one-chunk tclean in the other cases.
    """
    interpolation = str(tclean_kwargs.get("interpolation", "linear") or "linear")
    if interpolation != "nearest":
        return (f"gridder='mosaic' with interpolation={interpolation!r} samples its primary beams over the "
                "imager's own image channels (measured: split sessions differ from tclean by 0.8 % of the "
                "PSF peak in an edge channel); interpolation='nearest' can split when every spectral window "
                f"has fewer than {RETUNE_MIN_SPW_CHANNELS} channels")
    if str(tclean_kwargs.get("savemodel", "none") or "none") != "none":
        return "gridder='mosaic' with savemodel: CASA narrows each imager's data to its own channels"
    spws = _selected_spws(tclean_kwargs)
    if spws is None:
        return "gridder='mosaic': the channel counts of the selected spectral windows could not be read"
    too_many = {spw.label: spw.nchan for spw in spws if spw.nchan >= RETUNE_MIN_SPW_CHANNELS}
    if too_many:
        named = ", ".join(f"{name} ({n} channels)" for name, n in sorted(too_many.items()))
        return (f"gridder='mosaic': CASA narrows each imager's data to its own channels in spectral windows of "
                f"{RETUNE_MIN_SPW_CHANNELS} channels or more ({named}), which changes the primary beams it samples")
    return ""


class SelectedSpw(BaseModel):
    """A selected spectral window as the MS stores it."""

    label: str  # '<ms> spw <id>'
    nchan: int
    chan_width_hz: float  # the first channel's, unsigned
    frame: str  # MEAS_FREQ_REF by name (TOPO, LSRK, ...)


# casacore's MFrequency::Types in order: MEAS_FREQ_REF stores the index.
FREQUENCY_FRAMES = ("REST", "LSRK", "LSRD", "BARY", "GEO", "TOPO", "GALACTO", "LGROUP", "CMB")


def _selected_spws(tclean_kwargs: dict[str, Any]) -> list[SelectedSpw] | None:
    """Every selected spectral window of every MS; None if unreadable."""
    import casatools

    vis = tclean_kwargs.get("vis", [])
    vis = [vis] if isinstance(vis, str) else list(vis)
    spw = tclean_kwargs.get("spw", "")
    spws = [spw] * len(vis) if isinstance(spw, str) else list(spw)
    if len(spws) != len(vis):
        return None
    out: list[SelectedSpw] = []
    ms = casatools.ms()
    tb = casatools.table()
    try:
        for path, sel in zip(vis, spws, strict=True):
            ids = [int(s) for s in ms.msseltoindex(vis=path, spw=sel or "").get("spw", [])]
            tb.open(os.path.join(str(path), "SPECTRAL_WINDOW"), nomodify=True, lockoptions=NO_READ_LOCK)
            try:
                ids = ids or list(range(int(tb.nrows())))
                for sid in ids:
                    widths = tb.getcell("CHAN_WIDTH", sid)
                    ref = int(tb.getcell("MEAS_FREQ_REF", sid))
                    out.append(SelectedSpw(
                        label=f"{os.path.basename(str(path).rstrip('/'))} spw {sid}", nchan=int(tb.getcell("NUM_CHAN", sid)),
                        chan_width_hz=abs(float(widths[0])),
                        frame=FREQUENCY_FRAMES[ref] if 0 <= ref < len(FREQUENCY_FRAMES) else str(ref)))
            finally:
                tb.close()
    except RuntimeError:
        return None
    finally:
        tb.done()
        ms.done()
    return out


def _width_hz(width: Any) -> float | None:
    """A `width` given as a frequency, in Hz; None for channels, velocities or the default."""
    import casatools

    if isinstance(width, dict) and "value" in width:
        width = f"{width['value']}{width.get('unit', '')}"
    if not isinstance(width, str) or not width.strip():
        return None
    qa = casatools.quanta()
    try:
        q = qa.quantity(width)
        if not q.get("unit") or not qa.compare(q, qa.quantity("1Hz")):
            return None
        return abs(float(qa.convert(q, "Hz")["value"]))
    except RuntimeError:
        return None
    finally:
        qa.done()


def frame_aligned_width_blocker(tclean_kwargs: dict[str, Any]) -> str:
    """Why a cube whose width is a whole number of data channels in the data's own frame cannot be
    split exactly ('' when it can).

    CASA decides how many data channels it averages into an image channel from the first two image
    channels of each imager after both are converted to LSRK (FTMachine::interpolateFrequencyTogrid,
    a floor of the width ratio). In the data's own frame that ratio is a whole number up to rounding,
    so the floor falls either way depending on the imager's first frequency: measured on 1 MHz
    channels with width='2MHz' in TOPO, a session starting at channel 5 had sums of weights 0.5-3 %
    off tclean's whole cube, and serial tclean started at that channel differs from its own whole
    cube the same way. One session is the whole cube's imager, hence exact."""
    if str(tclean_kwargs.get("specmode", "cube")) != "cube":
        return ""  # cubedata: no frame conversion, the ratio is exact
    width_hz = _width_hz(tclean_kwargs.get("width"))
    if not width_hz:
        return ""
    outframe = str(tclean_kwargs.get("outframe", "") or "LSRK").upper()
    spws = _selected_spws(tclean_kwargs)
    if spws is None:
        return "width in frequency: the channel widths of the selected spectral windows could not be read"
    for spw in spws:
        ratio = width_hz / spw.chan_width_hz if spw.chan_width_hz else 0.0
        whole = round(ratio)
        if spw.frame == outframe and whole >= 2 and abs(ratio - whole) <= 1e-9 * ratio:
            return (f"width={tclean_kwargs.get('width')!r} is exactly {whole} data channels of {spw.label} in its "
                    f"own frame ({outframe}): CASA's count of data channels per image channel then depends on "
                    "each imager's first frequency (a rounding knife-edge), so only the whole cube's imager "
                    "gives tclean's weights")
    return ""


def _scrub(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def shifted_csys(csys: dict[str, Any], first_channel: int) -> dict[str, Any]:
    """The cube's coordinate system starting at `first_channel` (a linear axis' reference pixel moved)."""
    sub = copy.deepcopy(csys)
    if "wcs" in csys["spectral2"]:
        sub["spectral2"]["wcs"]["crpix"] = float(csys["spectral2"]["wcs"]["crpix"]) - first_channel
    return sub


def _define_full_cube(si: Any, selpars: dict, impars: dict, gridpars: dict, weightpars: dict, workdir: str,
                      split: bool) -> tuple[dict[str, Any], int, str | None]:
    """The full cube's coordinate system and channel count; and, when split sessions need it, the
    weight density of all the data (perchanweightdensity=False sums every channel's)."""
    full = copy.deepcopy(impars)
    full["imagename"] = os.path.join(workdir, "full-cube")
    csys, nchan = select_and_define(si, selpars, full, gridpars)
    density = None
    if split and weightpars.get("type") in _DENSITY_WEIGHTINGS and not weightpars.get("usecubebriggs", True):
        si.setweighting(**weightpars)
        density = str(si.getweightdensity())
    return csys, nchan, density


def _without_model_writes(selpars: dict[str, dict[str, Any]], iterpars: dict[str, Any]) -> tuple[dict, dict]:
    """Split sessions never write the MS: tclean's savemodel is done once, after the loop, from the
    whole cube's model (`save_cube_model`), not by several sessions writing one table at once."""
    selpars = {key: dict(sel, readonly=True, usescratch=False) for key, sel in selpars.items()}
    return selpars, dict(iterpars, savemodel="none")


def saves_model_after_loop(tclean_kwargs: dict[str, Any], nsessions: int) -> bool:
    """Whether the model visibilities are saved after the loop rather than by the one session in its
    last major cycle: always for split sessions, and where tclean itself saves after its loop
    (auto-masking or nsigma while cleaning: its parameter check makes the loop's selection read-only)."""
    if str(tclean_kwargs.get("savemodel", "none") or "none") == "none":
        return False
    cleaning = int(tclean_kwargs.get("niter", 0) or 0) > 0
    after_in_tclean = cleaning and (str(tclean_kwargs.get("usemask", "user")) == "auto-multithresh"
                                    or float(tclean_kwargs.get("nsigma", 0.0) or 0.0) > 0.0)
    # tclean's predict-only call (niter=0, calcres=False) runs no major cycle: it predicts afterwards.
    predict_only = not cleaning and not bool(tclean_kwargs.get("calcres", True))
    return nsessions > 1 or after_in_tclean or predict_only


def save_cube_model(tclean_kwargs: dict[str, Any], workdir: str) -> None:
    """tclean's savemodel for a cube imaged in split sessions: predict the published cube's model
    (tclean_kwargs' imagename) into the MS(s), as MODEL_DATA or the virtual model.

    One imager over the whole cube, as tclean's own predict after its loop (auto-masking, nsigma):
    the model is the final one, and every data channel interpolates it across the whole cube.
    """
    params = imager_parameters(tclean_kwargs)
    if not params.checkParameters():
        raise CubeGridError("CASA rejected the imaging parameters while saving the model; see the CASA log.")
    # With auto-masking or nsigma the check makes the selection read-only (tclean saves after its loop
    # then); tclean undoes that before its predict, and so does this.
    params.resetParameters()
    save_model(params.getSelPars(), params.getImagePars()["0"], params.getGridPars()["0"],
               params.getNormPars()["0"], workdir)


def model_margin(tclean_kwargs: dict[str, Any], nsessions: int) -> int:
    """How many neighbouring channels a session's imager must also grid, each side.

    Predicting the model visibilities of a data channel interpolates the model cube in frequency
    (tclean's `interpolation`): a data channel near a session's edge takes part of its model from
    the neighbouring session's first or last channels. Without them the edge channels' residuals
    drift from tclean's at every major cycle (measured: 6 iterations and 0.5 % of the peak apart
    on a width spanning two data channels). Linear interpolation reaches one channel beyond the
    edge, cubic two; nearest none (measured bit-identical). Dirty cubes predict nothing.
    """
    if nsessions < 2 or int(tclean_kwargs.get("niter", 0) or 0) <= 0:
        return 0
    interpolation = str(tclean_kwargs.get("interpolation", "linear") or "linear")
    return {"nearest": 0, "linear": 1}.get(interpolation, 2)


def build_cube_records(tclean_kwargs: dict[str, Any], ranges: list[tuple[int, int]], prefixes: list[str],
                       run_id: str, workdir: str, log_dir: str | None = None) -> CubeRecords:
    """Every session's records, derived from the full cube as CASA defines it (split sessions only).

    `ranges` are [start, stop) channel ranges covering the cube, `prefixes` the image name of each.
    Split sessions: reads the MS (selection, grid; the weight density when they need it), writes nothing but
    that density under `workdir`.
    """
    import casatools

    params = imager_parameters(tclean_kwargs)
    if not params.checkParameters():
        raise CubeGridError("CASA rejected the imaging parameters; see the CASA log for the parameter it names.")
    selpars = params.getSelPars()
    impars = params.getImagePars()["0"]
    gridpars = params.getGridPars()["0"]
    weightpars = params.getWeightPars()
    decpars = params.getDecPars()["0"]
    iterpars = params.getIterPars()
    normpars = params.getNormPars()["0"]
    os.makedirs(workdir, exist_ok=True)
    if len(ranges) > 1:
        selpars, iterpars = _without_model_writes(selpars, iterpars)
    if len(ranges) == 1:
        # One session is the whole cube: it defines its image from tclean's own records, as tclean
        # does, so nothing here needs CASA's coordinate system (one selection and definition less).
        csys, nchan, density = None, ranges[0][1], None
    else:
        si = casatools.synthesisimager()
        try:
            # defineimage and the weight density leave scratch tables in the working directory.
            with contextlib.chdir(workdir):
                csys, nchan, density = _define_full_cube(si, selpars, impars, gridpars, weightpars, workdir,
                                                         split=True)
        except RuntimeError as err:
            raise CubeGridError(f"CASA could not define the cube: {err}") from err
        finally:
            si.done()
        if ranges[-1][1] != nchan:
            raise CubeGridError(f"the cube has {nchan} channels here, the plan {ranges[-1][1]}; re-plan.")
    usemask = str(decpars.get("usemask", "user"))
    with_deconvolver = int(iterpars.get("niter", 0)) > 0 or bool(tclean_kwargs.get("restoration", True))
    sessions = []
    margin = model_margin(tclean_kwargs, len(ranges))
    grids = [(max(0, a - margin), min(nchan, b + margin)) for a, b in ranges]
    session_dirs = [os.path.join(workdir, f"session{part:04d}") for part in range(len(ranges))]
    deconv_names = [grid_image_name(d, p, (lo, hi) != rng)
                    for d, p, (lo, hi), rng in zip(session_dirs, prefixes, grids, ranges, strict=True)]
    for part, ((a, b), prefix) in enumerate(zip(ranges, prefixes, strict=True)):
        lo, hi = grids[part]
        sources = [(deconv_names[k], s, e, grids[k][0]) for k, (s, e) in enumerate(ranges)
                   if k != part and s < hi and e > lo]
        image = copy.deepcopy(impars)
        image["imagename"] = prefix
        if csys is not None:
            image.update(csys=shifted_csys(csys, a), nchan=b - a)
        norm = copy.deepcopy(normpars)
        norm["imagename"] = prefix
        dec = None
        if with_deconvolver:
            dec = copy.deepcopy(decpars)
            dec["imagename"] = deconv_names[part]
        sessions.append(CubeSessionSpec(
            run_id=run_id, part=part, nparts=len(ranges), chan_start=a, chan_stop=b,
            selection=encode_record(selpars), image=encode_record(image), gridding=encode_record(gridpars),
            weighting=encode_record(weightpars), normalization=encode_record(norm),
            deconvolution=encode_record(dec) if dec is not None else None, weight_density=density,
            usemask=usemask, full_nchan=int(impars["nchan"]), cube_nchan=nchan, grid_start=lo, grid_stop=hi,
            model_sources=sources, workdir=session_dirs[part], log_dir=log_dir))
    return CubeRecords(nchan=nchan, sessions=sessions, iteration=encode_record(iterpars))


class CubeSession(SessionOperations):
    """The imager (+ normalizer, + deconvolver) of one sub-cube."""

    operations = CUBE_SESSION_OPERATIONS

    def __init__(self, spec: CubeSessionSpec) -> None:
        import casatools

        self.spec = spec
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        self.si = self.ps = self.sd = None
        with contextlib.chdir(spec.workdir):
            try:
                self.si = casatools.synthesisimager()
                selection = decode_record(spec.selection)
                for key in sorted(selection):
                    self.si.selectdata(selection[key])
                image = decode_record(spec.image)
                gridding = decode_record(spec.gridding)
                if not spec.whole_cube:
                    self._define_spectral_axis(image, self._local_csys(selection, image, gridding))
                normalization = decode_record(spec.normalization)
                if spec.has_margin:
                    # Imager and deconvolver share the wider images in the work folder; the
                    # products get the session's own channels at the end (`publish`).
                    grid = spec.grid_imagename
                    image.update(nchan=spec.grid_stop - spec.grid_start, imagename=grid)
                    gridding["imagename"] = grid
                    normalization["imagename"] = grid
                self.si.defineimage(image, gridding)
                self.si.normalizerinfo(normalization)
                self.si.setweighting(**decode_record(spec.weighting))
                if spec.weight_density:
                    self.si.setweightdensity(spec.weight_density)
                self.ps = casatools.synthesisnormalizer()
                self.ps.setupnormalizer(normpars=normalization)
                if spec.deconvolution is not None:
                    self.sd = casatools.synthesisdeconvolver()
                    self.sd.setupdeconvolution(decpars=decode_record(spec.deconvolution))
            except Exception:
                self.close()
                raise

    def _local_csys(self, selection: dict[str, Any], image: dict[str, Any], gridding: dict[str, Any]) -> dict:
        """The full cube's coordinate system as CASA defines it in THIS process.

        A partly covered edge channel is knife-edge: CASA's frame conversion of one and the same cube
        differs between processes at the mHz level (it depends on what the process did with casatools
        before), enough to decide whether any visibility falls into that channel. Serial tclean
        defines its grid and images in one process; a session does the same (the concatenation checks
        every session's frequencies against the plan).
        """
        import casatools

        full = copy.deepcopy(image)
        full.pop("csys", None)
        full["nchan"] = self.spec.full_nchan
        full["imagename"] = os.path.join(self.spec.workdir, "full-cube")
        probe = casatools.synthesisimager()
        try:
            csys, nchan = select_and_define(probe, selection, full, gridding)
        finally:
            probe.done()
        if nchan != self.spec.cube_nchan:
            raise CubeSessionError(f"{self.spec.label}: the cube has {nchan} channels in this process, "
                                   f"{self.spec.cube_nchan} on the coordinator; the MS changed? Re-run.")
        return csys

    def _define_spectral_axis(self, image: dict[str, Any], full_csys: dict[str, Any]) -> None:
        """Give `image` the session's part of the full cube's spectral axis, as tclean would image it.

        A 'cube' session gets the full cube's coordinate system with the reference pixel moved. A
        'cubedata' cube has no frame ('Undefined'): given as a coordinate system, CASA maps the data
        onto it differently from the cube it defines itself (measured: the first channel left empty
        and the others 1e-4 of the peak off), while a frequency start and width reproduce tclean's
        cube bit for bit, split or whole.
        """
        first = self.spec.grid_start if self.spec.has_margin else self.spec.chan_start
        if str(image.get("specmode", "cube")) == "cubedata":
            wcs = full_csys["spectral2"]["wcs"]
            image.pop("csys", None)
            image["start"] = f"{float(wcs['crval']) + (first - float(wcs['crpix'])) * float(wcs['cdelt']):.17g}Hz"
            image["width"] = f"{float(wcs['cdelt']):.17g}Hz"
        else:
            image["csys"] = shifted_csys(full_csys, first)

    @property
    def imagename(self) -> str:
        return self.spec.imagename

    @property
    def shared_name(self) -> str:
        """The images this session's imager and deconvolver work on (wider than the products with a margin)."""
        return self.spec.grid_imagename

    # -- the margin: a few planes per cycle -----------------------------------------------------
    def _neighbour_models_in(self) -> None:
        """The margin planes of the model: the neighbouring sessions' own planes, as they cleaned them
        (from the edge planes each one exported after its last minor cycle)."""
        spec = self.spec
        if not spec.has_margin:
            return
        sources = [(edges, start, stop) for name, start, stop, _ in spec.model_sources
                   if (edges := read_model_edges(name)) is not None]
        if not sources:
            return  # the dirty image: no model anywhere yet
        model = self.shared_name + ".model"
        if not os.path.isdir(model):
            # This session's deconvolver has written no model yet (its own planes are zero).
            planes.new_image_like(self.shared_name + ".residual", model, sources[0][0].unit)
        for edges, start, stop in sources:
            for lo, hi in spec.margins:
                lo, hi = max(lo, start), min(hi, stop)
                if lo < hi:
                    planes.write_planes(model, edges.planes(lo, hi), lo, spec.grid_start)

    def _export_model_edges(self) -> None:
        """This session's own channels that the neighbours' margins take, from its model as it is now."""
        spec = self.spec
        model = self.shared_name + ".model"
        if not spec.has_margin or not os.path.isdir(model):
            return
        width = max(spec.chan_start - spec.grid_start, spec.grid_stop - spec.chan_stop)
        write_model_edges(self.shared_name, model, spec.chan_start, spec.chan_stop, width, spec.grid_start)

    def _zero_margin_residual(self) -> None:
        """Nothing to clean in the margin: those channels are the neighbours' to clean."""
        for lo, hi in self.spec.margins:
            planes.zero_planes(self.shared_name + ".residual", lo, hi, self.spec.grid_start)

    # -- the operations (session_protocol.CUBE_SESSION_OPERATIONS), in tclean's order --------------
    def make_psf(self) -> None:
        self.si.makepsf()
        if self.sd is not None:
            # Fits the beam per plane and applies restoringbeam/psfcutoff, as tclean's check_psf does.
            self.sd.checkrestoringbeam()

    def make_pb(self, gridder: str) -> None:
        # tclean: the standard gridder makes a cube's PB together with the PSF.
        if "stand" not in gridder:
            self.si.makepb()
        self.ps.normalizeprimarybeam()

    def major_cycle(self, lastcycle: bool) -> None:
        self._neighbour_models_in()
        self.si.executemajorcycle(controls={"lastcycle": bool(lastcycle), "usemask": self.spec.usemask})
        self._zero_margin_residual()

    def init_minor(self) -> str:
        return _dump(self.sd.initminorcycle())

    def setup_mask(self) -> str:
        return "1" if self.sd.setupmask() else "0"

    def minor_cycle(self, controls: str, keep_backup: bool = True) -> str:
        model = self.shared_name + ".model"
        if keep_backup and os.path.isdir(model):
            # The backup is the model before THIS minor cycle, or absent: the earlier one goes first,
            # and the new one appears whole (a worker killed while copying left a partial folder
            # that a rebuilt session took for the model; without a backup it keeps the model on
            # disk, which the minor cycle has not touched yet).
            backup = self.shared_name + MODEL_BACKUP
            _scrub(backup)
            with atomic_files.staged(backup) as tmp:
                shutil.copytree(model, tmp)
        record = self.sd.executeminorcycle(iterbotrecord=decode_record(_load(controls)))
        self._export_model_edges()
        if "auto" in self.spec.usemask and os.path.isdir(self.shared_name + ".mask"):
            # tclean keeps the mask the last minor cycle used, to revert to it when the run stops.
            # Whole or not at all (as the model's backup): a rebuilt session may revert to it.
            with atomic_files.staged(self.shared_name + ".prev.mask") as tmp:
                shutil.copytree(self.shared_name + ".mask", tmp)
        return _dump(record)

    def revert_automask(self) -> None:
        prev = self.shared_name + ".prev.mask"
        if os.path.isdir(prev):
            # One rename over the mask: a worker lost here leaves the old mask or the reverted one.
            atomic_files.put_in_place(prev, self.shared_name + ".mask")

    def replace_deconvolver(self, deconvolution: str) -> None:
        """A new deconvolver from these records (automask thresholds aligned to the whole cube)."""
        import casatools

        self.sd.done()
        self.sd = casatools.synthesisdeconvolver()
        self.sd.setupdeconvolution(decpars=decode_record(_load(deconvolution)))
        # The replaced one had computed its first statistics (initminorcycle) before masks are set up.
        self.sd.initminorcycle()

    def restore_model_backup(self) -> None:
        """After a lost worker: the model as it was before the interrupted minor cycle."""
        backup = self.shared_name + MODEL_BACKUP
        if os.path.isdir(backup):
            # Whole or not at all: this worker may be lost too, and the next rebuild restores again.
            with atomic_files.staged(self.shared_name + ".model") as tmp:
                shutil.copytree(backup, tmp)
            self._export_model_edges()

    def restore(self) -> None:
        self.sd.restore()

    def pbcor(self) -> None:
        self.sd.pbcor()

    def publish(self) -> None:
        """The session's own channels of every image as its products (a no-op without a margin).

        Each product is written under a temporary name and renamed (`extract_planes`), with the
        image's mask and per-plane beams; run again after a lost worker, it writes the same.
        """
        if not self.spec.has_margin:
            return
        for suffix in PUBLISHED:
            src = self.shared_name + suffix
            if os.path.isdir(src):
                _scrub(self.imagename + suffix)
                extract_planes(src, self.imagename + suffix, self.spec.chan_start, self.spec.chan_stop,
                               self.spec.grid_start)

    def close(self) -> None:
        for tool in (self.sd, self.ps, self.si):
            if tool is not None:
                try:
                    tool.done()
                except Exception:  # closing is best effort; the tool may already be gone
                    pass
        self.sd = self.ps = self.si = None
        _scrub(self.shared_name + MODEL_BACKUP)


class ModelEdges:
    """A session's exported edge planes: blocks of consecutive channels of its model."""

    def __init__(self, unit: str, axis: int, blocks: list[tuple[int, Any]]) -> None:
        self.unit, self.axis, self.blocks = unit, axis, blocks

    def planes(self, first: int, stop: int):
        """Cube channels [first, stop), which lie in one exported block."""
        for start, pixels in self.blocks:
            if start <= first and stop <= start + pixels.shape[self.axis]:
                return np.take(pixels, range(first - start, stop - start), axis=self.axis)
        raise CubeSessionError(f"channels {first}-{stop - 1} are not among a neighbour's exported model planes")


def model_edges_path(deconvolver_name: str) -> str:
    return deconvolver_name + MODEL_EDGES


def write_model_edges(deconvolver_name: str, model: str, chan_start: int, chan_stop: int, width: int,
                      image_first: int) -> None:
    """The first and last `width` own channels of `model`, as one file a neighbour reads whole.

    A neighbour needs these planes during the next major cycle, while this session writes the margin
    planes of its own model: reading the live model then raced with that write (measured, 8 sessions
    on 2 cores: "Unable to open image"). The file is written under a temporary name and renamed.
    """
    spans = sorted({(chan_start, min(chan_start + width, chan_stop)), (max(chan_stop - width, chan_start), chan_stop)})
    blocks = {f"block{start}": planes.read_planes(model, start, stop, image_first) for start, stop in spans}
    with atomic_files.replacing(model_edges_path(deconvolver_name)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, unit=np.array(planes.brightness_unit(model)), axis=np.array(planes.channel_axis(model)),
                 **blocks)


def read_model_edges(deconvolver_name: str) -> ModelEdges | None:
    """A neighbour's exported edge planes; None before it has a model."""
    path = model_edges_path(deconvolver_name)
    if not os.path.isfile(path):
        return None
    with np.load(path) as data:
        blocks = [(int(key[len("block"):]), data[key]) for key in data.files if key.startswith("block")]
        return ModelEdges(str(data["unit"]), int(data["axis"]), sorted(blocks, key=lambda b: b[0]))


def automask_alignment(records: list[str], deconvolution: list[dict[str, Any] | None]) -> dict[int, str]:
    """The deconvolution records that make every session's auto-multithresh act as the whole cube's.

    Auto-multithresh masks what lies above sidelobethreshold x (PSF sidelobe level) x peak, with the
    sidelobe level the largest over the planes of the deconvolver's own PSF, which casatools does
    not let anyone set. A session's own level (`maxpsfsidelobe` of its first initminorcycle record)
    can be lower than the cube's; scaling its sidelobethreshold by cube/own gives it the cube's
    threshold. Returns {part: encoded deconvolution record} for the sessions that need a change.
    """
    levels = [float(decode_record(_load(text)).get("maxpsfsidelobe", 0.0)) for text in records]
    cube_level = max(levels, default=0.0)
    out: dict[int, str] = {}
    for part, (level, dec) in enumerate(zip(levels, deconvolution, strict=True)):
        if dec is None or not 0.0 < level < cube_level:
            continue
        record = decode_record(dec)
        record["sidelobethreshold"] = float(record["sidelobethreshold"]) * cube_level / level
        out[part] = _dump(record)
    return out


def _dump(record: Any) -> str:
    import json

    return json.dumps(encode_record(record))


def _load(text: str) -> Any:
    import json

    return json.loads(text)


class CubeIterationControl:
    """The one iteration controller of a cube: tclean's iterbotsink, fed by every session."""

    def __init__(self, iteration: dict[str, Any]) -> None:
        import casatools

        self.iteration = decode_record(iteration)
        self.ib = casatools.iterbotsink()
        self.ib.setupiteration(iterpars=self.iteration)

    def merge_init(self, records: list[str]) -> None:
        """Merge every session's initminorcycle record, as tclean merges its fields' records.

        The iterbot takes peaks, sidelobes and mask sums over all records, but keeps the n-sigma
        threshold of the LAST record merged. A cube deconvolver reports nsigma times the largest
        robust rms over its planes; over several sessions that is the largest of their values, so
        the session reporting it is merged last.
        """
        self.ib.resetminorcycleinfo()
        decoded = [(part, decode_record(_load(text))) for part, text in enumerate(records)]
        decoded.sort(key=lambda item: float(item[1].get("nsigmathreshold", 0.0)))
        for part, rec in decoded:
            self.ib.mergeinitrecord(rec, part)

    def stop_code(self, reached_major_limit: bool = False) -> int:
        return int(self.ib.cleanComplete(reachedMajorLimit=bool(reached_major_limit)))

    def is_last_cycle(self) -> bool:
        return self.ib.cleanComplete(lastcyclecheck=True) > 0

    def controls(self) -> str:
        record = self.ib.getminorcyclecontrols()
        self.ib.resetminorcycleinfo()
        return _dump(record)

    def merge_exec(self, records: list[str]) -> int:
        """Merge every session's minor-cycle record; returns the iterations they did in total."""
        done = 0
        for part, text in enumerate(records):
            rec = decode_record(_load(text))
            done += int(rec.get("iterdone", 0))
            self.ib.mergeexecrecord(rec, part)
        return done

    def end_major_cycle(self) -> None:
        self.ib.endmajorcycle()

    @property
    def nmajor(self) -> int:
        return int(self.iteration.get("nmajor", -1))

    def summary(self) -> dict[str, Any]:
        return iteration_summary(self.ib)

    def close(self) -> None:
        try:
            self.ib.done()
        except Exception:  # best effort at the end of a run
            pass


def open_cube_session(spec_json: str) -> str:
    """Build and register a session (Dask task or in-process); returns a PartReply as JSON."""
    spec = CubeSessionSpec.model_validate_json(spec_json)
    return session_registry.register(spec, lambda: CubeSession(spec))
