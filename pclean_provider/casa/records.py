"""casatools records as JSON-able data, and back, for what crosses a process boundary.

A record a tool produces (a coordinate system, an iteration record, the imager's parameters) holds
numpy arrays and scalars; encoded, each array keeps its dtype and shape, so the process that decodes
it gets back exactly the record types the tool produced. Session specs (`PartSpec`,
`CubeSessionSpec`) and the cube's minor-cycle records travel this way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_NDARRAY = "__ndarray__"


def encode_record(value: Any) -> Any:
    """A casatools record as JSON-able data; arrays keep their dtype and shape."""
    if isinstance(value, dict):
        return {str(k): encode_record(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {_NDARRAY: value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [encode_record(v) for v in value]
    return value


def decode_record(value: Any) -> Any:
    """The record `encode_record` wrote, its arrays numpy arrays again."""
    if isinstance(value, dict):
        if _NDARRAY in value:
            return np.asarray(value[_NDARRAY], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        return {k: decode_record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_record(v) for v in value]
    return value
