"""Copying channel planes between CASA images of one cube's grid.

A sub-cube session that cleans channels [a, b) grids a slightly wider range [lo, hi) so that the
model of the neighbouring channels takes part in predicting the visibilities of its edge channels
(see cube_session). These helpers move the margin's planes between sessions' images, clear them,
and cut a session's own channels out as its products. Every image here has CASA's axis order
(x, y, stokes, frequency) and every channel range is given in the full cube's channel numbers.
"""

from __future__ import annotations

import os

import numpy as np

from pclean_provider.atomic_files import staged


def _chan_axis(ia) -> int:
    return int(ia.coordsys().findcoordinate("spectral")["pixel"][0])


def _channel_box(ia, first: int, stop: int, image_first: int) -> tuple[list[int], list[int]]:
    """blc/trc of the open image's planes holding cube channels [first, stop), every other axis whole."""
    axis = _chan_axis(ia)
    blc = [0] * len(ia.shape())
    trc = [int(n) - 1 for n in ia.shape()]
    blc[axis], trc[axis] = first - image_first, stop - 1 - image_first
    return blc, trc


# The planes moved every major cycle go through the image's table (column "map" of its one row),
# not CASA's image tool: closing an image tool also closes CASA's IERS tables
# (MeasIERS::closeTables), and the session's next major cycle then reads them again for its frame
# conversion, about 30 MB per session per cycle where serial tclean reads them once. The pixels are
# the same values either way (a paged image stores them unscaled in that column).
_PIXELS = "map"


def _spectral_axis(tb) -> int:
    coords = tb.getkeyword("coords")
    for key in coords:
        if key.startswith("spectral"):
            return int(coords["pixelmap" + key[len("spectral"):]][0])
    raise ValueError(f"{tb.name()} has no spectral axis")


def _shape(tb) -> list[int]:
    return [int(n) for n in tb.getcolshapestring(_PIXELS)[0].strip("[]").split(",")]


def _plane_box(tb, first: int, stop: int, image_first: int) -> tuple[list[int], list[int]]:
    """blc/trc of the table's planes holding cube channels [first, stop), every other axis whole."""
    axis = _spectral_axis(tb)
    shape = _shape(tb)
    blc, trc = [0] * len(shape), [n - 1 for n in shape]
    blc[axis], trc[axis] = first - image_first, stop - 1 - image_first
    return blc, trc


def read_planes(path: str, first: int, stop: int, image_first: int) -> np.ndarray:
    """Channels [first, stop) of the image at `path`, whose plane 0 is cube channel `image_first`."""
    import casatools

    tb = casatools.table()
    try:
        tb.open(path)
        blc, trc = _plane_box(tb, first, stop, image_first)
        return np.asarray(tb.getcellslice(_PIXELS, 0, blc, trc, [1] * len(blc)), dtype=np.float32)
    finally:
        tb.close()


def write_planes(path: str, pixels: np.ndarray, first: int, image_first: int) -> None:
    """Write `pixels` (planes along the channel axis) into the existing image at `path` from cube channel `first`."""
    import casatools

    tb = casatools.table()
    try:
        tb.open(path, nomodify=False)
        axis = _spectral_axis(tb)
        blc = [0] * pixels.ndim
        blc[axis] = first - image_first
        trc = [b + n - 1 for b, n in zip(blc, pixels.shape, strict=True)]
        tb.putcellslice(_PIXELS, 0, np.asarray(pixels, dtype=np.float32), blc, trc, [1] * len(blc))
        tb.flush()
    finally:
        tb.close()


def zero_planes(path: str, first: int, stop: int, image_first: int) -> None:
    """Set channels [first, stop) of the existing image at `path` to zero (its mask untouched)."""
    import casatools

    tb = casatools.table()
    try:
        tb.open(path, nomodify=False)
        blc, trc = _plane_box(tb, first, stop, image_first)
        shape = [t - b + 1 for b, t in zip(blc, trc, strict=True)]
        tb.putcellslice(_PIXELS, 0, np.zeros(shape, dtype=np.float32), blc, trc, [1] * len(blc))
        tb.flush()
    finally:
        tb.close()


def extract_planes(src: str, dst: str, first: int, stop: int, src_first: int) -> None:
    """Channels [first, stop) of `src` (plane 0 = cube channel `src_first`) into `dst`.

    An existing `dst` gets the pixels written in place (the deconvolver holds it open); a missing
    one is created as a sub-image of `src`, so it carries src's coordinates shifted to `first`,
    its units and its per-plane beams.
    """
    import casatools

    if os.path.isdir(dst):
        # The mask (the PB limit) is the same every cycle: it was copied when dst was made.
        write_planes(dst, read_planes(src, first, stop, src_first), first, first)
        return
    ia = casatools.image()
    rg = casatools.regionmanager()
    try:
        ia.open(src)
        blc, trc = _channel_box(ia, first, stop, src_first)
        region = rg.box(blc=blc, trc=trc)
        with staged(dst) as tmp:
            sub = ia.subimage(outfile=tmp, region=region, overwrite=True, dropdeg=False)
            sub.done()
    finally:
        ia.close()
        rg.done()
    _copy_mask(src, dst, first, stop, src_first)


def _copy_mask(src: str, dst: str, first: int, stop: int, src_first: int) -> None:
    """The source's pixel mask (e.g. the PB limit on .pb and .residual) over the same planes.

    A sub-image copy leaves the mask behind, and the deconvolver's automask and every product's
    blanking depend on it, so it is written explicitly (created on dst when missing).
    """
    import casatools

    ia = casatools.image()
    try:
        ia.open(src)
        if not ia.maskhandler("default")[0]:
            return
        blc, trc = _channel_box(ia, first, stop, src_first)
        mask = np.asarray(ia.getchunk(blc=blc, trc=trc, getmask=True))
        ia.close()
        ia.open(dst)
        if not ia.maskhandler("default")[0]:
            ia.calcmask(mask="T", name="mask0", asdefault=True)
        ia.putregion(pixelmask=mask)
    finally:
        ia.close()


def new_image_like(template: str, path: str, unit: str) -> None:
    """A zero-filled image with `template`'s shape and coordinates, in `unit`, without beams or masks."""
    import casatools

    ia = casatools.image()
    try:
        ia.open(template)
        shape = [int(n) for n in ia.shape()]
        csys = ia.coordsys()
        ia.close()
        with staged(path) as tmp:
            ia.fromshape(outfile=tmp, shape=shape, csys=csys.torecord(), overwrite=True)
            csys.done()
            ia.setbrightnessunit(unit)
            ia.close()  # the image is complete on disk before it is renamed
    finally:
        ia.close()


def channel_axis(path: str) -> int:
    """The pixel axis of the image's channels (3 in CASA's usual x, y, stokes, frequency order)."""
    import casatools

    tb = casatools.table()
    try:
        tb.open(path)
        return _spectral_axis(tb)
    finally:
        tb.close()


def brightness_unit(path: str) -> str:
    """The image's brightness unit, read from its table (see _PIXELS for why not the image tool)."""
    import casatools

    tb = casatools.table()
    try:
        tb.open(path)
        return str(tb.getkeyword("units")) if "units" in tb.keywordnames() else ""
    finally:
        tb.close()
