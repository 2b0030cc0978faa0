"""Parsing of the few CASA quantities the configuration must check before any work starts.

tclean only discovers an unparsable cell or threshold after it has opened the MeasurementSet and
built the imager; checking them here lets a bad value fail in milliseconds with a message that
names the parameter. The unit tables cover what CASA's quanta accept for these parameters.
"""

from __future__ import annotations

import math
import re

_NUMBER_UNIT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z\u00b5\"'/]*)\s*$")

# Angle units in arcseconds. A bare number means arcsec, as tclean reads a numeric cell.
_ANGLE_ARCSEC = {
    "": 1.0,
    "arcsec": 1.0,
    "asec": 1.0,
    "\"": 1.0,
    "''": 1.0,
    "mas": 1e-3,
    "uas": 1e-6,
    "arcmin": 60.0,
    "amin": 60.0,
    "'": 60.0,
    "deg": 3600.0,
    "degree": 3600.0,
    "degrees": 3600.0,
    "rad": 180.0 / math.pi * 3600.0,
    "mrad": 180.0 / math.pi * 3.6,
}

# Flux-density units in Jy; a per-beam suffix is accepted as in tclean's threshold='0.1mJy/beam'.
_FLUX_JY = {
    "": 1.0,
    "jy": 1.0,
    "mjy": 1e-3,
    "ujy": 1e-6,
    "\u00b5jy": 1e-6,
    "njy": 1e-9,
    "kjy": 1e3,
}


def _split(value: str) -> tuple[float, str] | None:
    match = _NUMBER_UNIT.match(value)
    if not match:
        return None
    return float(match.group(1)), match.group(2)


def parse_angle_arcsec(value: object) -> float:
    """'8arcsec', '0.1arcmin', '1e-4rad', 8 or 8.0 (arcsec) -> arcseconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an angle")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an angle")
    parsed = _split(value)
    if parsed is None or parsed[1] not in _ANGLE_ARCSEC:
        raise ValueError(f"{value!r} is not an angle (use e.g. '8arcsec', '0.1arcmin', '1e-4rad' or a number of arcsec)")
    number, unit = parsed
    return number * _ANGLE_ARCSEC[unit]


def parse_flux_jy(value: object) -> float:
    """'0.1mJy', '0Jy', '2e-5Jy/beam', 0.0 (Jy) -> Jy; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a flux density")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a flux density")
    parsed = _split(value)
    unit = parsed[1].lower() if parsed else ""
    if unit.endswith("/beam"):
        unit = unit[: -len("/beam")]
    if parsed is None or unit not in _FLUX_JY:
        raise ValueError(f"{value!r} is not a flux density (use e.g. '0.1mJy', '0Jy' or a number of Jy)")
    return parsed[0] * _FLUX_JY[unit]


def fast_fft_size(n: float, minimum: int = 32) -> int:
    """Smallest even image size >= n (and >= minimum) whose prime factors are 2, 3 and 5: the
    sizes CASA's FFTs handle fast (the imaging plan and the simulator's imaging hint use it)."""
    size = max(minimum, int(math.ceil(n)))
    while True:
        m = size
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and size % 2 == 0:
            return size
        size += 1
