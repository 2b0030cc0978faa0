"""Join sub-cube images along frequency, and the spectral/beam facts the cube engine checks.

`ia.imageconcat(axis=-1, relax=True)` joins along the spectral axis and keeps per-channel
restoring beams. Modes: 'paged' copies the pixels into one new image; 'nomovevirtual' writes a
reference catalogue that points at the parts (which must stay); 'movevirtual' moves the parts
into the output's folder and references them there (no copy; the parts are consumed).
Outputs are written under a temporary name and renamed, so a reader never sees half a cube.
"""

from __future__ import annotations

import logging
import os
import shutil

from pclean_provider.atomic_files import process_owner, staged

log = logging.getLogger(__name__)

# Our mode names -> imageconcat's.
CASA_MODES = {"paged": "paged", "virtual": "nomovevirtual", "movevirtual": "movevirtual"}


class ImageConcatError(RuntimeError):
    """The cube could not be produced (never a warning: a missing cube is a failure)."""


def _tool():
    import casatools

    return casatools.image()


def image_frequencies(path: str) -> list[float]:
    """Spectral axis of an image, channel by channel (Hz, in the image's frame)."""
    ia = _tool()
    cs = None
    try:
        ia.open(path)
        cs = ia.coordsys()
        shape = list(ia.shape())
        axis = cs.findaxisbyname("Frequency")
        out = []
        for ch in range(shape[axis]):
            pix = [0.0] * len(shape)
            pix[axis] = float(ch)
            out.append(float(cs.toworld(pix, "n")["numeric"][axis]))
        return out
    except RuntimeError as err:
        raise ImageConcatError(f"cannot read the spectral axis of {path}: {err}") from err
    finally:
        if cs is not None:
            cs.done()
        ia.close()
        ia.done()


def image_nchan(path: str) -> int:
    ia = _tool()
    try:
        ia.open(path)
        cs = ia.coordsys()
        axis = cs.findaxisbyname("Frequency")
        cs.done()
        return int(ia.shape()[axis])
    finally:
        ia.close()
        ia.done()


def _join(parts: list[str], tmp: str, mode: str, output: str) -> None:
    ia = _tool()
    try:
        if len(parts) == 1 and mode != "virtual":
            # imageconcat needs two or more images; one part is the cube itself.
            if mode == "movevirtual":
                os.rename(parts[0], tmp)
            else:
                shutil.copytree(parts[0], tmp, symlinks=True)
        else:
            joined = ia.imageconcat(outfile=tmp, infiles=list(parts), axis=-1, relax=True, tempclose=False,
                                    overwrite=True, mode=CASA_MODES[mode])
            joined.done()
    except RuntimeError as err:
        raise ImageConcatError(f"imageconcat ({mode}) of {len(parts)} parts into {output} failed: {err}") from err
    finally:
        ia.close()
        ia.done()


def concat_images(parts: list[str], output: str, mode: str, finish=None) -> str:
    """Join `parts` (already in channel order) into `output`; returns `output`.

    `finish(path)` runs on the joined image while it still has its temporary name (metadata fixes),
    so the final name only ever holds a finished cube.
    """
    if mode not in CASA_MODES:
        raise ImageConcatError(f"concat mode {mode!r}: use one of {sorted(CASA_MODES)}")
    missing = [p for p in parts if not os.path.isdir(p)]
    if missing:
        raise ImageConcatError(f"cannot concatenate {output}: missing parts {missing}")
    expected = sum(image_nchan(p) for p in parts)
    # movevirtual has moved the parts into the staging image: deleting it on a failure would delete
    # the only copy of the sub-cube images, so it is kept for a rerun or inspection.
    keep = mode == "movevirtual"
    with staged(output, owner=process_owner(), keep_on_error=keep) as tmp:
        try:
            _join(parts, tmp, mode, output)
            got = image_nchan(tmp) if os.path.isdir(tmp) else 0
            if got != expected:
                raise ImageConcatError(f"{output}: concatenation gave {got} channels, expected {expected}")
            if finish is not None:
                finish(tmp)
        except BaseException:
            if keep and os.path.isdir(tmp):
                log.error("concatenation failed; the moved sub-cube images are kept in %s", tmp)
            raise
    return output


def common_beam(path: str) -> dict[str, float]:
    """The smallest beam enclosing every channel's beam (what tclean's restoringbeam='common' uses)."""
    ia = _tool()
    try:
        ia.open(path)
        beam = ia.commonbeam()
    except RuntimeError as err:
        raise ImageConcatError(f"no common beam for {path}: {err}") from err
    finally:
        ia.close()
        ia.done()
    qa = _quanta()
    return {
        "major_arcsec": float(qa.convert(beam["major"], "arcsec")["value"]),
        "minor_arcsec": float(qa.convert(beam["minor"], "arcsec")["value"]),
        "pa_deg": float(qa.convert(beam["pa"], "deg")["value"]),
    }


def _quanta():
    import casatools

    return casatools.quanta()


def paged_copy(src: str, dst: str) -> None:
    """Image `src` as a new paged image `dst` (pixels, pixel mask, beams, coordinates).

    A cube this engine concatenated may be a reference to its parts (movevirtual, virtual), which an
    imager cannot open for writing; the copy can be, as tclean's own products."""
    extract_channels(src, dst, 0, image_nchan(src))


def extract_channels(src: str, dst: str, first: int, count: int) -> None:
    """Copy channels [first, first+count) of image `src` into a new image `dst` (beams kept)."""
    import casatools

    ia = _tool()
    rg = casatools.regionmanager()
    try:
        ia.open(src)
        shape = list(ia.shape())
        cs = ia.coordsys()
        axis = cs.findaxisbyname("Frequency")
        cs.done()
        blc = [0] * len(shape)
        trc = [n - 1 for n in shape]
        blc[axis], trc[axis] = first, first + count - 1
        region = rg.box(blc=blc, trc=trc)
        sub = ia.subimage(outfile=dst, region=region, overwrite=True)
        sub.done()
    except RuntimeError as err:
        raise ImageConcatError(f"cannot extract channels {first}-{first + count - 1} of {src}: {err}") from err
    finally:
        ia.close()
        ia.done()
        rg.done()


def channel_weights(sumwt: str) -> list[float]:
    """Sum of weights per channel from a .sumwt image (0 means tclean gridded nothing there)."""
    import numpy as np

    ia = _tool()
    try:
        ia.open(sumwt)
        pix = np.asarray(ia.getchunk(), dtype=float)
    finally:
        ia.close()
        ia.done()
    # axes x, y, stokes, freq: the first stokes plane carries the weight of the channel
    return [float(v) for v in pix[0, 0, 0, :]]


def fill_blank_channel_beams(image: str, blank_channels: list[int]) -> bool:
    """Give channels without data the largest-area beam of the cube's other channels.

    tclean does exactly this for a blank PSF plane (a null beam cannot be stored), over the whole
    cube; a sub-cube can only pick the largest beam of its own channels, so after concatenation the
    choice is redone over the cube. Returns False when the image has no per-channel beams.
    """
    ia = _tool()
    try:
        ia.open(image)
        info = ia.restoringbeam()
        if "beams" not in info:
            return False
        blank = set(blank_channels)
        best = None
        best_area = -1.0
        for key in sorted(info["beams"], key=lambda k: int(k.lstrip("*"))):
            ch = int(key.lstrip("*"))
            if ch in blank:
                continue
            beam = info["beams"][key]["*0"]
            area = float(beam["major"]["value"]) * float(beam["minor"]["value"])
            if area > best_area:  # first channel wins ties, as CASA's beam set does
                best, best_area = beam, area
        if best is None:
            return False
        for ch in sorted(blank):
            ia.setrestoringbeam(major=best["major"], minor=best["minor"], pa=best["positionangle"],
                                channel=ch, polarization=-1)
        return True
    finally:
        ia.close()
        ia.done()
