"""Read CASA images into numpy for comparisons in tests (tests may use casatools directly)."""

from __future__ import annotations

import numpy as np


def pixels(path: str) -> np.ndarray:
    """All pixels as float64, axes (x, y, stokes, freq) as CASA stores them."""
    import casatools

    ia = casatools.image()
    try:
        ia.open(str(path))
        return np.asarray(ia.getchunk(), dtype=np.float64)
    finally:
        ia.close()


def beams(path: str) -> list[tuple[float, float, float]]:
    """(major arcsec, minor arcsec, pa deg) for every channel (one entry for a single beam)."""
    import casatools

    ia = casatools.image()
    try:
        ia.open(str(path))
        info = ia.restoringbeam()
    finally:
        ia.close()

    def one(b):
        return (b["major"]["value"] if b["major"]["unit"] == "arcsec" else _to_arcsec(b["major"]),
                b["minor"]["value"] if b["minor"]["unit"] == "arcsec" else _to_arcsec(b["minor"]),
                b["positionangle"]["value"])

    if "beams" in info:
        out = []
        for chan in sorted(info["beams"], key=lambda k: int(k.lstrip("*"))):
            out.append(one(info["beams"][chan]["*0"]))
        return out
    return [one(info)] if info else []


def _to_arcsec(q) -> float:
    import casatools

    return casatools.quanta().convert(q, "arcsec")["value"]


def frequencies(path: str) -> np.ndarray:
    """The spectral axis (Hz) of an image, channel by channel."""
    import casatools

    ia = casatools.image()
    try:
        ia.open(str(path))
        cs = ia.coordsys()
        shape = ia.shape()
        spec_axis = cs.findaxisbyname("Frequency")
        out = []
        for ch in range(shape[spec_axis]):
            pix = [0.0] * len(shape)
            pix[spec_axis] = float(ch)
            out.append(cs.toworld(pix, "n")["numeric"][spec_axis])
        cs.done()
        return np.asarray(out)
    finally:
        ia.close()


def max_abs_diff_over_peak(a: str, b: str) -> float:
    """max |a - b| / max |b|: the figure every fidelity tolerance in this project is stated in."""
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape, f"shapes differ: {pa.shape} vs {pb.shape}"
    peak = float(np.max(np.abs(pb)))
    return float(np.max(np.abs(pa - pb))) / (peak if peak > 0 else 1.0)
