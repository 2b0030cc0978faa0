"""What the imaging plan needs to know of a MeasurementSet, read in one cheap pass.

The plan (``engine.imaging_plan``) decides cells, image sizes and targets from facts: where each
field points and what it was observed for (intents), which spectral windows it has data in and
whether any of those data are unflagged, how big the dishes are, and where the weighted
visibilities lie in the uv plane. This module reads exactly those facts and nothing else:

- subtables (FIELD, STATE, ANTENNA, SPECTRAL_WINDOW, DATA_DESCRIPTION, OBSERVATION) whole; they
  are small;
- from the main table, FIELD_ID, DATA_DESC_ID and STATE_ID of every row, and one boolean per row
  (does it hold any unflagged visibility?) computed by TaQL inside casacore, so the FLAG column's
  bulk never reaches Python;
- UVW and WEIGHT of at most ``max_uv_rows`` rows, taken at a fixed stride through the table, so a
  1M-row MS costs the same as a 100k-row one and the same MS always gives the same sample (a plan
  must be deterministic); the stride is a prime that shares no factor with the rows of one dump,
  so every baseline is sampled (``sample_stride``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np

from pclean_provider.casa.msinfo import NO_READ_LOCK, NotAMeasurementSetError
from pclean_provider.casa.runtime import ensure_casa_runtime

# Enough rows to pin down a beam to about a per cent; more only costs time.
DEFAULT_MAX_UV_ROWS = 200_000


@dataclass(frozen=True)
class FieldFacts:
    id: int
    name: str
    source_id: int
    ra_rad: float
    dec_rad: float
    frame: str
    intents: tuple[str, ...]


@dataclass(frozen=True)
class SpwFacts:
    id: int
    name: str
    nchan: int
    freq_min_hz: float
    freq_max_hz: float
    chan_width_hz: float


@dataclass
class MsSurvey:
    """Facts of one MS for planning; uv arrays are per sampled row (metres, weights summed over
    the parallel hands that make Stokes I)."""

    path: str
    telescope: str
    nrows: int
    fields: list[FieldFacts]
    spws: list[SpwFacts]
    dish_diameters_m: list[float]
    # (field id, spw id) -> cross-correlation rows holding at least one unflagged visibility
    good_rows: dict[tuple[int, int], int]
    uvw_m: np.ndarray = dataclass_field(repr=False)  # shape (3, n)
    uv_weight: np.ndarray = dataclass_field(repr=False)  # shape (n,)
    uv_field: np.ndarray = dataclass_field(repr=False)  # shape (n,)
    uv_spw: np.ndarray = dataclass_field(repr=False)  # shape (n,)
    uv_stride: int = 1
    # The same count over the rows observed with a science intent (OBSERVE_TARGET): in data with
    # intents, a science field's calibration scans (atmosphere, pointing) are not what is imaged.
    science_rows: dict[tuple[int, int], int] = dataclass_field(default_factory=dict)

    def field_by_id(self, fid: int) -> FieldFacts:
        return next(f for f in self.fields if f.id == fid)

    def spw_by_id(self, sid: int) -> SpwFacts:
        return next(s for s in self.spws if s.id == sid)


def survey_ms(path: str | os.PathLike, max_uv_rows: int = DEFAULT_MAX_UV_ROWS) -> MsSurvey:
    """Read the planning facts of ``path``; NotAMeasurementSetError if it is not a readable MS."""
    ms = Path(path).expanduser().resolve()
    if not (ms / "table.dat").is_file():
        raise NotAMeasurementSetError(ms, "it is not a casacore table folder (no table.dat)")
    ensure_casa_runtime()
    import casatools

    tb = casatools.table()
    try:
        fields = _fields(tb, ms)
        spws = _spws(tb, ms)
        dishes = _column(tb, ms / "ANTENNA", "DISH_DIAMETER")
        ddid_spw = _column(tb, ms / "DATA_DESCRIPTION", "SPECTRAL_WINDOW_ID").astype(int)
        telescope = ", ".join(sorted({str(t) for t in _column(tb, ms / "OBSERVATION", "TELESCOPE_NAME") if str(t)}))
        obs_modes = _state_modes(tb, ms)
        try:
            tb.open(str(ms), nomodify=True, lockoptions=NO_READ_LOCK)
        except Exception as exc:
            raise NotAMeasurementSetError(ms, f"cannot open the main table: {exc}") from exc
        try:
            nrows = int(tb.nrows())
            if nrows == 0:
                field_ids = ddids = state_ids = np.zeros(0, dtype=int)
                good = np.zeros(0, dtype=bool)
            else:
                field_ids = tb.getcol("FIELD_ID").astype(int)
                ddids = tb.getcol("DATA_DESC_ID").astype(int)
                state_ids = (tb.getcol("STATE_ID").astype(int) if "STATE_ID" in tb.colnames()
                             else np.full(nrows, -1))
                good = _good_rows(tb, ms)
            stride = sample_stride(nrows, max_uv_rows, nantennas=len(dishes), ndd=len(ddid_spw))
            if nrows:
                uvw = tb.getcol("UVW", 0, -1, stride)
                weight = tb.getcol("WEIGHT", 0, -1, stride)
            else:
                uvw, weight = np.zeros((3, 0)), np.zeros((1, 0))
        finally:
            tb.close()
    finally:
        tb.done()

    spw_of_row = ddid_spw[ddids] if len(ddids) else ddids
    science_state = np.array(["OBSERVE_TARGET" in m for m in obs_modes] + [False], dtype=bool)
    # STATE_ID -1 (no state) indexes the trailing False.
    science = science_state[np.where((state_ids >= 0) & (state_ids < len(obs_modes)), state_ids, -1)] \
        if len(state_ids) else np.zeros(0, dtype=bool)
    good_rows = _count_by_field_spw(field_ids, spw_of_row, good)
    science_rows = _count_by_field_spw(field_ids, spw_of_row, good & science) if len(good) else {}
    intents = _intents_per_field(field_ids, state_ids, obs_modes)
    fields = [FieldFacts(f.id, f.name, f.source_id, f.ra_rad, f.dec_rad, f.frame, intents.get(f.id, ()))
              for f in fields]

    sample = slice(0, None, stride)
    keep = good[sample] if len(good) else good
    stokes_i_weight = _parallel_hand_weight(tb_weight=weight)
    return MsSurvey(
        path=str(ms), telescope=telescope or "UNKNOWN", nrows=nrows, fields=fields, spws=spws,
        dish_diameters_m=[float(d) for d in dishes], good_rows=good_rows,
        uvw_m=np.asarray(uvw, dtype=float)[:, keep], uv_weight=stokes_i_weight[keep],
        uv_field=field_ids[sample][keep], uv_spw=spw_of_row[sample][keep], uv_stride=stride,
        science_rows=science_rows,
    )


def _count_by_field_spw(field_ids: np.ndarray, spws: np.ndarray, mask: np.ndarray) -> dict[tuple[int, int], int]:
    """(field, spw) -> rows where mask holds; np.unique keeps it linear in rows."""
    if not len(field_ids):
        return {}
    keys = field_ids.astype(np.int64) * 100_000 + spws
    uniq, counts = np.unique(keys[mask], return_counts=True)
    return {(k // 100_000, k % 100_000): n for k, n in zip(uniq.tolist(), counts.tolist(), strict=True)}


def sample_stride(nrows: int, max_rows: int, *, nantennas: int, ndd: int) -> int:
    """Every how many rows to read: at least nrows / max_rows, and prime to the number of rows one
    dump holds. Rows come in dumps of (baselines x data descriptions); a stride sharing a factor with
    that count samples the same few baselines at every dump (stride 10 with 45 baselines: 9 of them),
    and the uv coverage, so the beam, comes out wrong. A prime that divides neither the baseline
    count (with or without autocorrelations) nor the data descriptions cycles through all of them."""
    if nrows <= max_rows:
        return 1
    want = math.ceil(nrows / max_rows)
    counts = [max(1, nantennas * (nantennas - 1) // 2), max(1, nantennas * (nantennas + 1) // 2), max(1, ndd)]
    p = max(2, want)
    while not (_is_prime(p) and all(c % p for c in counts)):
        p += 1
    return p


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _good_rows(tb, ms: Path) -> np.ndarray:
    """One boolean per row: a cross-correlation with any unflagged visibility left (an
    autocorrelation images nothing). Computed by TaQL in casacore (a boolean is the one computed
    type the table tool hands back whole)."""
    query = tb.taql(f"SELECT (any(!FLAG) && !FLAG_ROW && ANTENNA1 != ANTENNA2) AS GOOD FROM '{ms}'")
    try:
        return np.asarray(query.getcol("GOOD"), dtype=bool)
    finally:
        query.close()


def _parallel_hand_weight(tb_weight: np.ndarray) -> np.ndarray:
    """Stokes I weight of a row: the sum of its parallel hands (RR+LL, XX+YY, or the only one)."""
    w = np.asarray(tb_weight, dtype=float)
    if w.ndim == 1:
        return w
    if w.shape[0] == 4:  # RR RL LR LL (or XX XY YX YY): the first and last are the parallel hands
        return w[0] + w[3]
    if w.shape[0] == 2:
        return w[0] + w[1]
    return w[0]


def _column(tb, table: Path, name: str) -> np.ndarray:
    try:
        tb.open(str(table), nomodify=True, lockoptions=NO_READ_LOCK)
    except Exception as exc:
        raise NotAMeasurementSetError(table.parent, f"cannot open {table.name}: {exc}") from exc
    try:
        if name not in tb.colnames() or tb.nrows() == 0:
            return np.zeros(0)
        return np.asarray(tb.getcol(name))
    finally:
        tb.close()


def _fields(tb, ms: Path) -> list[FieldFacts]:
    tb.open(str(ms / "FIELD"), nomodify=True, lockoptions=NO_READ_LOCK)
    try:
        n = int(tb.nrows())
        if n == 0:
            return []
        names = tb.getcol("NAME")
        source = tb.getcol("SOURCE_ID") if "SOURCE_ID" in tb.colnames() else np.full(n, -1)
        try:
            phase = tb.getcol("PHASE_DIR")  # (2, npoly+1, nfield): the constant term is the direction
        except Exception:  # noqa: BLE001 - fields of different NUM_POLY (ephemerides): one cell each
            phase = np.stack([np.asarray(tb.getcell("PHASE_DIR", i))[:, :1] for i in range(n)], axis=-1)
        try:
            frame = str(tb.getcolkeyword("PHASE_DIR", "MEASINFO").get("Ref", "J2000"))
        except Exception:  # noqa: BLE001 - a missing keyword means the MS convention, J2000
            frame = "J2000"
    finally:
        tb.close()
    return [FieldFacts(i, str(names[i]), int(source[i]), float(phase[0, 0, i]) % (2 * math.pi),
                       float(phase[1, 0, i]), frame, ()) for i in range(n)]


def _spws(tb, ms: Path) -> list[SpwFacts]:
    tb.open(str(ms / "SPECTRAL_WINDOW"), nomodify=True, lockoptions=NO_READ_LOCK)
    try:
        out = []
        names = tb.getcol("NAME") if "NAME" in tb.colnames() else None
        for i in range(int(tb.nrows())):
            freqs = np.asarray(tb.getcell("CHAN_FREQ", i), dtype=float)
            widths = np.asarray(tb.getcell("CHAN_WIDTH", i), dtype=float)
            out.append(SpwFacts(i, str(names[i]) if names is not None else "", len(freqs),
                                float(freqs.min()), float(freqs.max()), float(abs(widths[0]))))
        return out
    finally:
        tb.close()


def _state_modes(tb, ms: Path) -> list[str]:
    if not (ms / "STATE" / "table.dat").is_file():
        return []
    modes = _column(tb, ms / "STATE", "OBS_MODE")
    return [str(m) for m in modes]


def _intents_per_field(field_ids: np.ndarray, state_ids: np.ndarray, obs_modes: list[str]) -> dict[int, tuple[str, ...]]:
    """Field id -> its intents (OBS_MODE split at commas, the '#ON_SOURCE' sub-intents dropped)."""
    if not obs_modes or not len(field_ids):
        return {}
    pairs = np.unique(np.stack([field_ids, state_ids]), axis=1)
    out: dict[int, set[str]] = {}
    for fid, sid in pairs.T.tolist():
        if 0 <= sid < len(obs_modes):
            for intent in obs_modes[sid].split(","):
                intent = intent.strip().split("#")[0]
                if intent:
                    out.setdefault(fid, set()).add(intent)
    return {fid: tuple(sorted(v)) for fid, v in out.items()}
