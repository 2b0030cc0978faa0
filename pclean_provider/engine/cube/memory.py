"""How much memory one sub-cube's tclean run needs, so a plan never overloads a worker.

Formula (bytes), for a sub-cube of ``nchan`` channels of ``nx * ny`` pixels and ``nstokes``
polarisations::

    plane      = nx * ny * nstokes
    images     = 4 B * plane * nchan * N_IMAGES            (float images tclean keeps per channel:
                                                            image, residual, model, psf, pb, mask,
                                                            and the weight/sumwt side images)
    grids      = 8 B * plane * padding**2 * N_GRIDS * nchan_in_flight
                                                           (complex FFT grids: residual and PSF/weight
                                                            grids, padded; tclean grids a cube in
                                                            chunks, so only some channels are in flight)
    total      = BASE + images + grids + MS_BUFFER

``BASE`` is what a Python process with casatools and casatasks loaded holds before imaging
(measured ~ 300-400 MB RSS here); ``MS_BUFFER`` the visibility buffers of the MS iterator. The
constants are deliberately on the high side: underestimating kills a worker, overestimating only
adds sub-cubes. `bench/bench_cube.py` records the measured peak RSS next to this estimate.
"""

from __future__ import annotations

import math

BASE_BYTES = 450 * 1024**2
MS_BUFFER_BYTES = 150 * 1024**2
N_IMAGES = 8
N_GRIDS = 3
# tclean never holds more grids than this many channels at once in the standard cube gridder.
MAX_CHANNELS_IN_FLIGHT = 8
# A worker's memory is not all ours (Dask's own process, the OS page cache of the MS).
USABLE_FRACTION = 0.8


def _image_shape(imsize) -> tuple[int, int]:
    if isinstance(imsize, int):
        return imsize, imsize
    values = list(imsize)
    return (int(values[0]), int(values[1] if len(values) > 1 else values[0]))


def _nstokes(stokes: str) -> int:
    return max(1, len(stokes or "I")) if stokes not in ("pseudoI",) else 1


def estimate_subcube_bytes(nchan: int, imsize, stokes: str = "I", padding: float = 1.2) -> int:
    """Estimated peak resident memory of one tclean run over ``nchan`` channels."""
    nx, ny = _image_shape(imsize)
    plane = nx * ny * _nstokes(stokes)
    images = 4 * plane * nchan * N_IMAGES
    grids = 8 * plane * padding**2 * N_GRIDS * min(nchan, MAX_CHANNELS_IN_FLIGHT)
    return int(BASE_BYTES + images + grids + MS_BUFFER_BYTES)


def max_channels_that_fit(worker_memory_bytes: int, imsize, stokes: str = "I", padding: float = 1.2) -> int:
    """Largest sub-cube (channels) whose estimate fits a worker; at least 1 (one channel must run)."""
    budget = worker_memory_bytes * USABLE_FRACTION
    nchan = 1
    if estimate_subcube_bytes(1, imsize, stokes, padding) > budget:
        return 1
    # The estimate is monotonic in nchan: grow by doubling, then bisect.
    hi = 2
    while estimate_subcube_bytes(hi, imsize, stokes, padding) <= budget and hi < 1 << 20:
        nchan, hi = hi, hi * 2
    lo = nchan
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate_subcube_bytes(mid, imsize, stokes, padding) <= budget:
            lo = mid
        else:
            hi = mid
    return max(1, lo)


def parse_memory(value: str | int | float | None) -> int | None:
    """'4GB', '512MiB', '0' (no limit -> None), bytes as a number."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if value > 0 else None
    text = str(value).strip().upper().replace(" ", "")
    if text in ("", "0", "NONE", "AUTO"):
        return None
    units = {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
             "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "K": 1024, "M": 1024**2,
             "G": 1024**3, "T": 1024**4, "B": 1}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            number = float(text[: -len(unit)])
            return int(math.floor(number * units[unit])) or None
    return int(float(text)) or None
