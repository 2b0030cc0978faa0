"""A content fingerprint of a CASA image: what the image says, not how its table files look.

The archive uses it to tell a re-imaged product that did not change from one that did. Hashing
the image's files would not do: CASA writes run-time facts into them (the memory available when
the image was made, in ``table.dat``; a history log with timestamps), so two runs that produce
the very same pixels differ byte-wise. Hashed here instead: shape, brightness unit, the
coordinate system, the restoring beam(s), and every pixel and mask value, one plane at a time so
a cube of any size is hashed in bounded memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from pclean_provider.casa.image_io import _OpenImage


def _plain(value: Any) -> Any:
    """casatools records (numpy scalars and arrays inside dicts) as JSON-able values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return repr(value)  # exact, and NaN-safe in JSON
    return value


def image_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of one CASA image's content."""
    digest = hashlib.sha256()
    with _OpenImage(os.fspath(path)) as ia:
        shape = [int(s) for s in ia.shape()]
        cs = ia.coordsys()
        try:
            coords = cs.torecord()
        finally:
            cs.done()
        header = {"shape": shape, "unit": ia.brightnessunit(), "coordinates": _plain(coords),
                  "beams": _plain(ia.restoringbeam() or {})}
        digest.update(json.dumps(header, sort_keys=True).encode())
        # One plane of the last axis at a time (the spectral or Stokes axis of tclean's images).
        last = len(shape) - 1
        for index in range(shape[last] if shape else 0):
            blc = [0] * len(shape)
            trc = [s - 1 for s in shape]
            blc[last] = trc[last] = index
            pixels = np.ascontiguousarray(ia.getchunk(blc=blc, trc=trc), dtype=np.float64)
            mask = np.ascontiguousarray(ia.getchunk(blc=blc, trc=trc, getmask=True), dtype=bool)
            digest.update(pixels.tobytes())
            digest.update(np.packbits(mask).tobytes())
    return digest.hexdigest()
