"""MeasurementSet metadata as a small JSON-able model (for ingest checks, planning and reports).

Read with casatools' table tool straight from the MS subtables: it needs no MS iterator set-up
and stays fast on large MeasurementSets because it never touches the data columns.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.errors import PcleanInputError

# MJD 0 in UTC; MS TIME columns count seconds from it.
_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
DATA_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA", "FLOAT_DATA")


class NotAMeasurementSetError(PcleanInputError):
    """The path is missing, not a MeasurementSet, or cannot be opened; the message names the path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"vis={self.path!r} is not a readable MeasurementSet: {reason}")

    def __reduce__(self):
        # Pickled by Dask on the worker and rebuilt on the client: rebuild from both arguments.
        return type(self), (self.path, self.reason)


class SpwInfo(BaseModel):
    id: int
    name: str
    nchan: int
    first_freq_hz: float
    last_freq_hz: float
    chan_width_hz: float
    ref_freq_hz: float
    total_bandwidth_hz: float
    frame: str


class FieldInfo(BaseModel):
    id: int
    name: str
    ra_deg: float
    dec_deg: float


class MsMetadata(BaseModel):
    path: str
    size_bytes: int
    nrows: int
    spws: list[SpwInfo]
    fields: list[FieldInfo]
    time_start_mjd_s: float
    time_end_mjd_s: float
    time_start_utc: str
    time_end_utc: str
    antennas: list[str]
    telescope: str
    observation_ids: list[int]
    data_columns: list[str]
    correlations: list[str]

    @property
    def total_channels(self) -> int:
        return sum(s.nchan for s in self.spws)


def mjd_seconds_to_iso(seconds: float) -> str:
    return (_MJD_EPOCH + timedelta(seconds=float(seconds))).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def folder_size(path: str | os.PathLike) -> int:
    """Bytes of every file under `path` (an MS); files that vanish meanwhile count 0."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


# Stokes type codes of casacore's Stokes enum, for the correlations this project meets.
_STOKES = {1: "I", 2: "Q", 3: "U", 4: "V", 5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY"}


# Metadata reads take no table lock: a process holding the MS's write lock (a transfer still
# writing, a hung CASA session, a lock left on NFS) would otherwise make the read wait for ever and
# hold back the whole night. What is read without a lock may be mid-write; ingest reads every MS
# twice and refuses one whose two reads differ.
NO_READ_LOCK = {"option": "usernoread"}


def read_ms_metadata(path: str | os.PathLike) -> MsMetadata:
    """Summarise a MeasurementSet; :class:`NotAMeasurementSetError` (a ValueError) if it is not one."""
    ms_path = Path(path).expanduser().resolve()
    if not ms_path.exists():
        raise NotAMeasurementSetError(ms_path, "no such file or folder; check the path")
    if not ms_path.is_dir() or not (ms_path / "table.dat").is_file():
        raise NotAMeasurementSetError(ms_path, "it is not a casacore table folder (no table.dat)")
    for sub in ("ANTENNA", "SPECTRAL_WINDOW", "FIELD", "OBSERVATION", "DATA_DESCRIPTION"):
        if not (ms_path / sub / "table.dat").is_file():
            raise NotAMeasurementSetError(ms_path, f"the {sub} subtable is missing")

    ensure_casa_runtime()
    import casatools

    tb = casatools.table()

    def read(sub: str, columns: list[str]) -> tuple[int, dict]:
        name = str(ms_path / sub) if sub else str(ms_path)
        try:
            tb.open(name, nomodify=True, lockoptions=NO_READ_LOCK)
        except Exception as exc:
            raise NotAMeasurementSetError(ms_path, f"cannot open {sub or 'main table'}: {exc}") from exc
        try:
            present = set(tb.colnames())
            nrows = int(tb.nrows())
            values = {c: (tb.getcol(c) if nrows else []) for c in columns if c in present}
            values["__columns__"] = present
            return nrows, values
        finally:
            tb.close()

    try:
        nrows, main = read("", ["TIME", "OBSERVATION_ID"])
        if "TIME" not in main["__columns__"]:
            raise NotAMeasurementSetError(ms_path, "the main table has no TIME column")
        _, ant = read("ANTENNA", ["NAME"])
        _, spw = read("SPECTRAL_WINDOW", ["NAME", "NUM_CHAN", "CHAN_FREQ", "CHAN_WIDTH", "REF_FREQUENCY",
                                          "TOTAL_BANDWIDTH", "MEAS_FREQ_REF"])
        _, fld = read("FIELD", ["NAME", "PHASE_DIR"])
        nobs, obs = read("OBSERVATION", ["TELESCOPE_NAME"])
        _, pol = read("POLARIZATION", ["CORR_TYPE"])
    finally:
        tb.done()

    times = main.get("TIME", [])
    if len(times):
        t0, t1 = float(min(times)), float(max(times))
    else:
        t0 = t1 = 0.0

    frames = {0: "REST", 1: "LSRK", 2: "LSRD", 3: "BARY", 4: "GEO", 5: "TOPO", 6: "GALACTO", 7: "LGROUP", 8: "CMB"}
    spws = []
    nspw = len(spw.get("NUM_CHAN", []))
    for i in range(nspw):
        nchan = int(spw["NUM_CHAN"][i])
        # Variable-shaped columns come back as a dict of 'r1', 'r2', ... when spws differ in nchan.
        freqs = _row(spw["CHAN_FREQ"], i)
        widths = _row(spw["CHAN_WIDTH"], i)
        spws.append(
            SpwInfo(
                id=i,
                name=str(spw["NAME"][i]) if "NAME" in spw else "",
                nchan=nchan,
                first_freq_hz=float(freqs[0]),
                last_freq_hz=float(freqs[-1]),
                chan_width_hz=float(widths[0]),
                ref_freq_hz=float(spw["REF_FREQUENCY"][i]),
                total_bandwidth_hz=float(spw["TOTAL_BANDWIDTH"][i]),
                frame=frames.get(int(spw["MEAS_FREQ_REF"][i]), "UNKNOWN") if "MEAS_FREQ_REF" in spw else "UNKNOWN",
            )
        )

    fields = []
    for i, name in enumerate(fld.get("NAME", [])):
        direction = _row(fld["PHASE_DIR"], i)  # shape (2, npoly+1) per field: take the constant term
        ra = float(direction[0][0]) if hasattr(direction[0], "__len__") else float(direction[0])
        dec = float(direction[1][0]) if hasattr(direction[1], "__len__") else float(direction[1])
        fields.append(FieldInfo(id=i, name=str(name), ra_deg=math.degrees(ra) % 360.0, dec_deg=math.degrees(dec)))

    correlations: list[str] = []
    if pol.get("CORR_TYPE") is not None and len(pol.get("CORR_TYPE", [])):
        first = _row(pol["CORR_TYPE"], 0)
        correlations = [_STOKES.get(int(c), str(int(c))) for c in first]

    telescopes = sorted({str(t) for t in obs.get("TELESCOPE_NAME", []) if str(t)})
    return MsMetadata(
        path=str(ms_path),
        size_bytes=folder_size(ms_path),
        nrows=nrows,
        spws=spws,
        fields=fields,
        time_start_mjd_s=t0,
        time_end_mjd_s=t1,
        time_start_utc=mjd_seconds_to_iso(t0),
        time_end_utc=mjd_seconds_to_iso(t1),
        antennas=[str(a) for a in ant.get("NAME", [])],
        telescope=", ".join(telescopes) or "UNKNOWN",
        observation_ids=sorted({int(o) for o in main.get("OBSERVATION_ID", [])}) or list(range(nobs)),
        data_columns=[c for c in DATA_COLUMNS if c in main["__columns__"]],
        correlations=correlations,
    )


def _row(column, i: int):
    """Row i of a column read with getcol: a dict for variable shapes, else an array with rows last."""
    if isinstance(column, dict):
        return column[f"r{i + 1}"]
    return column[..., i] if getattr(column, "ndim", 1) > 1 else [column[i]]
