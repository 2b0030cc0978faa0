"""Synthetic MeasurementSets with a known sky, for tests, demos and benchmarks.

The sky is a component list (point and Gaussian components with spectral indices, optionally a
point source with a Gaussian spectral line) predicted into visibilities by casatools' simulator,
plus thermal noise from a seeded generator, so the same arguments always give the same data.
Beside the MeasurementSet we write the component list and a truth file (JSON) that QA compares
images against.

Conventions the truth file relies on:
- ``ref_freq_hz`` is the centre of the total frequency coverage and the reference frequency of
  every source spectrum, so an mfs image (whose reference frequency tclean puts mid-band) shows
  each source at its ``flux_jy``.
- Source positions are given as offsets on the sky's tangent plane (SIN projection, as CASA images
  use), so a source at offset (dx, dy) lands at pixel offset (dx/cell, dy/cell) from the image centre.
- Fluxes are intrinsic: the simulator applies the VLA primary beam (about 33 arcmin FWHM at
  1.4 GHz), so a primary-beam corrected image is what matches ``flux_jy``. The default sky stays
  within 3.5 arcmin of the pointing centre, where the attenuation is below 3 %; its 1 Jy point
  source sits exactly at the phase centre, unattenuated.

Beyond the default (a Y-shaped VLA-like array observing one field), a simulation can use a real
array layout from the CASA data's simulator configurations (``array``), observe several targets
with scan intents in one MeasurementSet (``targets``), flag all or one target's data
(``flagged``), and give each spectral window its own channel width (``spw_chan_widths_hz``), so
that tests see the variety of real observatory data.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pclean_provider.atomic_files import process_owner, put_set_in_place, staging_name
from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.config.quantities import fast_fft_size
from pclean_provider.errors import PcleanInputError

# Phase centre of the default sky: at +40 deg it transits at 56 deg elevation seen from the VLA,
# so even 8 h tracks stay high above the horizon.
DEFAULT_PHASE_CENTER = (180.0, 40.0)  # ra, dec in degrees (J2000)
# A fixed epoch keeps runs reproducible; observations are centred on transit this day.
REFERENCE_EPOCH = "2024/03/20/00:00:00"
DISH_DIAMETER_M = 25.0
# Array arms: the longest baseline is sqrt(3) * arm length, about 1.56 km, giving a ~30 arcsec
# beam at 1.4 GHz: small images (128 px) then show several beams around each source.
ARM_LENGTH_M = 900.0
ARM_INNER_M = 40.0
SPEED_OF_LIGHT = 299_792_458.0
ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
# Where the CASA data package keeps the simulator's antenna configurations (<name>.cfg).
ARRAY_CONFIG_DIR = "alma/simmos"
# The default phase centre of a real array sits this far south of the site's zenith: it transits
# close to the zenith (never below ~80 deg) without passing through it, where alt-az tracking is singular.
ZENITH_OFFSET_DEG = 5.0
# Telescopes with circularly polarised feeds; the others in the configurations have linear feeds.
CIRCULAR_FEED_TELESCOPES = frozenset({"VLA", "EVLA", "VLBA", "CARMA"})


class SimulationError(PcleanInputError):
    """Bad simulator input; the message names the parameter and the fix."""


class SourceSpec(BaseModel):
    """One sky component. Position either absolute (ra_deg/dec_deg) or as offsets from the phase centre."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: Literal["point", "gaussian"] = "point"
    flux_jy: float = Field(gt=0, description="Stokes I at ref_freq_hz")
    spectral_index: float = 0.0
    # Tangent-plane offsets from the phase centre: +ra is east (increasing RA), +dec is north.
    offset_ra_arcsec: float = 0.0
    offset_dec_arcsec: float = 0.0
    ra_deg: float | None = None
    dec_deg: float | None = None
    major_arcsec: float | None = None
    minor_arcsec: float | None = None
    pa_deg: float = 0.0

    @model_validator(mode="after")
    def _check_shape(self) -> SourceSpec:
        if (self.ra_deg is None) != (self.dec_deg is None):
            raise ValueError(f"source {self.name!r}: give both ra_deg and dec_deg, or neither (then offsets apply)")
        if self.shape == "gaussian":
            if not self.major_arcsec or not self.minor_arcsec or self.major_arcsec <= 0 or self.minor_arcsec <= 0:
                raise ValueError(f"source {self.name!r}: a gaussian needs positive major_arcsec and minor_arcsec")
            if self.minor_arcsec > self.major_arcsec:
                raise ValueError(f"source {self.name!r}: minor_arcsec must not exceed major_arcsec")
        return self


class LineSpec(BaseModel):
    """A point source whose spectrum is a Gaussian line (plus optional flat continuum)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "line"
    peak_flux_jy: float = Field(default=0.5, gt=0)
    center_freq_hz: float | None = None  # default: ref_freq_hz
    fwhm_hz: float | None = None  # default: 4 channels
    continuum_jy: float = Field(default=0.0, ge=0)
    offset_ra_arcsec: float = -60.0
    offset_dec_arcsec: float = 45.0


_INTENT = re.compile(r"[A-Z][A-Z0-9_]*(#[A-Z][A-Z0-9_]*)?")


class TargetSpec(BaseModel):
    """One observed source of a multi-target MeasurementSet: its position, scan intents and sky.

    ``intents`` are scan intents as in ALMA/VLA data ("OBSERVE_TARGET", "CALIBRATE_PHASE", ...);
    a bare intent gets the "#ON_SOURCE" sub-intent. A target none of whose intents is
    OBSERVE_TARGET is a calibrator: a single point of ``flux_jy`` at its centre unless ``sources``
    say otherwise. A science target shows ``sources`` (offsets from the target's centre), or
    the simulation's ``sources`` (the default sky) when None. An empty intents list leaves the
    target's rows without a STATE entry (STATE_ID -1), as data without intents have.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    intents: list[str] = Field(default_factory=lambda: ["OBSERVE_TARGET"])
    # Tangent-plane offsets (SIN projection, like the sources' arcsec offsets) from the phase centre.
    offset_ra_deg: float = 0.0
    offset_dec_deg: float = 0.0
    pointings: int = Field(default=1, ge=1)
    pointing_spacing_arcsec: float | None = Field(default=None, gt=0)
    flux_jy: float = Field(default=1.0, gt=0)
    sources: list[SourceSpec] | None = None

    @model_validator(mode="after")
    def _check(self) -> TargetSpec:
        for intent in self.intents:
            if not _INTENT.fullmatch(intent):
                raise ValueError(
                    f"target {self.name!r}: intent {intent!r} is not like CALIBRATE_PHASE or OBSERVE_TARGET#ON_SOURCE"
                )
        if math.hypot(self.offset_ra_deg, self.offset_dec_deg) >= 60.0:
            raise ValueError(f"target {self.name!r}: offsets must stay within 60 deg of the phase centre")
        return self

    @property
    def obs_mode(self) -> str | None:
        """The STATE table's OBS_MODE for this target, None without intents."""
        if not self.intents:
            return None
        return ",".join(i if "#" in i else f"{i}#ON_SOURCE" for i in self.intents)

    @property
    def calibrator(self) -> bool:
        return bool(self.intents) and not any(i.startswith("OBSERVE_TARGET") for i in self.intents)


def load_targets(targets: str | os.PathLike | Iterable[Any]) -> list[TargetSpec]:
    """Targets from a list of dicts/models, or a JSON/YAML file holding a list (or a mapping with 'targets')."""
    if isinstance(targets, str | os.PathLike):
        raw = _read_list_file(Path(targets).expanduser(), "targets")
    else:
        raw = list(targets)
    return _validated_list(raw, TargetSpec, "targets", "None for a single field")


def _validated_list(raw: Iterable[Any], model: type, what: str, instead: str) -> list:
    """Each item as ``model`` (validated; an error names its index), non-empty, names unique."""
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, model):
            out.append(item)
            continue
        try:
            out.append(model.model_validate(item))
        except Exception as exc:
            raise SimulationError(f"{what}[{i}]: {exc}") from exc
    if not out:
        raise SimulationError(f"{what}: the list is empty; give at least one, or {instead}")
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise SimulationError(f"{what}: names must be unique, got {names}")
    return out


def _read_list_file(path: Path, what: str) -> list:
    if not path.is_file():
        raise SimulationError(f"{what}: file {path} does not exist; give a JSON or YAML list of {what}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as exc:  # yaml and json raise unrelated error types
        raise SimulationError(f"{what}: cannot parse {path}: {exc}") from exc
    if isinstance(raw, dict) and what in raw:
        raw = raw[what]
    if not isinstance(raw, list):
        raise SimulationError(f"{what}: {path} must hold a list of {what} (or a mapping with {what!r})")
    return raw


class SimulationResult(BaseModel):
    """What simulate_ms wrote (absolute paths) and how to image it."""

    ms: str
    truth: str
    componentlist: str
    nrows: int
    nchan: int
    nspw: int
    nfields: int
    suggested_cell: str
    suggested_imsize: int
    beam_estimate_arcsec: float
    phasecenter: str
    seed: int


def default_sources() -> list[SourceSpec]:
    """A 1 Jy point at the phase centre, a resolved Gaussian and a weak steep-spectrum point."""
    return [
        SourceSpec(name="point", shape="point", flux_jy=1.0, spectral_index=-0.7),
        SourceSpec(
            name="gaussian",
            shape="gaussian",
            flux_jy=0.5,
            spectral_index=-1.0,
            offset_ra_arcsec=150.0,
            offset_dec_arcsec=90.0,
            major_arcsec=60.0,
            minor_arcsec=40.0,
            pa_deg=30.0,
        ),
        SourceSpec(
            name="weak_point",
            shape="point",
            flux_jy=0.2,
            spectral_index=0.5,
            offset_ra_arcsec=-120.0,
            offset_dec_arcsec=-150.0,
        ),
    ]


def load_sources(sources: str | os.PathLike | Iterable[Any] | None) -> list[SourceSpec]:
    """Sources from None (the default sky), a list of dicts/models, or a JSON/YAML file."""
    if sources is None:
        return default_sources()
    if isinstance(sources, str | os.PathLike):
        sources = _read_list_file(Path(sources).expanduser(), "sources")
    return _validated_list(sources, SourceSpec, "sources", "None for the default sky")


def _lm_to_radec(ra0: float, dec0: float, l_rad: float, m_rad: float) -> tuple[float, float]:
    """Inverse SIN projection: tangent-plane offsets (radians) to ra, dec (radians)."""
    n = math.sqrt(max(0.0, 1.0 - l_rad * l_rad - m_rad * m_rad))
    dec = math.asin(m_rad * math.cos(dec0) + n * math.sin(dec0))
    ra = ra0 + math.atan2(l_rad, n * math.cos(dec0) - m_rad * math.sin(dec0))
    return ra % (2 * math.pi), dec


def _radec_to_lm(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float]:
    dra = ra - ra0
    l_rad = math.cos(dec) * math.sin(dra)
    m_rad = math.sin(dec) * math.cos(dec0) - math.cos(dec) * math.sin(dec0) * math.cos(dra)
    return l_rad, m_rad


def _casa_direction(ra_rad: float, dec_rad: float) -> str:
    return f"J2000 {ra_rad!r}rad {dec_rad!r}rad"


def sexagesimal_direction(ra_deg: float, dec_deg: float) -> str:
    """'J2000 12h00m00.0000s +40d00m00.000s': what people paste into tclean's phasecenter."""
    ra_s = round((ra_deg % 360.0) / 15.0 * 3600.0, 4) % 86400.0
    h, rem = divmod(ra_s, 3600.0)
    m, sec = divmod(rem, 60.0)
    sign = "-" if dec_deg < 0 else "+"
    dec_s = round(abs(dec_deg) * 3600.0, 3)
    d, drem = divmod(dec_s, 3600.0)
    dm, dsec = divmod(drem, 60.0)
    return f"J2000 {int(h):02d}h{int(m):02d}m{sec:07.4f}s {sign}{int(d):02d}d{int(dm):02d}m{dsec:06.3f}s"


def array_layout(antennas: int) -> tuple[list[float], list[float], list[float], list[str]]:
    """A Y-shaped array (VLA-like), antennas spread along three arms with power-law spacing.

    Returns local east/north/up offsets in metres and antenna names. Deterministic.
    """
    per_arm = [antennas // 3 + (1 if i < antennas % 3 else 0) for i in range(3)]
    east, north, up, names = [], [], [], []
    for arm, count in enumerate(per_arm):
        # Arms at 5, 125, 245 deg from north: not aligned with the axes, so the uv tracks fill the plane.
        angle = math.radians(5.0 + 120.0 * arm)
        for k in range(1, count + 1):
            radius = ARM_INNER_M + (ARM_LENGTH_M - ARM_INNER_M) * (k / count) ** 1.7
            east.append(radius * math.sin(angle))
            north.append(radius * math.cos(angle))
            up.append(0.0)
            names.append(f"{'NEW'[arm]}{k:02d}")
    return east, north, up, names


@dataclass(frozen=True)
class ArrayConfig:
    """The antennas a simulation uses: positions, dishes, names, and where on Earth they stand.

    ``coordsystem`` is what casatools' simulator.setconfig expects: "local" for east/north/up
    offsets from ``location``, "global" for ITRF x/y/z.
    """

    name: str | None  # the configuration's name; None for the built-in Y array
    telescope: str
    x: list[float]
    y: list[float]
    z: list[float]
    diameters: list[float]
    names: list[str]
    pads: list[str]
    coordsystem: Literal["local", "global"]
    location: dict  # a casatools position measure
    latitude_deg: float
    antennas_in_file: int

    @property
    def dish_diameter_m(self) -> float:
        """The most common dish diameter (ties: the larger), which sets the primary beam we quote."""
        return max(set(self.diameters), key=lambda d: (self.diameters.count(d), d))

    @property
    def circular_feeds(self) -> bool:
        return self.telescope.upper() in CIRCULAR_FEED_TELESCOPES


def _array_config_dir() -> Path:
    import casatools

    resolved = Path(casatools.ctsys.resolve(ARRAY_CONFIG_DIR))
    if resolved.is_dir():
        return resolved
    try:
        import casadata

        packaged = Path(casadata.__file__).parent / "__data__" / ARRAY_CONFIG_DIR
    except ImportError:
        packaged = None
    if packaged is not None and packaged.is_dir():
        return packaged
    raise SimulationError(
        f"array: the CASA data folder {ARRAY_CONFIG_DIR!r} with the antenna configurations was not found; "
        "install the casadata package (make setup)"
    )


def available_arrays() -> list[str]:
    """Names accepted by ``array``: the configuration files of the CASA data package, without '.cfg'."""
    ensure_casa_runtime()
    return sorted(p.name[:-4] for p in _array_config_dir().glob("*.cfg"))


@dataclass(frozen=True)
class ParsedArrayConfig:
    """A configuration file's content: header keys and one (x, y, z, diameter, name, pad) per antenna."""

    observatory: str | None
    coordsys: str | None
    rows: list[tuple[float, float, float, float, str | None, str | None]]


def parse_array_cfg(text: str, label: str = "configuration") -> ParsedArrayConfig:
    """Parse a simulator configuration file (the format of CASA's alma/simmos/*.cfg).

    Header lines are ``# key=value`` (``observatory``, ``coordsys`` with LOC, XYZ or UTM); other
    ``#`` lines and anything after a ``#`` on a data line are comments. Data lines are
    ``x y z diameter [pad [name]]``.
    """
    header: dict[str, str] = {}
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition("=")
            if sep and key.strip().lower() not in header and value.strip():
                header[key.strip().lower()] = value.strip().split()[0]
            continue
        fields = stripped.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            x, y, z, diam = (float(v) for v in fields[:4])
        except ValueError:
            raise SimulationError(f"array: {label} line {lineno}: expected 'x y z diameter [pad [name]]', got {line!r}") from None
        if diam <= 0:
            raise SimulationError(f"array: {label} line {lineno}: dish diameter must be positive")
        pad = fields[4] if len(fields) > 4 else None
        name = fields[5] if len(fields) > 5 else None
        rows.append((x, y, z, diam, name, pad))
    if not rows:
        raise SimulationError(f"array: {label} lists no antennas")
    coordsys = header.get("coordsys")
    return ParsedArrayConfig(observatory=header.get("observatory"), coordsys=coordsys.upper() if coordsys else None, rows=rows)


def select_antennas(positions: Sequence[tuple[float, float, float]], count: int | None) -> list[int]:
    """Indices (in file order) of at most ``count`` antennas spread over the whole array.

    The two ends of the longest baseline always stay, so the resolution is the full array's;
    the others are taken evenly by distance from the array's centre, innermost to outermost,
    so short spacings survive too. Deterministic: the same file and count give the same antennas.
    """
    n = len(positions)
    if count is None or count >= n:
        return list(range(n))
    best, ends = -1.0, (0, 1)
    for i in range(n):
        for j in range(i + 1, n):
            d = math.dist(positions[i], positions[j])
            if d > best:
                best, ends = d, (i, j)
    centre = [sum(p[k] for p in positions) / n for k in range(3)]
    rest = sorted((i for i in range(n) if i not in ends), key=lambda i: (math.dist(positions[i], centre), i))
    need = count - 2
    if need == 1:
        picks = [rest[-1]]
    else:
        picks = [rest[round(k * (len(rest) - 1) / (need - 1))] for k in range(need)]
    return sorted({*ends, *picks})


def _site(me: Any, telescope: str) -> dict | None:
    """The observatory's position as casatools knows it, None when it has no real one."""
    try:
        position = me.observatory(telescope)
    except Exception:
        return None
    if not position or "m0" not in position:
        return None
    # Some entries (VLBA) are placeholders at the Earth's centre.
    itrf = me.measure(position, "ITRF")
    return position if itrf["m2"]["value"] > 6.0e6 else None


def _latitude_deg(me: Any, position: dict) -> float:
    return math.degrees(me.measure(position, "WGS84")["m1"]["value"])


def load_array(array: str, antennas: int | None = None) -> ArrayConfig:
    """The named configuration of the CASA data package, reduced to at most ``antennas`` antennas."""
    ensure_casa_runtime()
    import casatools

    folder = _array_config_dir()
    name = array[:-4] if array.endswith(".cfg") else array
    path = folder / f"{name}.cfg"
    if not name or "/" in name or not path.is_file():
        known = sorted(p.name[:-4] for p in folder.glob("*.cfg"))
        close = [k for k in known if k.startswith(name.split(".")[0].lower())][:8] if name else []
        examples = close or [k for k in ("vla.a", "vla.d", "alma.cycle10.1", "alma.cycle10.8", "meerkat", "atca_6a",
                                          "aca.cycle10") if k in known]
        raise SimulationError(
            f"array={array!r}: no such configuration in {folder}; valid names include {', '.join(examples)} "
            f"({len(known)} in all, see available_arrays())"
        )
    parsed = parse_array_cfg(path.read_text(errors="replace"), path.name)
    if parsed.coordsys not in ("LOC", "XYZ"):
        raise SimulationError(
            f"array={array!r}: coordsys={parsed.coordsys} is not supported (only LOC and XYZ configurations); "
            "choose another configuration"
        )
    if not parsed.observatory:
        raise SimulationError(f"array={array!r}: {path.name} names no observatory in its header")
    if antennas is not None and antennas < 3:
        raise SimulationError(f"antennas={antennas}: need at least 3 antennas")
    rows = parsed.rows
    keep = select_antennas([r[:3] for r in rows], antennas)
    me = casatools.measures()
    try:
        location = _site(me, parsed.observatory)
        if location is None:
            if parsed.coordsys == "LOC":
                raise SimulationError(
                    f"array={array!r}: casatools knows no position for observatory {parsed.observatory!r}, "
                    "and the configuration's local offsets need one"
                )
            # Global positions place the antennas themselves; the array's centroid serves as its site.
            cx, cy, cz = (sum(r[k] for r in rows) / len(rows) for k in range(3))
            location = me.position("ITRF", f"{cx!r}m", f"{cy!r}m", f"{cz!r}m")
        latitude = _latitude_deg(me, location)
    finally:
        me.done()
    prefix = parsed.observatory[:1].upper()
    names, pads = [], []
    for i, (_x, _y, _z, _d, ant, pad) in enumerate(rows):
        names.append(ant or pad or f"{prefix}{i:03d}")
        pads.append(pad or ant or f"{prefix}{i:03d}")
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return ArrayConfig(
        name=name,
        telescope=parsed.observatory,
        x=[rows[i][0] for i in keep],
        y=[rows[i][1] for i in keep],
        z=[rows[i][2] for i in keep],
        diameters=[rows[i][3] for i in keep],
        names=[names[i] for i in keep],
        pads=[pads[i] for i in keep],
        coordsystem="local" if parsed.coordsys == "LOC" else "global",
        location=location,
        latitude_deg=latitude,
        antennas_in_file=len(rows),
    )


def _y_array(casatools: Any, antennas: int) -> ArrayConfig:
    """The built-in Y-shaped array at the VLA site."""
    me = casatools.measures()
    try:
        vla = me.observatory("VLA")
        latitude = _latitude_deg(me, vla)
    finally:
        me.done()
    east, north, up, names = array_layout(antennas)
    return ArrayConfig(
        name=None, telescope="VLA", x=east, y=north, z=up, diameters=[DISH_DIAMETER_M] * antennas, names=names,
        pads=[f"P{n}" for n in names], coordsystem="local", location=vla, latitude_deg=latitude,
        antennas_in_file=antennas,
    )


def mosaic_offsets(fields: int, spacing_arcsec: float) -> list[tuple[float, float]]:
    """Pointing offsets (arcsec) on a hexagonal pattern: the centre, then rings around it."""
    out = [(0.0, 0.0)]
    ring = 1
    while len(out) < fields:
        # Walk the ring's six sides; corners at 60 degree steps.
        corners = [
            (ring * spacing_arcsec * math.cos(math.radians(60 * i)), ring * spacing_arcsec * math.sin(math.radians(60 * i)))
            for i in range(6)
        ]
        for i in range(6):
            x0, y0 = corners[i]
            x1, y1 = corners[(i + 1) % 6]
            for step in range(ring):
                t = step / ring
                out.append((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
        ring += 1
    return out[:fields]


def spw_layout(nspw: int, nchan: int, chan_width_hz: float, ref_freq_hz: float, spw_gap_hz: float) -> list[float]:
    """First-channel centre frequency of each spw, so that the whole coverage is centred on ref_freq_hz."""
    spw_span = nchan * chan_width_hz
    total = nspw * spw_span + (nspw - 1) * spw_gap_hz
    low_edge = ref_freq_hz - total / 2.0
    return [low_edge + i * (spw_span + spw_gap_hz) + chan_width_hz / 2.0 for i in range(nspw)]


def spw_layout_widths(nchan: int, chan_widths_hz: Sequence[float], ref_freq_hz: float, spw_gap_hz: float) -> list[float]:
    """As :func:`spw_layout` for spws of different channel widths (one width per spw, in frequency order)."""
    spans = [nchan * w for w in chan_widths_hz]
    total = sum(spans) + (len(spans) - 1) * spw_gap_hz
    edge = ref_freq_hz - total / 2.0
    firsts = []
    for span, width in zip(spans, chan_widths_hz, strict=True):
        firsts.append(edge + width / 2.0)
        edge += span + spw_gap_hz
    return firsts


def _nice_imsize(n: float) -> int:
    """Smallest size >= n (at least 64) that FFTs well."""
    return fast_fft_size(n, minimum=64)

def _validate(**kw: Any) -> None:
    if kw["antennas"] is not None and kw["antennas"] < 3:
        raise SimulationError(f"antennas={kw['antennas']}: need at least 3 antennas")
    if kw["nchan"] < 1:
        raise SimulationError(f"nchan={kw['nchan']}: need at least 1 channel")
    if kw["nspw"] < 1:
        raise SimulationError(f"nspw={kw['nspw']}: need at least 1 spectral window")
    if kw["chan_width_hz"] <= 0:
        raise SimulationError(f"chan_width_hz={kw['chan_width_hz']}: must be positive")
    if kw["ref_freq_hz"] <= 0:
        raise SimulationError(f"ref_freq_hz={kw['ref_freq_hz']}: must be positive")
    if kw["fields"] < 1:
        raise SimulationError(f"fields={kw['fields']}: need at least 1 field")
    if not 0 < kw["hours"] <= 12:
        raise SimulationError(f"hours={kw['hours']}: give a track length between 0 and 12 hours")
    if kw["integration_s"] <= 0 or kw["integration_s"] > kw["hours"] * 3600:
        raise SimulationError(f"integration_s={kw['integration_s']}: must be positive and shorter than the track")
    if kw["noise_jy"] < 0:
        raise SimulationError(f"noise_jy={kw['noise_jy']}: must be >= 0 (0 means no noise)")
    if kw["spw_gap_hz"] < 0:
        raise SimulationError(f"spw_gap_hz={kw['spw_gap_hz']}: must be >= 0")
    widths = kw["spw_chan_widths_hz"]
    if widths is not None:
        if len(widths) != kw["nspw"]:
            raise SimulationError(
                f"spw_chan_widths_hz has {len(widths)} width(s) but nspw={kw['nspw']}; give one width per spw"
            )
        if any(not w > 0 for w in widths):
            raise SimulationError(f"spw_chan_widths_hz={list(widths)}: every width must be positive")
        total = kw["nchan"] * sum(widths) + (kw["nspw"] - 1) * kw["spw_gap_hz"]
    else:
        total = kw["nspw"] * kw["nchan"] * kw["chan_width_hz"] + (kw["nspw"] - 1) * kw["spw_gap_hz"]
    if total >= kw["ref_freq_hz"]:
        raise SimulationError("the frequency coverage is wider than ref_freq_hz; reduce nchan, nspw or chan_width_hz")
    if kw["dec_deg"] is not None and not -90.0 <= kw["dec_deg"] <= 90.0:
        raise SimulationError(f"dec_deg={kw['dec_deg']}: a declination lies between -90 and 90 degrees")
    if kw["targets"] is not None and kw["fields"] != 1:
        raise SimulationError(
            f"fields={kw['fields']} with targets: give each target its own pointings (TargetSpec.pointings) instead"
        )


def _resolve_line(spectral_line: Any, ref_freq_hz: float, chan_width_hz: float) -> LineSpec | None:
    if spectral_line is None or spectral_line is False:
        return None
    if spectral_line is True:
        line = LineSpec()
    elif isinstance(spectral_line, LineSpec):
        line = spectral_line
    else:
        try:
            line = LineSpec.model_validate(spectral_line)
        except Exception as exc:
            raise SimulationError(f"spectral_line: {exc}") from exc
    updates = {}
    if line.center_freq_hz is None:
        updates["center_freq_hz"] = ref_freq_hz
    if line.fwhm_hz is None:
        updates["fwhm_hz"] = 4.0 * chan_width_hz
    return line.model_copy(update=updates) if updates else line


@dataclass(frozen=True)
class _Outputs:
    """The three files of one simulation: the MeasurementSet and, beside it, the sky and its truth."""

    ms: Path
    componentlist: Path
    truth: Path
    stem: str


@dataclass(frozen=True)
class _Field:
    """One pointing: its FIELD name, direction (radians) and offset (arcsec) from its group's centre."""

    name: str
    ra: float
    dec: float
    offset: tuple[float, float]
    group: int


@dataclass(frozen=True)
class _Group:
    """What shares one SOURCE_ID: a target (or the single default source) with its pointings and sky."""

    name: str | None  # None: the default single target, whose truth keeps the original layout
    ra: float
    dec: float
    sources: list[SourceSpec]
    offsets: list[tuple[float, float]]
    obs_mode: str | None
    calibrator: bool
    intents: list[str]
    field_ids: list[int]


@dataclass(frozen=True)
class _Observation:
    """Where and what the simulated array observes: pointing, spectral windows, fields."""

    ra0: float
    dec0: float
    phasecenter: str
    first_freqs: list[float]
    chan_width_hz: float  # the finest channel width: the line model's channel grid
    nchan: int
    lowest_freq: float
    highest_freq: float
    pb_fwhm_arcsec: float
    field_offsets: list[tuple[float, float]]
    chan_widths: list[float]  # per spw
    groups: list[_Group]
    fields: list[_Field]

    @property
    def hint_group(self) -> _Group:
        """The group the imaging hint is for: the first science target."""
        return next((g for g in self.groups if not g.calibrator), self.groups[0])


def simulate_ms(
    output: str | os.PathLike,
    *,
    antennas: int | None = None,
    nchan: int = 32,
    nspw: int = 1,
    chan_width_hz: float = 1e6,
    ref_freq_hz: float = 1.4e9,
    fields: int = 1,
    hours: float = 1.0,
    integration_s: float = 30.0,
    noise_jy: float = 0.005,
    seed: int = 42,
    sources: str | os.PathLike | Sequence[Any] | None = None,
    spectral_line: Any = None,
    overwrite: bool = False,
    spw_gap_hz: float = 0.0,
    freq_frame: Literal["TOPO", "LSRK"] = "TOPO",
    progress: Callable[[str], None] | None = None,
    descending: bool = False,
    array: str | None = None,
    dec_deg: float | None = None,
    targets: str | os.PathLike | Sequence[Any] | None = None,
    flagged: str | None = None,
    spw_chan_widths_hz: Sequence[float] | None = None,
) -> SimulationResult:
    """Write a simulated MeasurementSet, its component list and truth file; return their paths.

    ``output`` is the MeasurementSet path; the component list (``<stem>.cl``) and the truth file
    (``<stem>.truth.json``) go beside it. ``noise_jy`` is the rms per visibility (real and
    imaginary part); 0 gives noise-free data. ``spectral_line`` may be True (a default line),
    a dict or a :class:`LineSpec`. Spectral windows are contiguous unless ``spw_gap_hz`` > 0.
    ``progress`` receives one line per stage (benchmark-sized sets take minutes).
    ``descending`` stores every spw's channels in decreasing frequency (negative channel widths),
    as a lower-sideband receiver records them; the sky and the visibilities are the same.

    ``array`` names a configuration of the CASA data package (``vla.a``, ``alma.cycle10.8``,
    ``meerkat``, ...; see :func:`available_arrays`) instead of the built-in 12-antenna Y array;
    ``antennas`` is then the most antennas to keep (None: all), else the Y array's size
    (None: 12). ``dec_deg`` is the phase centre's declination (None: +40 for the Y array,
    a few degrees south of the site's zenith for a real array); its RA is always 12h.
    ``targets`` (a list of :class:`TargetSpec` or dicts, or a JSON/YAML file) observes several
    sources with scan intents, cycling through their pointings in the given order.
    ``flagged`` is "all" (every visibility flagged) or a target or field name (its rows flagged).
    ``spw_chan_widths_hz`` gives each spw its own channel width (one per spw; overrides
    ``chan_width_hz``). With targets, the result's phasecenter, cell and imsize (and the
    spectral line) are for the first science target.
    """

    def say(text: str) -> None:
        if progress is not None:
            progress(text)

    _validate(
        antennas=antennas, nchan=nchan, nspw=nspw, chan_width_hz=chan_width_hz, ref_freq_hz=ref_freq_hz,
        fields=fields, hours=hours, integration_s=integration_s, noise_jy=noise_jy, spw_gap_hz=spw_gap_hz,
        spw_chan_widths_hz=spw_chan_widths_hz, dec_deg=dec_deg, targets=targets,
    )
    if freq_frame not in ("TOPO", "LSRK"):
        raise SimulationError(f"freq_frame={freq_frame!r}: use 'TOPO' or 'LSRK'")
    src = load_sources(sources)
    target_specs = load_targets(targets) if targets is not None else None
    finest_width = min(spw_chan_widths_hz) if spw_chan_widths_hz is not None else chan_width_hz
    line = _resolve_line(spectral_line, ref_freq_hz, finest_width)
    if line is not None and line.name in {s.name for s in src}:
        raise SimulationError(f"spectral_line: name {line.name!r} is already used by a source; rename it")
    outputs = _output_paths(output, overwrite)

    ensure_casa_runtime()
    import casatools

    arr = load_array(array, antennas) if array is not None else _y_array(casatools, 12 if antennas is None else antennas)
    if dec_deg is None and array is not None:
        dec_deg = float(round(arr.latitude_deg - ZENITH_OFFSET_DEG))
    obs = _plan_observation(nspw, nchan, chan_width_hz, ref_freq_hz, spw_gap_hz, fields, arr.dish_diameter_m,
                            dec_deg, spw_chan_widths_hz, target_specs, src)
    flag_fields = _flagged_fields(flagged, obs)
    # Everything is built in a private staging folder next to the output and renamed into place at
    # the end, so an interrupted run never leaves a half-written MeasurementSet under the real name.
    work = Path(staging_name(outputs.ms, owner=process_owner()))
    work.mkdir(mode=0o700)
    try:
        tmp = _Outputs(ms=work / outputs.ms.name, componentlist=work / outputs.componentlist.name,
                       truth=work / outputs.truth.name, stem=outputs.stem)
        nsrc = sum(len(g.sources) for g in obs.groups)
        say(f"sky model: {nsrc} source(s){' + spectral line' if line else ''}")
        source_records, line_image = _write_sky_model(casatools, line, obs, ref_freq_hz, work, tmp.componentlist)
        primary_beam = _observe(casatools, tmp, obs, arr, hours, integration_s, freq_frame, line_image, noise_jy,
                                seed, say, ref_freq_hz, work)
        nrows, uvw = _drop_simulator_copies(casatools, tmp.ms)
        if descending:
            _reverse_channel_order(casatools, tmp.ms)
        if nrows == 0:
            raise SimulationError(
                "the simulator produced no rows (source never above the elevation limit?); check hours and dec_deg"
            )
        rows_per_field = None
        if target_specs is not None:
            rows_per_field = _write_targets_into_ms(casatools, tmp.ms, obs, integration_s)
            missing = sorted({obs.fields[f].name for f, n in enumerate(rows_per_field) if n == 0})
            if missing:
                raise SimulationError(
                    f"targets: field(s) {', '.join(missing)} never rose above the 8 deg elevation limit; "
                    "move them (offset_dec_deg) or change dec_deg"
                )
        if flag_fields is not None:
            say(f"flagging {flagged}")
            _flag(casatools, tmp.ms, None if flagged == "all" else flag_fields)
        hint = obs.hint_group
        hint_records = [r for r in source_records if r.get("target") == hint.name]
        cell, imsize, beam_arcsec = _imaging_hint(uvw, obs.highest_freq, obs.pb_fwhm_arcsec, hint.offsets,
                                                  hint_records)
        simulation = {
            "antennas": len(arr.names),
            "nchan": nchan,
            "nspw": nspw,
            "chan_width_hz": chan_width_hz,
            "spw_gap_hz": spw_gap_hz,
            "fields": len(obs.fields),
            "hours": hours,
            "integration_s": integration_s,
            "seed": seed,
            "descending": descending,
            "nrows": nrows,
            "array": arr.name,
            "dec_deg": math.degrees(obs.dec0),
            "targets": len(target_specs) if target_specs is not None else None,
            "flagged": flagged,
            "spw_chan_widths_hz": list(spw_chan_widths_hz) if spw_chan_widths_hz is not None else None,
        }
        truth = _truth_record(obs, ref_freq_hz, freq_frame, source_records, noise_jy, cell, imsize, beam_arcsec,
                              simulation, _array_record(arr, primary_beam), rows_per_field, flag_fields)
        tmp.truth.write_text(json.dumps(truth, indent=2) + "\n")
        # The old outputs are replaced only now that the new ones are complete.
        put_set_in_place([(tmp.ms, outputs.ms), (tmp.componentlist, outputs.componentlist),
                          (tmp.truth, outputs.truth)], aside=work / ".replaced")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return SimulationResult(
        ms=str(outputs.ms),
        truth=str(outputs.truth),
        componentlist=str(outputs.componentlist),
        nrows=nrows,
        nchan=nchan,
        nspw=nspw,
        nfields=len(obs.fields),
        suggested_cell=f"{cell:g}arcsec",
        suggested_imsize=imsize,
        beam_estimate_arcsec=beam_arcsec,
        phasecenter=_group_phasecenter(obs, hint),
        seed=seed,
    )


def _group_phasecenter(obs: _Observation, group: _Group) -> str:
    if group.name is None:
        return obs.phasecenter
    return sexagesimal_direction(math.degrees(group.ra), math.degrees(group.dec))


def _flagged_fields(flagged: str | None, obs: _Observation) -> list[int] | None:
    """The field ids ``flagged`` names (all of them for "all"), None when nothing is to be flagged."""
    if flagged is None:
        return None
    if flagged == "all":
        return list(range(len(obs.fields)))
    for g in obs.groups:
        if g.name == flagged:
            return list(g.field_ids)
    for i, f in enumerate(obs.fields):
        if f.name == flagged:
            return [i]
    valid = ["all", *(g.name for g in obs.groups if g.name), *(f.name for f in obs.fields)]
    raise SimulationError(f"flagged={flagged!r}: not a target or field; use one of {', '.join(dict.fromkeys(valid))}")


def _output_paths(output: str | os.PathLike, overwrite: bool) -> _Outputs:
    """The three output paths; refuses to replace existing ones unless asked to."""
    ms_path = Path(output).expanduser().resolve()
    stem = ms_path.name[:-3] if ms_path.name.lower().endswith(".ms") else ms_path.name
    outputs = _Outputs(ms=ms_path, componentlist=ms_path.with_name(stem + ".cl"),
                       truth=ms_path.with_name(stem + ".truth.json"), stem=stem)
    existing = [p for p in (outputs.ms, outputs.componentlist, outputs.truth) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output: {', '.join(map(str, existing))} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    ms_path.parent.mkdir(parents=True, exist_ok=True)
    return outputs


def _plan_observation(nspw: int, nchan: int, chan_width_hz: float, ref_freq_hz: float, spw_gap_hz: float,
                      fields: int, dish_diameter_m: float = DISH_DIAMETER_M, dec_deg: float | None = None,
                      spw_chan_widths_hz: Sequence[float] | None = None,
                      targets: list[TargetSpec] | None = None,
                      sources: list[SourceSpec] | None = None) -> _Observation:
    if spw_chan_widths_hz is None:
        first_freqs = spw_layout(nspw, nchan, chan_width_hz, ref_freq_hz, spw_gap_hz)
        widths = [chan_width_hz] * nspw
        lowest = first_freqs[0] - chan_width_hz / 2
        highest = first_freqs[-1] + (nchan - 0.5) * chan_width_hz
    else:
        widths = [float(w) for w in spw_chan_widths_hz]
        first_freqs = spw_layout_widths(nchan, widths, ref_freq_hz, spw_gap_hz)
        lowest = first_freqs[0] - widths[0] / 2
        highest = first_freqs[-1] + (nchan - 0.5) * widths[-1]
    pb_fwhm_arcsec = 1.13 * SPEED_OF_LIGHT / ref_freq_hz / dish_diameter_m * ARCSEC_PER_RAD
    centre = DEFAULT_PHASE_CENTER if dec_deg is None else (DEFAULT_PHASE_CENTER[0], float(dec_deg))
    ra0, dec0 = (math.radians(v) for v in centre)
    sources = sources if sources is not None else default_sources()
    field_offsets = mosaic_offsets(fields, spacing_arcsec=pb_fwhm_arcsec / 3.0)
    groups: list[_Group] = []
    all_fields: list[_Field] = []
    if targets is None:
        field_ids = []
        for i, (dx, dy) in enumerate(field_offsets):
            fra, fdec = _lm_to_radec(ra0, dec0, dx / ARCSEC_PER_RAD, dy / ARCSEC_PER_RAD)
            name = "TARGET" if fields == 1 else f"TARGET_{i:02d}"
            all_fields.append(_Field(name=name, ra=fra, dec=fdec, offset=(dx, dy), group=0))
            field_ids.append(i)
        groups.append(_Group(name=None, ra=ra0, dec=dec0, sources=sources, offsets=field_offsets, obs_mode=None,
                             calibrator=False, intents=[], field_ids=field_ids))
    else:
        for gi, t in enumerate(targets):
            tra, tdec = _lm_to_radec(ra0, dec0, math.radians(t.offset_ra_deg), math.radians(t.offset_dec_deg))
            spacing = t.pointing_spacing_arcsec or pb_fwhm_arcsec / 3.0
            offsets = mosaic_offsets(t.pointings, spacing_arcsec=spacing)
            if t.sources is not None:
                sky = list(t.sources)
            elif t.calibrator:
                sky = [SourceSpec(name=t.name, shape="point", flux_jy=t.flux_jy)]
            else:
                sky = sources
            field_ids = []
            for i, (dx, dy) in enumerate(offsets):
                fra, fdec = _lm_to_radec(tra, tdec, dx / ARCSEC_PER_RAD, dy / ARCSEC_PER_RAD)
                name = t.name if t.pointings == 1 else f"{t.name}_{i:02d}"
                field_ids.append(len(all_fields))
                all_fields.append(_Field(name=name, ra=fra, dec=fdec, offset=(dx, dy), group=gi))
            groups.append(_Group(name=t.name, ra=tra, dec=tdec, sources=sky, offsets=offsets, obs_mode=t.obs_mode,
                                 calibrator=t.calibrator, intents=list(t.intents), field_ids=field_ids))
        names = [f.name for f in all_fields]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise SimulationError(f"targets: field names {clash} clash (a mosaic adds _00, _01, ...); rename a target")
    return _Observation(
        ra0=ra0,
        dec0=dec0,
        phasecenter=sexagesimal_direction(*centre),
        first_freqs=first_freqs,
        chan_width_hz=chan_width_hz if spw_chan_widths_hz is None else min(widths),
        nchan=nchan,
        lowest_freq=lowest,
        highest_freq=highest,
        pb_fwhm_arcsec=pb_fwhm_arcsec,
        field_offsets=field_offsets,
        chan_widths=widths,
        groups=groups,
        fields=all_fields,
    )


def _write_sky_model(casatools: Any, line: LineSpec | None, obs: _Observation, ref_freq_hz: float, work: Path,
                     cl_path: Path) -> tuple[list[dict], Path | None]:
    """The component list of the sources (and the line's model image); returns the truth's source records."""
    source_records = []
    cl = casatools.componentlist()
    try:
        for g in obs.groups:
            for s in g.sources:
                ra, dec, l_rad, m_rad = _source_position(s, g.ra, g.dec)
                cl.addcomponent(**_component(s, ra, dec, ref_freq_hz))
                record = _source_record(s, ra, dec, l_rad, m_rad)
                if g.name is not None:
                    record["target"] = g.name
                source_records.append(record)
        line_image = None
        if line is not None:
            # The line belongs to the science target the imaging hint is for.
            g = obs.hint_group
            line_image, ra, dec = _line_model_image(
                casatools, work / "line.model", line, g.ra, g.dec, obs.lowest_freq, obs.highest_freq,
                obs.chan_width_hz
            )
            record = _line_record(line, ra, dec, g.ra, g.dec, ref_freq_hz)
            if g.name is not None:
                record["target"] = g.name
            source_records.append(record)
        cl.rename(str(cl_path))
    finally:
        # done() alone: close() on a renamed list only posts a "closed" warning to the console.
        cl.done()
    return source_records, line_image


def _source_position(s: SourceSpec, ra0: float, dec0: float) -> tuple[float, float, float, float]:
    """(ra, dec, l, m) in radians of a source given by its sky position or its offset."""
    if s.ra_deg is not None:
        ra, dec = math.radians(s.ra_deg), math.radians(s.dec_deg)
        l_rad, m_rad = _radec_to_lm(ra0, dec0, ra, dec)
    else:
        l_rad, m_rad = s.offset_ra_arcsec / ARCSEC_PER_RAD, s.offset_dec_arcsec / ARCSEC_PER_RAD
        ra, dec = _lm_to_radec(ra0, dec0, l_rad, m_rad)
    return ra, dec, l_rad, m_rad


def _component(s: SourceSpec, ra: float, dec: float, ref_freq_hz: float) -> dict[str, Any]:
    """componentlist.addcomponent's arguments for one source."""
    kwargs: dict[str, Any] = {
        "dir": _casa_direction(ra, dec),
        "flux": s.flux_jy,
        "fluxunit": "Jy",
        "freq": f"{ref_freq_hz!r}Hz",
        "shape": s.shape,
        "spectrumtype": "spectral index",
        "index": s.spectral_index,
    }
    if s.shape == "gaussian":
        kwargs.update(
            majoraxis=f"{s.major_arcsec}arcsec",
            minoraxis=f"{s.minor_arcsec}arcsec",
            positionangle=f"{s.pa_deg}deg",
        )
    return kwargs


def _source_record(s: SourceSpec, ra: float, dec: float, l_rad: float, m_rad: float) -> dict[str, Any]:
    """One source as the truth file lists it."""
    return {
        "name": s.name,
        "shape": s.shape,
        "ra_deg": math.degrees(ra),
        "dec_deg": math.degrees(dec),
        "offset_ra_arcsec": l_rad * ARCSEC_PER_RAD,
        "offset_dec_arcsec": m_rad * ARCSEC_PER_RAD,
        "flux_jy": s.flux_jy,
        "spectral_index": s.spectral_index,
        "major_arcsec": s.major_arcsec,
        "minor_arcsec": s.minor_arcsec,
        "pa_deg": s.pa_deg if s.shape == "gaussian" else None,
        "line": None,
    }


def _line_record(line: LineSpec, ra: float, dec: float, ra0: float, dec0: float, ref_freq_hz: float) -> dict[str, Any]:
    """The line source as the truth file lists it: its flux at ref_freq_hz, and the line's shape."""
    l_rad, m_rad = _radec_to_lm(ra0, dec0, ra, dec)
    sigma = line.fwhm_hz / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return {
        "name": line.name,
        "shape": "point",
        "ra_deg": math.degrees(ra),
        "dec_deg": math.degrees(dec),
        "offset_ra_arcsec": l_rad * ARCSEC_PER_RAD,
        "offset_dec_arcsec": m_rad * ARCSEC_PER_RAD,
        "flux_jy": line.continuum_jy
        + line.peak_flux_jy * math.exp(-0.5 * ((ref_freq_hz - line.center_freq_hz) / sigma) ** 2),
        "spectral_index": 0.0,
        "major_arcsec": None,
        "minor_arcsec": None,
        "pa_deg": None,
        "line": {
            "profile": "gaussian",
            "center_freq_hz": line.center_freq_hz,
            "fwhm_hz": line.fwhm_hz,
            "peak_flux_jy": line.peak_flux_jy,
            "continuum_jy": line.continuum_jy,
            "frame": "LSRK",
            "in_componentlist": False,
        },
    }


def _observe(casatools: Any, tmp: _Outputs, obs: _Observation, arr: ArrayConfig, hours: float, integration_s: float,
             freq_frame: str, line_image: Path | None, noise_jy: float, seed: int, say: Callable[[str], None],
             ref_freq_hz: float, work: Path) -> str:
    """Observe the sky with the simulator into ``tmp.ms`` (predict, then noise); returns the primary beam used."""
    nant = len(arr.names)
    sm = casatools.simulator()
    try:
        sm.open(str(tmp.ms))
        sm.setconfig(
            telescopename=arr.telescope,
            x=arr.x,
            y=arr.y,
            z=arr.z,
            dishdiameter=arr.diameters,
            mount=["ALT-AZ"] * nant,
            antname=arr.names,
            padname=arr.pads,
            coordsystem=arr.coordsystem,
            referencelocation=arr.location,
        )
        stokes, feed = ("RR LL", "perfect R L") if arr.circular_feeds else ("XX YY", "perfect X Y")
        for i, f0 in enumerate(obs.first_freqs):
            width = obs.chan_widths[i]
            sm.setspwindow(
                spwname=f"spw{i}",
                freq=f"{f0!r}Hz",
                deltafreq=f"{width!r}Hz",
                freqresolution=f"{width!r}Hz",
                refcode=freq_frame,
                nchannels=obs.nchan,
                stokes=stokes,
            )
        sm.setfeed(mode=feed)
        for f in obs.fields:
            sm.setfield(sourcename=f.name, sourcedirection=_casa_direction(f.ra, f.dec))
        sm.setlimits(shadowlimit=0.001, elevationlimit="8deg")
        sm.setauto(autocorrwt=0.0)
        sm.settimes(
            integrationtime=f"{integration_s!r}s",
            usehourangle=True,
            referencetime=me_epoch(casatools),
        )
        nspw = len(obs.first_freqs)
        scans = _schedule([f.name for f in obs.fields], nspw, hours, integration_s)
        say(f"observing: {nant} antennas, {len(scans)} scan(s), {nspw} spw x {obs.nchan} channels, {hours:g} h")
        for name, spw, start, stop in scans:
            sm.observe(sourcename=name, spwname=f"spw{spw}", starttime=f"{start!r}s", stoptime=f"{stop!r}s")
        vp_args, primary_beam = _voltage_pattern(casatools, arr, ref_freq_hz, work)
        # Squint would make RR and LL see different skies off axis; Stokes I truth stays simpler without it.
        sm.setvp(dosquint=False, **vp_args)
        say("predicting visibilities")
        if line_image is not None:
            sm.predict(imagename=[str(line_image)], complist=str(tmp.componentlist), incremental=False)
        else:
            sm.predict(complist=str(tmp.componentlist), incremental=False)
        if noise_jy > 0:
            say(f"adding noise: {noise_jy:g} Jy per visibility, seed {seed}")
            sm.setseed(int(seed))
            sm.setnoise(mode="simplenoise", simplenoise=f"{noise_jy!r}Jy")
            sm.corrupt()
    finally:
        sm.close()
        sm.done()
    return primary_beam


def _voltage_pattern(casatools: Any, arr: ArrayConfig, ref_freq_hz: float, work: Path) -> tuple[dict, str]:
    """simulator.setvp arguments and a description of the primary beam they apply.

    For a telescope casatools has no beam for, its default VP would make predict fail without
    raising (all-zero data), so such arrays get an Airy disk of their dish diameter instead.
    """
    if arr.name is None:
        return {"dovp": True, "usedefaultvp": True}, "casatools default for VLA"
    vp = casatools.vpmanager()
    if vp.getvp(telescope=arr.telescope, freq=f"{ref_freq_hz!r}Hz", obstime=REFERENCE_EPOCH):
        return {"dovp": True, "usedefaultvp": True}, f"casatools default for {arr.telescope}"
    diameter = arr.dish_diameter_m
    fwhm_rad = 1.13 * SPEED_OF_LIGHT / ref_freq_hz / diameter
    table = work / "airy.vp"
    # The voltage-pattern manager is process-wide state: reset it before and after so neither
    # earlier settings leak into this beam nor this beam into later imaging in the same process.
    vp.reset()
    try:
        vp.setpbairy(telescope=arr.telescope, dishdiam=f"{diameter!r}m", blockagediam="0m",
                     maxrad=f"{4.0 * fwhm_rad!r}rad", reffreq=f"{ref_freq_hz!r}Hz", dopb=True)
        vp.saveastable(str(table))
    finally:
        vp.reset()
    return ({"dovp": True, "usedefaultvp": False, "vptable": str(table)},
            f"Airy disk of a {diameter:g} m dish (casatools has no beam for {arr.telescope})")


def _write_targets_into_ms(casatools: Any, ms: Path, obs: _Observation, integration_s: float) -> list[int]:
    """Targets as real data carry them: shared SOURCE_IDs, STATE intents, one scan number per scan.

    The simulator gives every field its own source and one generic STATE row, and numbers scans
    per (field, spw) observe call. Returns the row count per field.
    """
    import numpy as np

    field_group = np.array([f.group for f in obs.fields], dtype=np.int32)
    tb = casatools.table()
    tb.open(str(ms / "FIELD"), nomodify=False)
    try:
        tb.putcol("SOURCE_ID", field_group)
    finally:
        tb.close()
    # One SOURCE row per target: the row of its first pointing (the mosaic centre) stays.
    first_field = {g.field_ids[0]: gi for gi, g in enumerate(obs.groups)}
    tb.open(str(ms / "SOURCE"), nomodify=False)
    try:
        old_ids = tb.getcol("SOURCE_ID")
        drop = [r for r, sid in enumerate(old_ids) if int(sid) not in first_field]
        if drop:
            tb.removerows(drop)
        kept = tb.getcol("SOURCE_ID")
        tb.putcol("SOURCE_ID", np.array([first_field[int(s)] for s in kept], dtype=np.int32))
        tb.putcol("NAME", np.array([obs.groups[first_field[int(s)]].name for s in kept]))
    finally:
        tb.close()
    modes = list(dict.fromkeys(g.obs_mode for g in obs.groups if g.obs_mode))
    tb.open(str(ms / "STATE"), nomodify=False)
    try:
        if tb.nrows():
            tb.removerows(list(range(tb.nrows())))
        if modes:
            n = len(modes)
            tb.addrows(n)
            tb.putcol("OBS_MODE", np.array(modes))
            tb.putcol("SIG", np.ones(n, dtype=bool))
            tb.putcol("REF", np.zeros(n, dtype=bool))
            tb.putcol("CAL", np.zeros(n))
            tb.putcol("LOAD", np.zeros(n))
            tb.putcol("SUB_SCAN", np.zeros(n, dtype=np.int32))
            tb.putcol("FLAG_ROW", np.zeros(n, dtype=bool))
    finally:
        tb.close()
    group_state = np.array([modes.index(g.obs_mode) if g.obs_mode else -1 for g in obs.groups], dtype=np.int32)
    tb.open(str(ms), nomodify=False)
    try:
        field_id = tb.getcol("FIELD_ID")
        times = tb.getcol("TIME")
        tb.putcol("STATE_ID", group_state[field_group[field_id]])
        # A scan is a run of integrations on one field; all spws of a run share its number.
        unique_times, first_row = np.unique(times, return_index=True)
        field_at = field_id[first_row]
        new_scan = np.ones(len(unique_times), dtype=bool)
        new_scan[1:] = (field_at[1:] != field_at[:-1]) | (np.diff(unique_times) > 1.5 * integration_s)
        scan_of_time = np.cumsum(new_scan).astype(np.int32)
        tb.putcol("SCAN_NUMBER", scan_of_time[np.searchsorted(unique_times, times)])
    finally:
        tb.close()
    return np.bincount(field_id, minlength=len(obs.fields)).tolist()


def _flag(casatools: Any, ms: Path, field_ids: list[int] | None, chunk_rows: int = 20000) -> None:
    """Flag every visibility (field_ids None) or those of the given fields, FLAG_ROW included."""
    import numpy as np

    tb = casatools.table()
    tb.open(str(ms), nomodify=False)
    try:
        for start in range(0, tb.nrows(), chunk_rows):
            n = min(chunk_rows, tb.nrows() - start)
            flag = tb.getcol("FLAG", startrow=start, nrow=n)
            row_flag = tb.getcol("FLAG_ROW", startrow=start, nrow=n)
            if field_ids is None:
                rows = np.ones(n, dtype=bool)
            else:
                rows = np.isin(tb.getcol("FIELD_ID", startrow=start, nrow=n), field_ids)
            flag[:, :, rows] = True
            row_flag[rows] = True
            tb.putcol("FLAG", flag, startrow=start, nrow=n)
            tb.putcol("FLAG_ROW", row_flag, startrow=start, nrow=n)
    finally:
        tb.close()


def _drop_simulator_copies(casatools: Any, ms: Path) -> tuple[int, Any]:
    """Remove the columns the simulator adds beyond DATA; returns the row count and the UVW column."""
    tb = casatools.table()
    tb.open(str(ms), nomodify=False)
    try:
        # The simulator leaves CORRECTED_DATA (a copy of DATA) and MODEL_DATA (unity) behind.
        # Raw data from a telescope carry only DATA; dropping the copies also keeps
        # benchmark-sized sets a third of the size.
        scratch = [c for c in ("CORRECTED_DATA", "MODEL_DATA") if c in tb.colnames()]
        if scratch:
            tb.removecols(scratch)
        return int(tb.nrows()), tb.getcol("UVW")
    finally:
        tb.close()


def _reverse_channel_order(casatools: Any, ms: Path, chunk_rows: int = 20000) -> None:
    """Every spw's channels in decreasing frequency: the spectral table and each row's channel axis flipped."""
    tb = casatools.table()
    tb.open(str(ms / "SPECTRAL_WINDOW"), nomodify=False)
    try:
        for row in range(tb.nrows()):
            tb.putcell("CHAN_FREQ", row, tb.getcell("CHAN_FREQ", row)[::-1].copy())
            tb.putcell("CHAN_WIDTH", row, -abs(tb.getcell("CHAN_WIDTH", row)[::-1]))
            for col in ("EFFECTIVE_BW", "RESOLUTION"):
                tb.putcell(col, row, tb.getcell(col, row)[::-1].copy())
    finally:
        tb.close()
    tb.open(str(ms), nomodify=False)
    try:
        columns = [c for c in ("DATA", "MODEL_DATA", "CORRECTED_DATA", "FLAG") if c in tb.colnames()]
        for start in range(0, tb.nrows(), chunk_rows):
            n = min(chunk_rows, tb.nrows() - start)
            for col in columns:
                # (correlation, channel, row): flip the channel axis.
                tb.putcol(col, tb.getcol(col, startrow=start, nrow=n)[:, ::-1, :].copy(), startrow=start, nrow=n)
    finally:
        tb.close()


def _imaging_hint(uvw: Any, highest_freq: float, pb_fwhm_arcsec: float, field_offsets: list[tuple[float, float]],
                  source_records: list[dict]) -> tuple[float, int, float]:
    """(cell in arcsec, imsize, beam estimate in arcsec) that image this sky well."""
    import numpy as np

    uvmax_m = float(np.hypot(uvw[0], uvw[1]).max())
    uvmax_lambda = uvmax_m * highest_freq / SPEED_OF_LIGHT
    beam_arcsec = ARCSEC_PER_RAD / uvmax_lambda
    # About 5 pixels across the finest fringe (Nyquist needs 2; CLEAN wants the beam well
    # sampled), rounded down to a tidy value so the cell string stays readable.
    cell = math.floor(beam_arcsec / 5.0 * 2.0) / 2.0 if beam_arcsec >= 2.5 else round(beam_arcsec / 5.0, 3)
    if cell < 0.01:
        # Milliarcsecond beams (long baselines at high frequency): keep two significant digits.
        cell = float(f"{beam_arcsec / 5.0:.2g}")
    # Sources far outside the primary beam (the default sky seen by a 12 m dish at 230 GHz) are
    # not there to be imaged; they must not blow the image up to tens of thousands of pixels.
    extent = max(
        [min(abs(r["offset_ra_arcsec"]) + (r["major_arcsec"] or 0.0), pb_fwhm_arcsec) for r in source_records]
        + [min(abs(r["offset_dec_arcsec"]) + (r["major_arcsec"] or 0.0), pb_fwhm_arcsec) for r in source_records]
        + [abs(c) + pb_fwhm_arcsec / 4.0 for xy in field_offsets[1:] for c in xy]
    )
    # Sources within the inner ~60 % of the image keep clear of the edges where the gridding
    # taper and aliasing live.
    imsize = max(128, _nice_imsize(2.0 * extent / 0.6 / cell))
    return cell, imsize, beam_arcsec


def _array_record(arr: ArrayConfig, primary_beam: str) -> dict[str, Any]:
    return {
        "name": arr.name,
        "telescope": arr.telescope,
        "antennas": len(arr.names),
        "antennas_in_configuration": arr.antennas_in_file,
        "antenna_names": arr.names,
        "dish_diameter_m": arr.dish_diameter_m,
        "site_latitude_deg": arr.latitude_deg,
        "correlations": "RR LL" if arr.circular_feeds else "XX YY",
        "primary_beam": primary_beam,
    }


def _truth_record(obs: _Observation, ref_freq_hz: float, freq_frame: str, source_records: list[dict],
                  noise_jy: float, cell: float, imsize: int, beam_arcsec: float, simulation: dict[str, Any],
                  array: dict[str, Any], rows_per_field: list[int] | None,
                  flag_fields: list[int] | None) -> dict[str, Any]:
    """The truth file's content: what was observed, the injected sources, and how to image them."""
    flagged = set(flag_fields or [])
    fields = []
    for i, f in enumerate(obs.fields):
        record: dict[str, Any] = {
            "id": i,
            "name": f.name,
            "offset_ra_arcsec": f.offset[0],
            "offset_dec_arcsec": f.offset[1],
        }
        group = obs.groups[f.group]
        if group.name is not None:
            # Offsets are from the target's centre; the absolute direction and its bookkeeping follow.
            record.update(
                target=group.name,
                source_id=f.group,
                ra_deg=math.degrees(f.ra),
                dec_deg=math.degrees(f.dec),
                obs_mode=group.obs_mode,
                nrows=rows_per_field[i] if rows_per_field else None,
            )
        record["flagged"] = i in flagged
        fields.append(record)
    out = {
        "format": "pclean_provider.simulation/1",
        "phase_center": {
            "ra_deg": math.degrees(obs.ra0),
            "dec_deg": math.degrees(obs.dec0),
            "frame": "J2000",
            "casa": obs.phasecenter,
        },
        "ref_freq_hz": ref_freq_hz,
        "freq_frame": freq_frame,
        "spws": [
            {"id": i, "first_freq_hz": f0, "chan_width_hz": obs.chan_widths[i], "nchan": obs.nchan}
            for i, f0 in enumerate(obs.first_freqs)
        ],
        "freq_range_hz": [obs.lowest_freq, obs.highest_freq],
        "array": array,
        "fields": fields,
        "sources": source_records,
        "flux_convention": "intrinsic (not primary-beam attenuated) Stokes I at ref_freq_hz",
        "noise_jy_per_visibility": noise_jy,
        "simulation": simulation,
        "imaging_hint": {
            "cell": f"{cell:g}arcsec",
            "imsize": imsize,
            "beam_estimate_arcsec": beam_arcsec,
            "primary_beam_fwhm_arcsec": obs.pb_fwhm_arcsec,
            "phasecenter": _group_phasecenter(obs, obs.hint_group),
            "target": obs.hint_group.name,
        },
    }
    if any(g.name is not None for g in obs.groups):
        out["targets"] = [
            {
                "name": g.name,
                "source_id": gi,
                "intents": g.intents,
                "obs_mode": g.obs_mode,
                "calibrator": g.calibrator,
                "ra_deg": math.degrees(g.ra),
                "dec_deg": math.degrees(g.dec),
                "phasecenter": _group_phasecenter(obs, g),
                "field_ids": g.field_ids,
                "flagged": bool(g.field_ids) and all(i in flagged for i in g.field_ids),
            }
            for gi, g in enumerate(obs.groups)
        ]
    return out


def _line_model_image(
    casatools: Any,
    path: Path,
    line: LineSpec,
    ra0: float,
    dec0: float,
    lowest_freq: float,
    highest_freq: float,
    chan_width_hz: float,
) -> tuple[Path, float, float]:
    """A model cube (Jy/pixel) holding the line source in one pixel; returns it and the pixel's ra, dec.

    The simulator's prediction ignores tabular component spectra (it evaluates a component at one
    frequency), so a line needs an image. The line is fixed in LSRK, as a real line would be; the
    cube's channels are the data's grid plus one spare channel at each end for the Doppler shift.
    """
    # Pixels much smaller than the beam, and the source in the inner half of the model, where the
    # gridding correction of the prediction is accurate.
    cell_arcsec = 2.0
    reach = max(abs(line.offset_ra_arcsec), abs(line.offset_dec_arcsec), 10 * cell_arcsec)
    npix = _nice_imsize(4.0 * reach / cell_arcsec)
    nchan = int(round((highest_freq - lowest_freq) / chan_width_hz)) + 2
    first = lowest_freq + chan_width_hz / 2.0 - chan_width_hz

    cs = casatools.coordsys()
    csys = cs.newcoordsys(direction=True, spectral=True, stokes=["I"])
    cs.done()
    try:
        csys.setreferencecode("J2000", "direction", adjust=False)
        csys.setprojection("SIN")
        cell_rad = cell_arcsec / ARCSEC_PER_RAD
        csys.setunits(["rad", "rad", "", "Hz"])
        csys.setincrement([-cell_rad, cell_rad, 1.0, chan_width_hz])
        csys.setreferencepixel([npix // 2, npix // 2, 0.0, 0.0])
        csys.setreferencevalue([ra0, dec0, 1.0, first])
        csys.setreferencecode("LSRK", "spectral", adjust=False)
        x = int(round(npix // 2 - line.offset_ra_arcsec / cell_arcsec))
        y = int(round(npix // 2 + line.offset_dec_arcsec / cell_arcsec))
        world = csys.toworld([x, y, 0, 0])["numeric"]
        ra, dec = float(world[0]), float(world[1])

        import numpy as np

        freqs = first + chan_width_hz * np.arange(nchan)
        sigma = line.fwhm_hz / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        spectrum = line.continuum_jy + line.peak_flux_jy * np.exp(-0.5 * ((freqs - line.center_freq_hz) / sigma) ** 2)
        pixels = np.zeros((npix, npix, 1, nchan), dtype=np.float32)
        pixels[x, y, 0, :] = spectrum

        ia = casatools.image()
        try:
            ia.fromshape(str(path), [npix, npix, 1, nchan], csys=csys.torecord(), overwrite=True, log=False)
            ia.putchunk(pixels)
            ia.setbrightnessunit("Jy/pixel")
        finally:
            ia.close()
            ia.done()
    finally:
        csys.done()
    return path, ra % (2 * math.pi), dec


def me_epoch(casatools: Any) -> dict:
    me = casatools.measures()
    try:
        return me.epoch("UTC", REFERENCE_EPOCH)
    finally:
        me.done()


def _schedule(field_names: list[str], nspw: int, hours: float, integration_s: float) -> list[tuple[str, int, float, float]]:
    """Scans as (field, spw, start, stop) in seconds of hour angle around transit.

    One field: a single scan over the whole track. Several fields: short scans cycling through the
    pointings, so each gets hour-angle coverage across the track. Every spw sees the same times.
    """
    total = hours * 3600.0
    start = -total / 2.0
    n_int = max(1, int(round(total / integration_s)))
    if len(field_names) == 1:
        slots = [(field_names[0], 0, n_int)]
    else:
        per_scan = max(1, min(int(300.0 // integration_s), n_int // len(field_names)))
        slots = []
        done = 0
        i = 0
        while done < n_int:
            take = min(per_scan, n_int - done)
            slots.append((field_names[i % len(field_names)], done, take))
            done += take
            i += 1
    out = []
    for name, first, count in slots:
        t0 = start + first * integration_s
        t1 = t0 + count * integration_s
        for spw in range(nspw):
            out.append((name, spw, t0, t1))
    return out
