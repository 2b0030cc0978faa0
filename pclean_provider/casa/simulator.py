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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pclean_provider.casa.runtime import ensure_casa_runtime
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
        path = Path(sources).expanduser()
        if not path.is_file():
            raise SimulationError(f"sources: file {path} does not exist; give a JSON or YAML list of sources")
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(text)
            else:
                raw = json.loads(text)
        except Exception as exc:  # yaml and json raise unrelated error types
            raise SimulationError(f"sources: cannot parse {path}: {exc}") from exc
        if isinstance(raw, dict) and "sources" in raw:
            raw = raw["sources"]
        if not isinstance(raw, list):
            raise SimulationError(f"sources: {path} must hold a list of sources (or a mapping with 'sources')")
        sources = raw
    out: list[SourceSpec] = []
    for i, item in enumerate(sources):
        if isinstance(item, SourceSpec):
            out.append(item)
            continue
        try:
            out.append(SourceSpec.model_validate(item))
        except Exception as exc:
            raise SimulationError(f"sources[{i}]: {exc}") from exc
    if not out:
        raise SimulationError("sources: the list is empty; give at least one source or None for the default sky")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SimulationError(f"sources: names must be unique, got {names}")
    return out


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


def _nice_imsize(n: float) -> int:
    """Smallest size >= n that FFTs well (factors 2, 3, 5; even)."""
    size = max(64, int(math.ceil(n)))
    while True:
        m = size
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and size % 2 == 0:
            return size
        size += 1


def _validate(**kw: Any) -> None:
    if kw["antennas"] < 3:
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
    total = kw["nspw"] * kw["nchan"] * kw["chan_width_hz"] + (kw["nspw"] - 1) * kw["spw_gap_hz"]
    if total >= kw["ref_freq_hz"]:
        raise SimulationError("the frequency coverage is wider than ref_freq_hz; reduce nchan, nspw or chan_width_hz")


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
class _Observation:
    """Where and what the simulated array observes: pointing, spectral windows, fields."""

    ra0: float
    dec0: float
    phasecenter: str
    first_freqs: list[float]
    chan_width_hz: float
    nchan: int
    lowest_freq: float
    highest_freq: float
    pb_fwhm_arcsec: float
    field_offsets: list[tuple[float, float]]


def simulate_ms(
    output: str | os.PathLike,
    *,
    antennas: int = 12,
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
) -> SimulationResult:
    """Write a simulated MeasurementSet, its component list and truth file; return their paths.

    ``output`` is the MeasurementSet path; the component list (``<stem>.cl``) and the truth file
    (``<stem>.truth.json``) go beside it. ``noise_jy`` is the rms per visibility (real and
    imaginary part); 0 gives noise-free data. ``spectral_line`` may be True (a default line),
    a dict or a :class:`LineSpec`. Spectral windows are contiguous unless ``spw_gap_hz`` > 0.
    ``progress`` receives one line per stage (benchmark-sized sets take minutes).
    ``descending`` stores every spw's channels in decreasing frequency (negative channel widths),
    as a lower-sideband receiver records them; the sky and the visibilities are the same.
    """

    def say(text: str) -> None:
        if progress is not None:
            progress(text)

    _validate(
        antennas=antennas, nchan=nchan, nspw=nspw, chan_width_hz=chan_width_hz, ref_freq_hz=ref_freq_hz,
        fields=fields, hours=hours, integration_s=integration_s, noise_jy=noise_jy, spw_gap_hz=spw_gap_hz,
    )
    if freq_frame not in ("TOPO", "LSRK"):
        raise SimulationError(f"freq_frame={freq_frame!r}: use 'TOPO' or 'LSRK'")
    src = load_sources(sources)
    line = _resolve_line(spectral_line, ref_freq_hz, chan_width_hz)
    if line is not None and line.name in {s.name for s in src}:
        raise SimulationError(f"spectral_line: name {line.name!r} is already used by a source; rename it")
    outputs = _output_paths(output, overwrite)

    ensure_casa_runtime()
    import casatools

    obs = _plan_observation(nspw, nchan, chan_width_hz, ref_freq_hz, spw_gap_hz, fields)
    # Everything is built in a private folder next to the output and renamed into place at the
    # end, so an interrupted run never leaves a half-written MeasurementSet under the real name.
    work = Path(tempfile.mkdtemp(prefix=f".{outputs.stem}.sim-", dir=outputs.ms.parent))
    try:
        tmp = _Outputs(ms=work / outputs.ms.name, componentlist=work / outputs.componentlist.name,
                       truth=work / outputs.truth.name, stem=outputs.stem)
        say(f"sky model: {len(src)} source(s){' + spectral line' if line else ''}")
        source_records, line_image = _write_sky_model(casatools, src, line, obs, ref_freq_hz, work, tmp.componentlist)
        field_names = _observe(casatools, tmp, obs, antennas, fields, hours, integration_s, freq_frame,
                               line_image, noise_jy, seed, say)
        nrows, uvw = _drop_simulator_copies(casatools, tmp.ms)
        if descending:
            _reverse_channel_order(casatools, tmp.ms)
        if nrows == 0:
            raise SimulationError(
                "the simulator produced no rows (source never above the elevation limit?); check hours"
            )
        cell, imsize, beam_arcsec = _imaging_hint(uvw, obs, source_records)
        truth = _truth_record(
            obs, ref_freq_hz, freq_frame, field_names, source_records, noise_jy, cell, imsize, beam_arcsec,
            simulation={
                "antennas": antennas,
                "nchan": nchan,
                "nspw": nspw,
                "chan_width_hz": chan_width_hz,
                "spw_gap_hz": spw_gap_hz,
                "fields": fields,
                "hours": hours,
                "integration_s": integration_s,
                "seed": seed,
                "descending": descending,
                "nrows": nrows,
            },
        )
        tmp.truth.write_text(json.dumps(truth, indent=2) + "\n")
        _move_into_place(work, tmp, outputs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return SimulationResult(
        ms=str(outputs.ms),
        truth=str(outputs.truth),
        componentlist=str(outputs.componentlist),
        nrows=nrows,
        nchan=nchan,
        nspw=nspw,
        nfields=fields,
        suggested_cell=f"{cell:g}arcsec",
        suggested_imsize=imsize,
        beam_estimate_arcsec=beam_arcsec,
        phasecenter=obs.phasecenter,
        seed=seed,
    )


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
                      fields: int) -> _Observation:
    first_freqs = spw_layout(nspw, nchan, chan_width_hz, ref_freq_hz, spw_gap_hz)
    pb_fwhm_arcsec = 1.13 * SPEED_OF_LIGHT / ref_freq_hz / DISH_DIAMETER_M * ARCSEC_PER_RAD
    ra0, dec0 = (math.radians(v) for v in DEFAULT_PHASE_CENTER)
    return _Observation(
        ra0=ra0,
        dec0=dec0,
        phasecenter=sexagesimal_direction(*DEFAULT_PHASE_CENTER),
        first_freqs=first_freqs,
        chan_width_hz=chan_width_hz,
        nchan=nchan,
        lowest_freq=first_freqs[0] - chan_width_hz / 2,
        highest_freq=first_freqs[-1] + (nchan - 0.5) * chan_width_hz,
        pb_fwhm_arcsec=pb_fwhm_arcsec,
        field_offsets=mosaic_offsets(fields, spacing_arcsec=pb_fwhm_arcsec / 3.0),
    )


def _write_sky_model(casatools: Any, src: list[SourceSpec], line: LineSpec | None, obs: _Observation,
                     ref_freq_hz: float, work: Path, cl_path: Path) -> tuple[list[dict], Path | None]:
    """The component list of the sources (and the line's model image); returns the truth's source records."""
    source_records = []
    cl = casatools.componentlist()
    try:
        for s in src:
            ra, dec, l_rad, m_rad = _source_position(s, obs.ra0, obs.dec0)
            cl.addcomponent(**_component(s, ra, dec, ref_freq_hz))
            source_records.append(_source_record(s, ra, dec, l_rad, m_rad))
        line_image = None
        if line is not None:
            line_image, ra, dec = _line_model_image(
                casatools, work / "line.model", line, obs.ra0, obs.dec0, obs.lowest_freq, obs.highest_freq,
                obs.chan_width_hz
            )
            source_records.append(_line_record(line, ra, dec, obs, ref_freq_hz))
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


def _line_record(line: LineSpec, ra: float, dec: float, obs: _Observation, ref_freq_hz: float) -> dict[str, Any]:
    """The line source as the truth file lists it: its flux at ref_freq_hz, and the line's shape."""
    l_rad, m_rad = _radec_to_lm(obs.ra0, obs.dec0, ra, dec)
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


def _observe(casatools: Any, tmp: _Outputs, obs: _Observation, antennas: int, fields: int, hours: float,
             integration_s: float, freq_frame: str, line_image: Path | None, noise_jy: float, seed: int,
             say: Callable[[str], None]) -> list[str]:
    """Observe the sky with the simulator into ``tmp.ms`` (predict, then noise); returns the field names."""
    me = casatools.measures()
    vla = me.observatory("VLA")
    me.done()
    east, north, up, names = array_layout(antennas)

    sm = casatools.simulator()
    try:
        sm.open(str(tmp.ms))
        sm.setconfig(
            telescopename="VLA",
            x=east,
            y=north,
            z=up,
            dishdiameter=[DISH_DIAMETER_M] * antennas,
            mount=["ALT-AZ"] * antennas,
            antname=names,
            padname=[f"P{n}" for n in names],
            coordsystem="local",
            referencelocation=vla,
        )
        for i, f0 in enumerate(obs.first_freqs):
            sm.setspwindow(
                spwname=f"spw{i}",
                freq=f"{f0!r}Hz",
                deltafreq=f"{obs.chan_width_hz!r}Hz",
                freqresolution=f"{obs.chan_width_hz!r}Hz",
                refcode=freq_frame,
                nchannels=obs.nchan,
                stokes="RR LL",
            )
        sm.setfeed(mode="perfect R L")
        field_names = []
        for i, (dx, dy) in enumerate(obs.field_offsets):
            fra, fdec = _lm_to_radec(obs.ra0, obs.dec0, dx / ARCSEC_PER_RAD, dy / ARCSEC_PER_RAD)
            name = "TARGET" if fields == 1 else f"TARGET_{i:02d}"
            sm.setfield(sourcename=name, sourcedirection=_casa_direction(fra, fdec))
            field_names.append(name)
        sm.setlimits(shadowlimit=0.001, elevationlimit="8deg")
        sm.setauto(autocorrwt=0.0)
        sm.settimes(
            integrationtime=f"{integration_s!r}s",
            usehourangle=True,
            referencetime=me_epoch(casatools),
        )
        nspw = len(obs.first_freqs)
        scans = _schedule(field_names, nspw, hours, integration_s)
        say(f"observing: {antennas} antennas, {len(scans)} scan(s), {nspw} spw x {obs.nchan} channels, {hours:g} h")
        for name, spw, start, stop in scans:
            sm.observe(sourcename=name, spwname=f"spw{spw}", starttime=f"{start!r}s", stoptime=f"{stop!r}s")
        # Squint would make RR and LL see different skies off axis; Stokes I truth stays simpler without it.
        sm.setvp(dovp=True, usedefaultvp=True, dosquint=False)
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
    return field_names


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


def _imaging_hint(uvw: Any, obs: _Observation, source_records: list[dict]) -> tuple[float, int, float]:
    """(cell in arcsec, imsize, beam estimate in arcsec) that image this sky well."""
    import numpy as np

    uvmax_m = float(np.hypot(uvw[0], uvw[1]).max())
    uvmax_lambda = uvmax_m * obs.highest_freq / SPEED_OF_LIGHT
    beam_arcsec = ARCSEC_PER_RAD / uvmax_lambda
    # About 5 pixels across the finest fringe (Nyquist needs 2; CLEAN wants the beam well
    # sampled), rounded down to a tidy value so the cell string stays readable.
    cell = math.floor(beam_arcsec / 5.0 * 2.0) / 2.0 if beam_arcsec >= 2.5 else round(beam_arcsec / 5.0, 3)
    extent = max(
        [abs(r["offset_ra_arcsec"]) + (r["major_arcsec"] or 0.0) for r in source_records]
        + [abs(r["offset_dec_arcsec"]) + (r["major_arcsec"] or 0.0) for r in source_records]
        + [abs(c) + obs.pb_fwhm_arcsec / 4.0 for xy in obs.field_offsets[1:] for c in xy]
    )
    # Sources within the inner ~60 % of the image keep clear of the edges where the gridding
    # taper and aliasing live.
    imsize = max(128, _nice_imsize(2.0 * extent / 0.6 / cell))
    return cell, imsize, beam_arcsec


def _truth_record(obs: _Observation, ref_freq_hz: float, freq_frame: str, field_names: list[str],
                  source_records: list[dict], noise_jy: float, cell: float, imsize: int, beam_arcsec: float,
                  simulation: dict[str, Any]) -> dict[str, Any]:
    """The truth file's content: what was observed, the injected sources, and how to image them."""
    return {
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
            {"id": i, "first_freq_hz": f0, "chan_width_hz": obs.chan_width_hz, "nchan": obs.nchan}
            for i, f0 in enumerate(obs.first_freqs)
        ],
        "freq_range_hz": [obs.lowest_freq, obs.highest_freq],
        "fields": [
            {
                "id": i,
                "name": field_names[i],
                "offset_ra_arcsec": dx,
                "offset_dec_arcsec": dy,
            }
            for i, (dx, dy) in enumerate(obs.field_offsets)
        ],
        "sources": source_records,
        "flux_convention": "intrinsic (not primary-beam attenuated) Stokes I at ref_freq_hz",
        "noise_jy_per_visibility": noise_jy,
        "simulation": simulation,
        "imaging_hint": {
            "cell": f"{cell:g}arcsec",
            "imsize": imsize,
            "beam_estimate_arcsec": beam_arcsec,
            "primary_beam_fwhm_arcsec": obs.pb_fwhm_arcsec,
            "phasecenter": obs.phasecenter,
        },
    }


def _move_into_place(work: Path, tmp: _Outputs, outputs: _Outputs) -> None:
    """Replace old outputs only now that the new ones are complete."""
    for new, final in ((tmp.ms, outputs.ms), (tmp.componentlist, outputs.componentlist), (tmp.truth, outputs.truth)):
        if final.exists() or final.is_symlink():
            trash = work / (".old-" + final.name)
            os.replace(final, trash)
        os.replace(new, final)


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
