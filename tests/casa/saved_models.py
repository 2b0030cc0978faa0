"""Reading back the model tclean (or pclean) saved in a MeasurementSet: MODEL_DATA, or the virtual
model (the predict recipe in the SOURCE table and the model image it keeps)."""

from __future__ import annotations

import numpy as np


def model_data(ms: str) -> np.ndarray:
    import casatools

    tb = casatools.table()
    tb.open(ms)
    try:
        assert "MODEL_DATA" in tb.colnames(), f"{ms} has no MODEL_DATA column"
        return np.asarray(tb.getcol("MODEL_DATA"))
    finally:
        tb.close()


def has_model_data(ms: str) -> bool:
    import casatools

    tb = casatools.table()
    tb.open(ms)
    try:
        return "MODEL_DATA" in tb.colnames()
    finally:
        tb.close()


def virtual_model(ms: str) -> dict:
    """The flattened virtual-model record tclean keeps in the SOURCE table (one source here)."""
    import casatools

    tb = casatools.table()
    tb.open(ms + "/SOURCE")
    try:
        assert "SOURCE_MODEL" in tb.colnames() and tb.iscelldefined("SOURCE_MODEL", 0), f"{ms}: no virtual model"
        rec = tb.getcell("SOURCE_MODEL", 0)
    finally:
        tb.close()

    def flat(r: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in r.items():
            out.update(flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {prefix + key: value})
        return out

    return flat(rec)


def complex_pixels(path: str) -> np.ndarray:
    import casatools

    ia = casatools.image()
    ia.open(path)
    try:
        return np.asarray(ia.getchunk())
    finally:
        ia.close()


def two_copies(ms: str, tmp_path) -> tuple[str, str]:
    """Two copies of `ms` under `tmp_path`, the reference's and ours: each side writes its model into its own."""
    import shutil

    ref_ms, our_ms = str(tmp_path / "ref.ms"), str(tmp_path / "ours.ms")
    shutil.copytree(ms, ref_ms)
    shutil.copytree(ms, our_ms)
    return ref_ms, our_ms
