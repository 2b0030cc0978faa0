"""A copy of a MeasurementSet laid out so that a session reads only its own channels.

Same rows in the same order, the same values, columns, keywords and subtables: only how the main
table stores its columns changes, so tclean images the copy exactly as the original (checked bit
for bit). Two layouts make the exact loop's reads grow with the workers:

- Spectral columns (DATA, FLAG, WEIGHT_SPECTRUM, CORRECTED_DATA, ...) tiled over all channels of a
  row block, as simulators and most writers do: a session that images 6 of 48 channels reads the
  tiles of all 48, every major cycle. Here the tiles hold a few channels (`channels_per_tile`).
- Several per-row columns (UVW, TIME, ...) sharing one IncrementalStMan, as CASA's simulator writes
  them: CASA's visibility iterator reads them column by column, and the manager's small bucket cache
  then reads each bucket again for every column: measured 1.2 GB read from a 0.95 MB file in one
  pass of a 24,300-row MS. Here values that change from row to row go to a StandardStMan and every
  other such column to an IncrementalStMan of its own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from pclean_provider.atomic_files import staged
from pclean_provider.casa.runtime import ensure_casa_runtime

# Columns whose value changes (nearly) every row: an incremental manager stores each change anyway.
PER_ROW_COLUMNS = frozenset({"UVW", "TIME", "TIME_CENTROID"})
# Spectral tiles of this many bytes at most: large enough that a row block is a few reads, small
# enough that a session's cache holds the tiles of a few channels over many rows.
TILE_BYTES = 256 * 1024
# Bytes per value of the spectral columns' types (complex is 2 x float32).
_VALUE_BYTES = {"complex": 8, "dcomplex": 16, "float": 4, "double": 8, "boolean": 1, "int": 4}


@dataclass(frozen=True)
class LayoutCopy:
    """What was written: the copy's path, its spectral tile shape and how long it took."""

    source: str
    path: str
    channels_per_tile: int
    spectral_columns: tuple[str, ...]
    seconds: float


class MsLayoutError(RuntimeError):
    """The MS cannot be copied with another layout (e.g. it is a reference table or a multi-MS)."""


def _spectral_tile(valuetype: str, npol: int, channels: int) -> list[int]:
    rows = max(16, TILE_BYTES // (npol * channels * _VALUE_BYTES.get(valuetype, 8)))
    return [npol, channels, rows]


def _new_managers(tb, desc: dict, channels_per_tile: int) -> tuple[dict, list[str]]:
    """The copy's data managers: the source's, with spectral and incremental columns re-bound."""
    nrows = int(tb.nrows())
    managers: dict[str, dict] = {}
    spectral: list[str] = []

    def add(kind: str, name: str, columns: list[str], spec: dict) -> None:
        managers[f"*{len(managers) + 1}"] = {"TYPE": kind, "NAME": name, "COLUMNS": np.array(columns), "SPEC": spec}

    for entry in tb.getdminfo().values():
        columns = [str(c) for c in entry["COLUMNS"]]
        if entry["TYPE"] == "IncrementalStMan":
            for column in columns:
                if column in PER_ROW_COLUMNS:
                    add("StandardStMan", f"SSM_{column}", [column], {"BUCKETSIZE": 32768, "IndexLength": 0})
                else:
                    add("IncrementalStMan", f"ISM_{column}", [column], {"BUCKETSIZE": 32768})
            continue
        # Only [correlation, channel] cells with a value in the first row (the tile is sized from it);
        # a column left empty (e.g. an unfilled CORRECTED_DATA) keeps its manager.
        rebind = [c for c in columns if int(desc[c].get("ndim", 0)) == 2 and nrows and tb.iscelldefined(c, 0)]
        if rebind and len(rebind) == len(columns):
            for column in columns:
                npol, nchan = (int(n) for n in tb.getcell(column, 0).shape)
                tile = _spectral_tile(str(desc[column].get("valueType", "complex")), npol,
                                      max(1, min(channels_per_tile, nchan)))
                add("TiledShapeStMan", f"Tiled_{column}", [column], {"DEFAULTTILESHAPE": np.array(tile)})
                spectral.append(column)
            continue
        add(entry["TYPE"], str(entry["NAME"]), columns, entry.get("SPEC", {}))
    return managers, spectral


def _description_for(desc: dict, managers: dict) -> dict:
    """The source's table description bound to the new managers; a tiled manager needs its
    hypercolumn defined (the source's list may name columns the MS does not have)."""
    out = {k: v for k, v in desc.items() if k != "_define_hypercolumn_"}
    hyper = {}
    for entry in managers.values():
        columns = [str(c) for c in entry["COLUMNS"]]
        for column in columns:
            out[column] = dict(out[column], dataManagerGroup=entry["NAME"], dataManagerType=entry["TYPE"])
        if entry["TYPE"].startswith("Tiled"):
            hyper[entry["NAME"]] = {"HCdatanames": np.array(columns), "HCndim": int(out[columns[0]].get("ndim", 1)) + 1,
                                    "HCcoordnames": np.array([], dtype=str), "HCidnames": np.array([], dtype=str)}
    out["_define_hypercolumn_"] = hyper
    return out


def write_layout_copy(source: str, dest: str, channels_per_tile: int = 4) -> LayoutCopy:
    """Copy the MS `source` to `dest` with spectral tiles of `channels_per_tile` channels.

    Written under a staging name beside `dest` and renamed into place, so `dest` is either absent
    or complete. Raises MsLayoutError for what cannot be copied row by row (a reference table, a
    multi-MS): image such an MS as it is."""
    ensure_casa_runtime()
    from casatools import table

    if channels_per_tile < 1:
        raise ValueError(f"channels_per_tile={channels_per_tile}: give 1 or more")
    t0 = time.monotonic()
    source = os.path.abspath(source)
    src = table()
    src.open(source, nomodify=True)
    try:
        info = src.info()
        # A plain table keeps its columns in table.f<n> files; a reference or concatenated table
        # (a selection saved as a table, a multi-MS) has none of its own.
        if not any(name.startswith("table.f") for name in os.listdir(source)):
            raise MsLayoutError(f"{source} is not a plain table (a reference table or a multi-MS); "
                                "it is imaged as it is")
        desc = src.getdesc()
        managers, spectral = _new_managers(src, desc, channels_per_tile)
        keywords = src.getkeywords()
        with staged(dest) as tmp:
            out = table()
            out.create(tmp, _description_for(desc, managers), dminfo=managers, nrow=0)
            out.close()
            src.copyrows(tmp, startrowin=0, startrowout=-1, nrow=-1)
            out.open(tmp, nomodify=False)
            try:
                # casacore ends the readme with a newline of its own when it is put back.
                out.putinfo(dict(info, readme=str(info.get("readme", "")).rstrip("\n")))
                for name, value in keywords.items():
                    if isinstance(value, str) and value.startswith("Table: "):
                        # Subtables go inside the copy; casacore keeps the reference relative to
                        # the main table, so it survives the rename into place.
                        sub = table()
                        sub.open(value[len("Table: "):], nomodify=True)
                        try:
                            sub.copy(os.path.join(tmp, name), deep=True, valuecopy=True, returnobject=False)
                        finally:
                            sub.close()
                        out.putkeyword(name, "Table: " + os.path.join(tmp, name))
                    else:
                        out.putkeyword(name, value)
                out.flush()
            finally:
                out.close()
    finally:
        src.close()
    return LayoutCopy(source=source, path=os.path.abspath(dest), channels_per_tile=channels_per_tile,
                      spectral_columns=tuple(spectral), seconds=time.monotonic() - t0)
