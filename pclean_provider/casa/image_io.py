"""Reading CASA images (and the visibility weights QA needs) for QA and archive.

This is the only module of QA and archive that touches casatools, so that the metric and
scoring code in ``pclean_provider.pipeline`` stays plain numpy and can be unit-tested without
CASA. Everything returned here is numpy arrays or plain Python values.

Pixel planes are returned as ``(x, y)`` arrays of Stokes I (the first Stokes plane), one
channel at a time, whatever the axis order of the image on disk, so callers never reason about
CASA axis orders and a large cube never has to fit in memory at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pclean_provider.casa.runtime import ensure_casa_runtime

RAD_TO_ARCSEC = 180.0 / np.pi * 3600.0
RAD_TO_DEG = 180.0 / np.pi
C_M_PER_S = 299_792_458.0

# Correlation type codes of the MeasurementSet POLARIZATION table for the parallel hands.
_PARALLEL_HAND_PAIRS = ((5, 8), (9, 12))  # (RR, LL), (XX, YY)


class ImageReadError(RuntimeError):
    """An image product is missing or cannot be read."""


@dataclass
class Beam:
    major_arcsec: float
    minor_arcsec: float
    pa_deg: float


def _runtime():
    # No log arguments: the first caller in this process (CLI, worker set-up) chose the log.
    ensure_casa_runtime()
    import casatools

    return casatools


def _require(path: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise ImageReadError(f"image {path} does not exist (expected a CASA image directory)")
    return path


def _require_ms(vis: str | os.PathLike) -> str:
    vis = os.path.abspath(os.fspath(vis))
    if not os.path.isdir(vis):
        raise ImageReadError(f"vis={vis} does not exist (expected a MeasurementSet directory)")
    return vis


def _open_image_tool(ct, path: str):
    """A casatools image tool opened on ``path`` (ImageReadError naming the path if it cannot be)."""
    ia = ct.image()
    try:
        ia.open(path)
    except Exception as exc:  # casatools raises bare RuntimeErrors
        ia.done()
        raise ImageReadError(f"cannot open image {path}: {exc}") from exc
    return ia


class _OpenImage:
    """Context manager around one casatools image tool (always closed, even on errors)."""

    def __init__(self, path: str):
        self.path = _require(path)
        self.ia = None

    def __enter__(self):
        self.ia = _open_image_tool(_runtime(), self.path)
        return self.ia

    def __exit__(self, *exc):
        self.ia.close()
        self.ia.done()
        return False


def _axes(cs) -> tuple[list[int], int | None, int | None]:
    direction = [int(a) for a in cs.findcoordinate("direction")["pixel"]]
    spectral = cs.findcoordinate("spectral")
    stokes = cs.findcoordinate("stokes")
    spec_axis = int(spectral["pixel"][0]) if spectral["return"] and len(spectral["pixel"]) else None
    stokes_axis = int(stokes["pixel"][0]) if stokes["return"] and len(stokes["pixel"]) else None
    if len(direction) != 2:
        raise ImageReadError("image has no two-axis direction coordinate")
    return direction, spec_axis, stokes_axis


def _image_axes(ia) -> tuple[list[int], int | None, int | None]:
    """:func:`_axes` of an open image (its coordinate system tool is released again)."""
    cs = ia.coordsys()
    try:
        return _axes(cs)
    finally:
        cs.done()


def _beam_from_record(rec: dict, qa) -> Beam | None:
    try:
        major = qa.convert(rec["major"], "arcsec")["value"]
        minor = qa.convert(rec["minor"], "arcsec")["value"]
        pa = qa.convert(rec["positionangle"], "deg")["value"]
    except (KeyError, TypeError):
        return None
    if major <= 0 or minor <= 0:
        return None
    return Beam(float(major), float(minor), float(pa))


def _read_beams(ia, qa, nchan: int) -> list[Beam | None]:
    rec = ia.restoringbeam()
    if not rec:
        return [None] * nchan
    if "beams" in rec:
        beams = []
        for chan in range(nchan):
            per_pol = rec["beams"].get(f"*{chan}", {})
            beams.append(_beam_from_record(per_pol.get("*0", {}), qa))
        return beams
    return [_beam_from_record(rec, qa)] * nchan


class ImageReader:
    """An open image read one channel plane at a time, so cubes of any size fit in memory.

    Metadata (shape, channel frequencies, cell, unit, beams) is read on opening; ``plane(c)``
    returns channel c's Stokes I pixels and pixel mask as (x, y) arrays.
    """

    def __init__(self, path: str | os.PathLike, *, with_beams: bool = True):
        ct = _runtime()
        self.path = _require(path)
        self._ia = _open_image_tool(ct, self.path)
        try:
            self._read_metadata(ct.quanta(), with_beams)
        except Exception:
            self.close()
            raise

    def _read_metadata(self, qa, with_beams: bool) -> None:
        ia = self._ia
        self.shape = tuple(int(s) for s in ia.shape())
        cs = ia.coordsys()
        try:
            self._direction, self._spec_axis, self._stokes_axis = _axes(cs)
            incr = cs.increment(format="n")["numeric"]
            world_dir = [int(a) for a in cs.findcoordinate("direction")["world"]]
            self.cell_arcsec = (
                abs(float(incr[world_dir[0]])) * RAD_TO_ARCSEC,
                abs(float(incr[world_dir[1]])) * RAD_TO_ARCSEC,
            )
            self.nx, self.ny = self.shape[self._direction[0]], self.shape[self._direction[1]]
            self.nchan = self.shape[self._spec_axis] if self._spec_axis is not None else 1
            self.freqs_hz = np.zeros(self.nchan)
            self.chan_width_hz = 0.0
            if self._spec_axis is not None:
                world_spec = int(cs.findcoordinate("spectral")["world"][0])
                pixel = [0.0] * len(self.shape)
                for chan in range(self.nchan):
                    pixel[self._spec_axis] = float(chan)
                    self.freqs_hz[chan] = cs.toworld(pixel, "n")["numeric"][world_spec]
                self.chan_width_hz = abs(float(incr[world_spec]))
            self.stokes = [str(s) for s in cs.stokes()] if self._stokes_axis is not None else ["I"]
        finally:
            cs.done()
        self.unit = ia.brightnessunit()
        self.beams = _read_beams(ia, qa, self.nchan) if with_beams else []

    def plane(self, chan: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels float64, valid bool), both (nx, ny), of Stokes I in one channel."""
        blc = [0] * len(self.shape)
        trc = [s - 1 for s in self.shape]
        if self._spec_axis is not None:
            blc[self._spec_axis] = trc[self._spec_axis] = int(chan)
        if self._stokes_axis is not None:
            blc[self._stokes_axis] = trc[self._stokes_axis] = 0
        pixels = np.asarray(self._ia.getchunk(blc=blc, trc=trc), dtype=np.float64)
        valid = np.asarray(self._ia.getchunk(blc=blc, trc=trc, getmask=True), dtype=bool)
        d0, d1 = self._direction
        # Axes other than the two direction axes have length 1 here.
        order = [d0, d1] + [a for a in range(pixels.ndim) if a not in (d0, d1)]
        pixels = np.transpose(pixels, order).reshape(self.nx, self.ny)
        valid = np.transpose(valid, order).reshape(self.nx, self.ny)
        return pixels, valid

    def close(self) -> None:
        if self._ia is not None:
            self._ia.close()
            self._ia.done()
            self._ia = None

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def read_beams(path: str | os.PathLike) -> list[Beam | None]:
    """Restoring beam per channel (a single-beam image repeats its beam for every channel)."""
    ct = _runtime()
    with _OpenImage(path) as ia:
        _, spec_axis, _ = _image_axes(ia)
        nchan = int(ia.shape()[spec_axis]) if spec_axis is not None else 1
        return _read_beams(ia, ct.quanta(), nchan)


def set_channel_beam(path: str | os.PathLike, channel: int, beam: Beam) -> None:
    """Set one channel's restoring beam (turns a single-beam image into a per-channel one)."""
    ct = _runtime()
    with _OpenImage(path) as ia:
        ia.setrestoringbeam(
            major=f"{beam.major_arcsec}arcsec",
            minor=f"{beam.minor_arcsec}arcsec",
            pa=f"{beam.pa_deg}deg",
            channel=int(channel),
            polarization=-1,
        )
    del ct


def _pixel_vector(cs, ndim: int, x: float, y: float, chan: float) -> list[float]:
    direction, spec_axis, _ = _axes(cs)
    vec = [0.0] * ndim
    vec[direction[0]] = float(x)
    vec[direction[1]] = float(y)
    if spec_axis is not None:
        vec[spec_axis] = float(chan)
    return vec


def pixel_to_world(path: str | os.PathLike, x: float, y: float, chan: int = 0) -> tuple[float, float]:
    """(RA, Dec) in degrees of a pixel position (x, y) in a channel."""
    with _OpenImage(path) as ia:
        cs = ia.coordsys()
        try:
            world = cs.toworld(_pixel_vector(cs, len(ia.shape()), x, y, chan), "n")["numeric"]
            wdir = [int(a) for a in cs.findcoordinate("direction")["world"]]
        finally:
            cs.done()
    return float(world[wdir[0]]) * RAD_TO_DEG, float(world[wdir[1]]) * RAD_TO_DEG


def world_to_pixel(path: str | os.PathLike, ra_deg: float, dec_deg: float, chan: int = 0) -> tuple[float, float]:
    """Pixel position (x, y) of a sky position given in degrees."""
    with _OpenImage(path) as ia:
        cs = ia.coordsys()
        try:
            direction, spec_axis, _ = _axes(cs)
            ref_pix = _pixel_vector(cs, len(ia.shape()), 0, 0, chan)
            world = list(cs.toworld(ref_pix, "n")["numeric"])
            wdir = [int(a) for a in cs.findcoordinate("direction")["world"]]
            world[wdir[0]] = ra_deg / RAD_TO_DEG
            world[wdir[1]] = dec_deg / RAD_TO_DEG
            pix = cs.topixel(world)["numeric"]
        finally:
            cs.done()
    return float(pix[direction[0]]), float(pix[direction[1]])


@dataclass
class SourceFit:
    converged: bool
    flux_jy: float
    ra_deg: float
    dec_deg: float
    x: float
    y: float
    major_arcsec: float | None = None
    minor_arcsec: float | None = None

    def peak_jy_per_beam(self, beam: Beam | None) -> float:
        """The fitted Gaussian's peak: integrated flux times beam area over fitted area."""
        if beam is None or not self.major_arcsec or not self.minor_arcsec:
            return self.flux_jy
        return self.flux_jy * (beam.major_arcsec * beam.minor_arcsec) / (self.major_arcsec * self.minor_arcsec)


def fit_point_source(path: str | os.PathLike, x: float, y: float, chan: int, half_box: int) -> SourceFit | None:
    """Fit one elliptical Gaussian in a box around (x, y) of one channel; None if the fit fails.

    A fit finds the flux and position whatever the source's offset from the pixel grid, which
    a peak pixel value does not. The result carries the integrated flux (right for a resolved
    source) and the fitted size, from which ``peak_jy_per_beam`` gives a point source's flux.
    """
    with _OpenImage(path) as ia:
        shape = ia.shape()
        direction, _, _ = _image_axes(ia)
        nx, ny = int(shape[direction[0]]), int(shape[direction[1]])
        x0, x1 = max(0, int(round(x)) - half_box), min(nx - 1, int(round(x)) + half_box)
        y0, y1 = max(0, int(round(y)) - half_box), min(ny - 1, int(round(y)) + half_box)
        try:
            result = ia.fitcomponents(box=f"{x0},{y0},{x1},{y1}", chans=str(int(chan)), stokes="I")
        except Exception:
            return None
    if not result or not result.get("results") or "component0" not in result["results"]:
        return None
    comp = result["results"]["component0"]
    converged = bool(np.all(result.get("converged", [False])))
    ra = float(comp["shape"]["direction"]["m0"]["value"]) * RAD_TO_DEG
    dec = float(comp["shape"]["direction"]["m1"]["value"]) * RAD_TO_DEG
    flux = float(comp["flux"]["value"][0])
    shape = comp["shape"]
    ct = _runtime()
    qa = ct.quanta()
    try:
        major = float(qa.convert(shape["majoraxis"], "arcsec")["value"])
        minor = float(qa.convert(shape["minoraxis"], "arcsec")["value"])
    except (KeyError, TypeError):
        major = minor = None
    px, py = world_to_pixel(path, ra, dec, chan)
    return SourceFit(
        converged=converged, flux_jy=flux, ra_deg=ra, dec_deg=dec, x=px, y=py, major_arcsec=major, minor_arcsec=minor
    )


def export_fits(image: str | os.PathLike, fits_path: str | os.PathLike) -> str:
    """Write a CASA image as FITS (per-channel beams go into CASA's BEAMS table extension).

    The caller owns naming: it passes a temporary name and renames after adding checksums.
    """
    fits_path = os.path.abspath(os.fspath(fits_path))
    with _OpenImage(image) as ia:
        try:
            ia.tofits(outfile=fits_path, overwrite=True, velocity=False, stokeslast=True, history=False)
        except Exception as exc:
            raise ImageReadError(f"FITS export of {image} failed: {exc}") from exc
    return fits_path


# --- visibility weights for the theoretical sensitivity -------------------------------------


@dataclass
class WeightSums:
    """Stokes I natural weights summed per MS channel, and the noise of unit weight.

    ``sigma_unit_weight_jy`` is the standard deviation of one real visibility component whose
    Stokes I weight is 1; a visibility of weight w has noise sigma_unit / sqrt(w).
    """

    chan_freqs_hz: np.ndarray
    chan_widths_hz: np.ndarray
    weight_sum: np.ndarray  # per MS channel, summed over rows (all spws concatenated)
    sigma_unit_weight_jy: float
    method: str
    nvis: int


def visibility_weight_sums(vis: str | os.PathLike, *, chunk_rows: int = 20000) -> WeightSums:
    """Per-channel Stokes I weight sums of an MS and the absolute noise scale of its weights.

    The weights (WEIGHT_SPECTRUM if filled, else WEIGHT per correlation) give each visibility's
    relative noise; they are often not calibrated in Jy. The absolute scale comes from the
    data: half the difference of the two parallel hands (RR-LL or XX-YY) carries no Stokes I
    signal for an unpolarised sky, so its scatter times sqrt(weight) is the noise of unit weight
    (a robust MAD estimate, so a few outliers do not bias it). Flagged data and
    autocorrelations are left out.
    """
    ct = _runtime()
    vis = _require_ms(vis)
    tb = ct.table()
    try:
        tb.open(os.path.join(vis, "DATA_DESCRIPTION"))
        dd_spw = tb.getcol("SPECTRAL_WINDOW_ID")
        dd_pol = tb.getcol("POLARIZATION_ID")
        tb.close()
        tb.open(os.path.join(vis, "SPECTRAL_WINDOW"))
        spw_freqs = [tb.getcell("CHAN_FREQ", i) for i in range(tb.nrows())]
        spw_widths = [np.abs(tb.getcell("CHAN_WIDTH", i)) for i in range(tb.nrows())]
        tb.close()
        tb.open(os.path.join(vis, "POLARIZATION"))
        corr_types = [list(tb.getcell("CORR_TYPE", i)) for i in range(tb.nrows())]
        tb.close()

        offsets = np.cumsum([0] + [len(f) for f in spw_freqs])
        weight_sum = np.zeros(offsets[-1])
        scaled_diffs: list[np.ndarray] = []
        nvis = 0
        tb.open(vis)
        has_wspec = "WEIGHT_SPECTRUM" in tb.colnames() and tb.iscelldefined("WEIGHT_SPECTRUM", 0)
        for dd in range(len(dd_spw)):
            sub = tb.query(f"DATA_DESC_ID=={dd} && ANTENNA1!=ANTENNA2 && !FLAG_ROW")
            try:
                nrows = sub.nrows()
                pair = _parallel_pair(corr_types[dd_pol[dd]])
                spw = int(dd_spw[dd])
                for start in range(0, nrows, chunk_rows):
                    n = min(chunk_rows, nrows - start)
                    flag = sub.getcol("FLAG", start, n)  # (ncorr, nchan, nrow)
                    if has_wspec:
                        wt = sub.getcol("WEIGHT_SPECTRUM", start, n)
                    else:
                        w = sub.getcol("WEIGHT", start, n)  # (ncorr, nrow)
                        wt = np.broadcast_to(w[:, np.newaxis, :], flag.shape)
                    if pair is None:
                        # One hand only: that hand is the Stokes I estimate.
                        w_i = np.where(flag[0], 0.0, wt[0])
                        data_diff = None
                    else:
                        a, b = pair
                        ok = ~(flag[a] | flag[b]) & (wt[a] > 0) & (wt[b] > 0)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            # I = (A + B) / 2 -> var_I = (var_A + var_B) / 4 -> w_I = 4 / (1/w_A + 1/w_B)
                            w_i = np.where(ok, 4.0 / (1.0 / wt[a] + 1.0 / wt[b]), 0.0)
                        data = sub.getcol("DATA", start, n)
                        half_diff = 0.5 * (data[a] - data[b])
                        data_diff = np.concatenate(
                            [(half_diff.real * np.sqrt(w_i))[ok], (half_diff.imag * np.sqrt(w_i))[ok]]
                        )
                    weight_sum[offsets[spw] : offsets[spw + 1]] += w_i.sum(axis=1)
                    nvis += int(np.count_nonzero(w_i))
                    if data_diff is not None and data_diff.size:
                        scaled_diffs.append(data_diff[:: max(1, data_diff.size // 200000)])
            finally:
                sub.close()
        tb.close()
    finally:
        tb.done()
    if scaled_diffs:
        values = np.concatenate(scaled_diffs)
        sigma_unit = float(1.4826 * np.median(np.abs(values - np.median(values))))
        method = "weights scaled by the MAD of the parallel-hand difference"
    else:
        sigma_unit = 1.0
        method = "weights taken as 1/sigma^2 in Jy^-2 (single parallel hand, no noise scale from data)"
    return WeightSums(
        chan_freqs_hz=np.concatenate(spw_freqs),
        chan_widths_hz=np.concatenate(spw_widths),
        weight_sum=weight_sum,
        sigma_unit_weight_jy=sigma_unit,
        method=method,
        nvis=nvis,
    )


def _parallel_pair(corr_types: list[int]) -> tuple[int, int] | None:
    for first, second in _PARALLEL_HAND_PAIRS:
        if first in corr_types and second in corr_types:
            return corr_types.index(first), corr_types.index(second)
    return None


def image_centre_world(path: str | os.PathLike) -> tuple[float, float]:
    """(RA, Dec) in degrees of the image's centre pixel."""
    with _OpenImage(path) as ia:
        shape = ia.shape()
        direction, _, _ = _image_axes(ia)
    return pixel_to_world(path, (shape[direction[0]] - 1) / 2.0, (shape[direction[1]] - 1) / 2.0, 0)


def ms_time_range_mjd(vis: str | os.PathLike) -> tuple[float, float]:
    """First and last integration midpoints of a MeasurementSet, in MJD (days)."""
    ct = _runtime()
    vis = _require_ms(vis)
    tb = ct.table()
    try:
        tb.open(vis)
        times = tb.getcol("TIME")
        tb.close()
    finally:
        tb.done()
    if times.size == 0:
        raise ImageReadError(f"vis={vis} has no rows")
    return float(times.min()) / 86400.0, float(times.max()) / 86400.0
