"""The imaging plan: what to image in a MeasurementSet, and how, decided from the data.

One entry per imaging target (a source, or a source and spectral window for cubes): its fields
and spws, phase centre, cell, image size, gridder and stopping, each decision with its value, its
inputs and one sentence of why. The pipeline DAGs map their imaging over these targets, ``pclean
plan`` prints them, and QA shows them beside the grid it judges.

Rules, in the order they are applied to each target:
1. Targets: fields are grouped into sources (same SOURCE_ID or the same name once a trailing
   pointing number is dropped, and within a few primary beams of each other); several distinct
   pointings of one source make a mosaic target. Intents decide the role: a field observed for
   OBSERVE_TARGET (or any field of an MS without intents) is science; a field observed only to
   calibrate is skipped unless the policy images calibrators too.
2. Data: a target whose fields and spws hold no unflagged visibility is skipped here, before any
   cluster time is spent, with that reason.
3. Primary beam: FWHM = pb_fwhm_factor * lambda / D at the target's lowest frequency and smallest
   dish; the image reaches pb_level of it (Gaussian profile), or the union of the pointings'.
4. Beam and cell: the synthesized beam estimated from the target's weighted uv coverage
   (engine.beam_estimate) at its highest frequency for a cube (its finest channel), across its
   band for continuum; the cell is its minor axis / pixels_per_beam, rounded down.
5. Size: the field / cell, rounded up to an FFT-friendly size, then the size budget (pixels,
   cube size, products on disk): the field is cut towards the primary beam's FWHM first, then the
   cell coarsened towards 3 pixels per beam, then the size capped; every step recorded.
6. Gridder: mosaic for several pointings; w-projection when the w-term's phase at the image edge
   is large; else standard.
7. Stopping: nsigma times the measured noise where the policy says auto and nothing is pinned.
A parameter the template or the run pins (present in its overrides or preset) always wins, and
the decision says "pinned".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from pclean_provider.casa.ms_survey import survey_ms
from pclean_provider.config import load_config
from pclean_provider.config.plan_policy import PlanPolicy
from pclean_provider.config.quantities import fast_fft_size, parse_angle_arcsec
from pclean_provider.engine.beam_estimate import ARCSEC_PER_RAD, estimate_beam, imaging_weights

SPEED_OF_LIGHT = 299_792_458.0
# Fields of one source farther apart than this many primary beams are separate targets.
SAME_SOURCE_PB = 3.0
# Pointings closer than this fraction of the primary beam are the same pointing (re-observations).
SAME_POINTING_PB = 0.05
# Without a dish diameter (aperture arrays may record none) the field is this many beams across.
FALLBACK_BEAMS_ACROSS = 128
# Image products of one target on disk, in units of its image cube (image, residual, model, psf,
# pb, mask; sumwt and weights are small).
PRODUCT_CUBES = 6
MIN_PIXELS_PER_BEAM = 3.0
SCIENCE_INTENT = "OBSERVE_TARGET"
# Spectral windows that copy or monitor others (ALMA's channel averages, water-vapour radiometer and
# square-law detectors), by the names telescopes give them: never imaging targets of their own.
AUXILIARY_SPW = re.compile(r"CH_AVG|#WVR|WVR#|SQLD", re.IGNORECASE)
# A SIN image cannot reach beyond the horizon: direction cosines run from -1 to 1, two radians across.
MAX_FIELD_RAD = 2.0

Source = Literal["derived", "pinned", "capped", "default"]


class PlanError(ValueError):
    """The plan cannot be made for this MS and these settings; the message says what to change."""


class PlanDecision(BaseModel):
    name: str
    value: Any
    source: Source
    inputs: dict[str, Any] = Field(default_factory=dict)
    reason: str


class PlannedTarget(BaseModel):
    label: str = Field(description="Readable name: the source, and the spw for per-spw cubes.")
    slug: str = Field(description="The label made safe for file and product names.")
    source_name: str
    role: Literal["science", "calibrator"]
    intents: list[str]
    fields: list[int]
    field_names: list[str]
    spws: list[int]
    pointings: int
    parameters: dict[str, Any] = Field(description="tclean parameters the plan sets for this target.")
    decisions: list[PlanDecision]
    beam_estimate_arcsec: list[float] | None = Field(None, description="[major, minor, pa_deg]")
    pb_fwhm_arcsec: float | None
    pb_level: float
    pixels_per_beam: float
    capped: bool = False

    def decision(self, name: str) -> PlanDecision | None:
        return next((d for d in self.decisions if d.name == name), None)


class SkippedTarget(BaseModel):
    label: str
    fields: list[int]
    spws: list[int]
    reason: str


class ImagingPlan(BaseModel):
    ms: str
    telescope: str
    kind: Literal["cube", "continuum"]
    policy: dict[str, Any]
    pinned: dict[str, Any]
    targets: list[PlannedTarget]
    skipped: list[SkippedTarget]
    seconds: float = 0.0

    def target_json(self, target: PlannedTarget) -> dict[str, Any]:
        """One target with the MS and kind beside it: what QA reads as the product's plan."""
        return {"ms": self.ms, "kind": self.kind, "telescope": self.telescope, **target.model_dump(mode="json")}


# --------------------------------------------------------------------------------------------
# Entry points


def plan_imaging(vis: str, *, overrides: Mapping[str, Any] | None = None, presets: Iterable[str] = (),
                 policy: PlanPolicy | Mapping[str, Any] | None = None) -> ImagingPlan:
    """The plan of one MS under a preset, pinned overrides and a policy (reads the MS; seconds)."""
    policy = policy if isinstance(policy, PlanPolicy) else PlanPolicy.model_validate(dict(policy or {}))
    overrides = {k: v for k, v in dict(overrides or {}).items() if k not in ("vis", "imagename")}
    cfg = load_config(presets=list(presets), overrides={**overrides, "vis": vis}, check_paths=False)
    flat = cfg.to_flat()
    pinned = {k: flat[k] for k in cfg.sources if k not in ("vis", "imagename")}
    started = time.monotonic()
    survey = survey_ms(vis, max_uv_rows=policy.max_uv_rows)
    plan = plan_from_survey(survey, kind="cube" if cfg.is_cube else "continuum", flat=flat, pinned=pinned,
                            policy=policy)
    plan.seconds = round(time.monotonic() - started, 3)
    return plan


def plan_from_survey(survey, *, kind: Literal["cube", "continuum"], flat: Mapping[str, Any],
                     pinned: Mapping[str, Any], policy: PlanPolicy) -> ImagingPlan:
    """The plan from an ``MsSurvey`` (pure: no CASA, so its rules are unit-tested on made-up MSs)."""
    planner = _Planner(survey, kind, dict(flat), dict(pinned), policy)
    targets, skipped = planner.run()
    if len(targets) > 1:
        # Every target needs its own product name; labels are unique by construction, slugs must be too.
        seen: dict[str, int] = {}
        for t in targets:
            seen[t.slug] = seen.get(t.slug, 0) + 1
        for t in targets:
            if seen[t.slug] > 1:
                t.slug = f"{t.slug}_f{t.fields[0]}"
    return ImagingPlan(ms=survey.path, telescope=survey.telescope, kind=kind,
                       policy=policy.model_dump(mode="json"), pinned=_jsonable(pinned),
                       targets=targets, skipped=skipped)


# --------------------------------------------------------------------------------------------
# Small pure helpers (tested on their own)


def round_cell_arcsec(cell: float) -> float:
    """Rounded down to two significant digits, so cells read well and never get coarser."""
    if cell <= 0:
        raise ValueError(f"cell {cell} must be positive")
    quantum = 10.0 ** (math.floor(math.log10(cell)) - 1)
    return float(f"{math.floor(cell / quantum + 1e-9) * quantum:.6g}")


def pb_radius_arcsec(fwhm_arcsec: float, level: float) -> float:
    """Radius where a Gaussian primary beam of this FWHM falls to ``level``."""
    return 0.5 * fwhm_arcsec * math.sqrt(math.log(1.0 / level) / math.log(2.0))


def direction_string(frame: str, ra_rad: float, dec_rad: float) -> str:
    """'J2000 12h00m00.0000s +40d00m00.000s', as tclean's phasecenter takes it."""
    ra_s = round((math.degrees(ra_rad) % 360.0) / 15.0 * 3600.0, 4) % 86400.0
    h, rem = divmod(ra_s, 3600.0)
    m, sec = divmod(rem, 60.0)
    dec_as = round(abs(math.degrees(dec_rad)) * 3600.0, 3)
    d, drem = divmod(dec_as, 3600.0)
    dm, dsec = divmod(drem, 60.0)
    sign = "-" if dec_rad < 0 else "+"
    return f"{frame} {int(h):02d}h{int(m):02d}m{sec:07.4f}s {sign}{int(d):02d}d{int(dm):02d}m{dsec:06.3f}s"


def tangent_offsets(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float]:
    """(l, m) in radians of a direction on the SIN tangent plane around (ra0, dec0)."""
    dra = ra - ra0
    l_ = math.cos(dec) * math.sin(dra)
    m_ = math.sin(dec) * math.cos(dec0) - math.cos(dec) * math.sin(dec0) * math.cos(dra)
    return l_, m_


def separation_rad(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    s = (math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2)
    return 2.0 * math.asin(min(1.0, math.sqrt(s)))


def source_stem(name: str) -> str:
    """A field name without a trailing pointing number ('M31_03' -> 'M31', 'NGC253-1' -> 'NGC253')."""
    stem = re.sub(r"[_\-\s]\d{1,3}$", "", name.strip())
    return stem or name.strip()


def safe_slug(text: str) -> str:
    return re.sub(r"_+", "_", "".join(c if c.isalnum() or c in "-+." else "_" for c in text)).strip("_") or "target"


def selection_ids(value: Any, names: Mapping[int, str] | None = None) -> list[int] | None:
    """The ids a simple field or spw selection names ('0', '0,2', '1~3', '3C286', '0:4~9;12~14');
    None when it uses a form this reader does not resolve (wildcards, frequencies), so the caller
    falls back to everything and says so."""
    if value in (None, "", []):
        return None
    parts = value if isinstance(value, list) else str(value).split(",")
    ids: list[int] = []
    for part in parts:
        token = str(part).strip().split(":")[0]
        if not token:
            continue
        if re.fullmatch(r"\d+", token):
            ids.append(int(token))
        elif re.fullmatch(r"\d+~\d+", token):
            a, b = (int(x) for x in token.split("~"))
            ids.extend(range(min(a, b), max(a, b) + 1))
        elif names is not None and token in names.values():
            ids.extend(i for i, n in names.items() if n == token)
        else:
            return None
    return sorted(set(ids))


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out[k] = v if isinstance(v, str | int | float | bool | list | dict | type(None)) else str(v)
    return out


# --------------------------------------------------------------------------------------------
# The planner


class _Planner:
    def __init__(self, survey, kind: str, flat: dict[str, Any], pinned: dict[str, Any], policy: PlanPolicy):
        self.s = survey
        self.kind = kind
        self.flat = flat
        self.pinned = pinned
        self.p = policy
        dishes = [d for d in survey.dish_diameters_m if d > 0]
        self.dish_m = min(dishes) if dishes else None
        self.dish_note = (f"smallest of {len(set(dishes))} dish size(s) in the ANTENNA table"
                          if dishes else "the ANTENNA table records no dish diameter")

    # -- targets ---------------------------------------------------------------------------
    def run(self) -> tuple[list[PlannedTarget], list[SkippedTarget]]:
        targets: list[PlannedTarget] = []
        skipped: list[SkippedTarget] = []
        for group, role, intents, why_fields in self._field_groups():
            names = [self.s.field_by_id(f).name for f in group]
            source = source_stem(names[0]) if len(set(names)) > 1 else names[0]
            if role == "calibrator" and self.p.targets != "all":
                skipped.append(SkippedTarget(
                    label=source, fields=group, spws=[],
                    reason=f"calibrator ({', '.join(intents)}): not imaged; set plan.targets: all to image "
                           "calibrators as targets of their own"))
                continue
            rows = self._rows_for(group, role)
            spw_sets, why_spws = self._spw_sets(group, rows)
            for spws in spw_sets:
                label = source if len(spw_sets) == 1 else f"{source} spw {','.join(map(str, spws))}"
                if role == "calibrator":
                    label = f"{label} (calibrator)"
                good = sum(rows.get((f, w), 0) for f in group for w in spws)
                if good == 0:
                    skipped.append(SkippedTarget(
                        label=label, fields=group, spws=spws,
                        reason=f"no unflagged data in field(s) {','.join(map(str, group))} spw(s) "
                               f"{','.join(map(str, spws))}: nothing to image (fully flagged or not observed)"))
                    continue
                targets.append(self._target(label, source, role, intents, group, spws, why_fields, why_spws))
        return targets, skipped

    def _field_groups(self) -> list[tuple[list[int], str, list[str], str]]:
        fields = self.s.fields
        pinned_field = self.pinned.get("field")
        if pinned_field not in (None, "", []):
            ids = selection_ids(pinned_field, {f.id: f.name for f in fields})
            chosen = ids if ids else [f.id for f in fields]
            why = (f"field={pinned_field!r} pinned: one target of the field(s) it selects"
                   if ids else f"field={pinned_field!r} pinned (a form the plan does not resolve): "
                   "one target; its cell and size are planned from all fields")
            intents = sorted({i for f in chosen for i in self.s.field_by_id(f).intents})
            return [(chosen, "science", intents, why)]
        pb_rad = self._pb_fwhm_arcsec(min(s.freq_min_hz for s in self.s.spws)) if self.s.spws else None
        near = (SAME_SOURCE_PB * pb_rad / ARCSEC_PER_RAD) if pb_rad else math.radians(1.0)
        parent = {f.id: f.id for f in fields}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a in fields:
            for b in fields:
                if b.id <= a.id:
                    continue
                same = (a.source_id >= 0 and a.source_id == b.source_id) or source_stem(a.name) == source_stem(b.name)
                if same and separation_rad(a.ra_rad, a.dec_rad, b.ra_rad, b.dec_rad) < near:
                    parent[root(b.id)] = root(a.id)
        groups: dict[int, list[int]] = {}
        for f in fields:
            groups.setdefault(root(f.id), []).append(f.id)
        out = []
        for ids in sorted(groups.values()):
            intents = sorted({i for f in ids for i in self.s.field_by_id(f).intents})
            if not intents:
                role, why = "science", "the MS records no intents for these fields: imaged as science"
            elif any(i.startswith(SCIENCE_INTENT) for i in intents):
                role, why = "science", f"observed with a science intent ({SCIENCE_INTENT})"
            else:
                role, why = "calibrator", "observed only to calibrate"
            out.append((ids, role, intents, why))
        return out

    def _rows_for(self, group: list[int], role: str) -> dict[tuple[int, int], int]:
        """Unflagged rows per (field, spw) that count for this target: a science target of an MS that
        records intents counts its science scans only (its atmosphere or pointing scans, often in
        spws of their own, are not what is imaged)."""
        science = self.s.science_rows
        if role == "science" and any(science.get((f, sp.id), 0) for f in group for sp in self.s.spws):
            return science
        return self.s.good_rows

    def _spw_sets(self, group: list[int], rows: dict[tuple[int, int], int]) -> tuple[list[list[int]], str]:
        pinned_spw = self.pinned.get("spw")
        auxiliary = [sp.id for sp in self.s.spws if AUXILIARY_SPW.search(sp.name or "")]
        with_data = [sp.id for sp in self.s.spws
                     if sp.id not in auxiliary and any(rows.get((f, sp.id), 0) for f in group)]
        observed = with_data or [sp.id for sp in self.s.spws if sp.id not in auxiliary] or [sp.id for sp in self.s.spws]
        if pinned_spw not in (None, "", []):
            ids = selection_ids(pinned_spw)
            return [ids or observed], f"spw={pinned_spw!r} pinned"
        grouping = self.p.spw_grouping
        if grouping == "auto":
            grouping = "per_spw" if self.kind == "cube" else "together"
        note = (f"; spw(s) {','.join(map(str, auxiliary))} left out: channel-average, WVR or square-law "
                "windows copy or monitor the others" if auxiliary else "")
        if grouping == "per_spw":
            return [[i] for i in observed], ("one cube per spectral window with data (native channels; "
                                             "windows differ in width)" + note)
        return [observed], "all spectral windows with data, together" + note

    # -- one target ------------------------------------------------------------------------
    def _pb_fwhm_arcsec(self, freq_hz: float) -> float | None:
        if not self.dish_m:
            return None
        return self.p.pb_fwhm_factor * SPEED_OF_LIGHT / freq_hz / self.dish_m * ARCSEC_PER_RAD

    def _target(self, label, source, role, intents, group, spws, why_fields, why_spws) -> PlannedTarget:
        s = self.s
        decisions: list[PlanDecision] = []
        params: dict[str, Any] = {}
        spw_facts = [s.spw_by_id(i) for i in spws]
        f_lo = min(x.freq_min_hz for x in spw_facts)
        f_hi = max(x.freq_max_hz for x in spw_facts)
        nchan = sum(x.nchan for x in spw_facts)

        decisions.append(PlanDecision(name="target", value=label, source="derived",
                                      inputs={"fields": group, "intents": intents, "role": role}, reason=why_fields))
        field_value = self.pinned.get("field") or ",".join(map(str, group))
        params["field"] = field_value
        decisions.append(PlanDecision(name="field", value=field_value,
                                      source="pinned" if "field" in self.pinned else "derived",
                                      inputs={"names": [s.field_by_id(f).name for f in group]},
                                      reason="the fields of this source" if "field" not in self.pinned
                                      else "pinned by the template or run"))
        spw_value = self.pinned.get("spw") or ",".join(map(str, spws))
        params["spw"] = spw_value
        decisions.append(PlanDecision(
            name="spw", value=spw_value, source="pinned" if "spw" in self.pinned else "derived",
            inputs={"freq_min_hz": f_lo, "freq_max_hz": f_hi, "nchan": nchan,
                    "chan_width_hz": sorted({x.chan_width_hz for x in spw_facts})}, reason=why_spws))

        # Pointings and primary beam.
        pb_fwhm = self._pb_fwhm_arcsec(f_lo)
        pointings = self._pointings(group, pb_fwhm)
        frame = s.field_by_id(group[0]).frame
        if len(pointings) > 1:
            ra_c, dec_c = _centroid([(p[1], p[2]) for p in pointings])
            centre_value: Any = direction_string(frame, ra_c, dec_c)
            centre_reason = f"the centre of the mosaic's {len(pointings)} pointings"
        else:
            ra_c, dec_c = pointings[0][1], pointings[0][2]
            centre_value = pointings[0][0]
            centre_reason = "the source's field"
        if "phasecenter" in self.pinned and self.pinned["phasecenter"] not in ("", None):
            params["phasecenter"] = self.pinned["phasecenter"]
            decisions.append(PlanDecision(name="phasecenter", value=self.pinned["phasecenter"], source="pinned",
                                          reason="pinned by the template or run"))
        else:
            params["phasecenter"] = centre_value
            decisions.append(PlanDecision(name="phasecenter", value=centre_value, source="derived",
                                          inputs={"pointings": len(pointings)}, reason=centre_reason))

        # Field of view wanted (arcsec, x and y).
        offsets = [tangent_offsets(ra_c, dec_c, p[1], p[2]) for p in pointings]
        ext_x = max(abs(o[0]) for o in offsets) * ARCSEC_PER_RAD
        ext_y = max(abs(o[1]) for o in offsets) * ARCSEC_PER_RAD

        # Beam from the weighted uv coverage.
        weighting = str(self.flat.get("weighting") or "natural")
        robust = float(self.flat.get("robust", 0.5))
        taper = _taper_arcsec(self.flat.get("uvtaper"))
        fov_guess = 2 * (max(ext_x, ext_y) + pb_radius_arcsec(pb_fwhm, self.p.pb_level)) if pb_fwhm else None
        freqs = [f_hi] if self.kind == "cube" else sorted({f for x in spw_facts
                                                          for f in (x.freq_min_hz, 0.5 * (x.freq_min_hz + x.freq_max_hz),
                                                                    x.freq_max_hz)})
        beam, wmax = self._beam(group, spws, freqs, weighting, robust, taper, fov_guess)
        beam_inputs = {"weighting": weighting, "robust": robust if weighting.startswith("briggs") else None,
                       "uvtaper_arcsec": taper, "frequencies_hz": [round(f) for f in freqs],
                       "uv_points": beam.points if beam else 0, "row_stride": s.uv_stride}
        if beam is not None:
            decisions.append(PlanDecision(
                name="beam", value=beam.as_list(), source="derived", inputs=beam_inputs,
                reason=(f"estimated {beam.major_arcsec:.3g}\" x {beam.minor_arcsec:.3g}\" from the "
                        f"{'finest channel' if self.kind == 'cube' else 'whole band'}'s weighted uv coverage "
                        f"({weighting})")))
        ppb = self.p.pixels_per_beam
        if "cell" in self.pinned and self.pinned["cell"] not in ([], "", None):
            cell_val = self.pinned["cell"]
            cells = cell_val if isinstance(cell_val, list) else [cell_val]
            cell = parse_angle_arcsec(cells[0])
            cell_source: Source = "pinned"
            cell_reason = "pinned by the template or run"
            if beam is not None:
                cell_reason += f" ({beam.minor_arcsec / cell:.1f} pixels across the estimated beam minor axis)"
        elif beam is not None:
            cell = round_cell_arcsec(beam.minor_arcsec / ppb)
            cell_source, cell_reason = "derived", (f"{ppb:g} pixels across the {beam.minor_arcsec:.3g}\" beam "
                                                    "minor axis, rounded down")
        else:
            raise PlanError(f"{label}: no unflagged uv points to estimate the beam from; pin `cell` in the "
                            "template's overrides or check the MS's flags")

        # Size.
        capped = False
        if pb_fwhm:
            radius = pb_radius_arcsec(pb_fwhm, self.p.pb_level)
            want_x, want_y = 2 * (ext_x + radius), 2 * (ext_y + radius)
            horizon = MAX_FIELD_RAD * ARCSEC_PER_RAD
            size_inputs: dict[str, Any] = {"pb_fwhm_arcsec": round(pb_fwhm, 3), "pb_level": self.p.pb_level,
                                           "dish_m": self.dish_m, "freq_hz": round(f_lo),
                                           "pointings": len(pointings)}
            size_reason = (f"covers the primary beam (FWHM {pb_fwhm:.4g}\" at {f_lo / 1e9:.4g} GHz, "
                           f"{self.dish_m:g} m dishes: {self.dish_note}) down to {self.p.pb_level:g}"
                           + (f", around all {len(pointings)} pointings" if len(pointings) > 1 else ""))
            if max(want_x, want_y) > horizon:
                want_x, want_y = min(want_x, horizon), min(want_y, horizon)
                size_reason += "; the field stops at the horizon (a SIN image is at most 2 radians across)"
        else:
            across = FALLBACK_BEAMS_ACROSS * (beam.major_arcsec if beam else cell * ppb)
            want_x = want_y = across
            size_inputs = {"beams_across": FALLBACK_BEAMS_ACROSS}
            size_reason = (f"{self.dish_note}, so the primary beam is unknown: {FALLBACK_BEAMS_ACROSS} beams across")
        size_source: Source = "derived"
        if "imsize" in self.pinned:
            imsize_val = self.pinned["imsize"]
            sizes = [imsize_val] if isinstance(imsize_val, int) else list(imsize_val)
            nx, ny = int(sizes[0]), int(sizes[-1])
            size_source, size_reason = "pinned", "pinned by the template or run"
            if pb_fwhm:
                size_reason += (f" (the image is {nx * cell / pb_fwhm:.2g} primary-beam FWHM across; "
                                f"{pb_fwhm:.4g}\" at {f_lo / 1e9:.4g} GHz)")
        else:
            nx, ny = fast_fft_size(want_x / cell), fast_fft_size(want_y / cell)
            nx, ny, cell, capped, cap_notes = self._budget(nx, ny, cell, nchan, pb_fwhm, beam, cell_source)
            if cap_notes:
                size_source = "capped"
                size_reason += "; " + "; ".join(cap_notes)
        size_inputs.update({"cell_arcsec": cell, "field_arcsec": [round(want_x, 2), round(want_y, 2)],
                            "channels": nchan})
        params["cell"] = self.pinned["cell"] if cell_source == "pinned" else f"{cell:g}arcsec"
        decisions.append(PlanDecision(name="cell", value=params["cell"], source=cell_source,
                                      inputs={"beam_minor_arcsec": round(beam.minor_arcsec, 4) if beam else None,
                                              "pixels_per_beam": ppb}, reason=cell_reason))
        params["imsize"] = [nx, ny]
        decisions.append(PlanDecision(name="imsize", value=[nx, ny], source=size_source, inputs=size_inputs,
                                      reason=size_reason))

        # Gridder.
        if "gridder" in self.pinned:
            params["gridder"] = self.pinned["gridder"]
            note = ""
            if len(pointings) > 1 and self.pinned["gridder"] not in ("mosaic", "awproject", "awp2", "mosaicft"):
                note = f"; note: {len(pointings)} pointings are imaged as one (no mosaic gridder)"
            decisions.append(PlanDecision(name="gridder", value=params["gridder"], source="pinned",
                                          reason="pinned by the template or run" + note))
        else:
            half = 0.5 * max(nx, ny) * cell / ARCSEC_PER_RAD
            phase = math.pi * wmax * half ** 2
            g_inputs = {"pointings": len(pointings), "w_max_lambda": round(wmax, 1),
                        "w_phase_at_edge_rad": round(phase, 3), "limit_rad": self.p.wproject_phase_rad}
            if len(pointings) > 1:
                params["gridder"] = "mosaic"
                reason = f"{len(pointings)} pointings of one source: a joint mosaic"
            elif phase > self.p.wproject_phase_rad:
                params["gridder"] = "wproject"
                params["wprojplanes"] = -1
                reason = (f"the w-term's phase at the image edge is {phase:.2g} rad (> {self.p.wproject_phase_rad:g}): "
                          "w-projection, planes chosen from the data")
            else:
                params["gridder"] = "standard"
                reason = f"one pointing and a w-term phase of {phase:.2g} rad at the image edge: no w correction needed"
            decisions.append(PlanDecision(name="gridder", value=params["gridder"], source="derived",
                                          inputs=g_inputs, reason=reason))

        # Stopping.
        if self.p.stopping == "auto" and not ({"threshold", "nsigma"} & set(self.pinned)):
            params["nsigma"] = self.p.nsigma
            decisions.append(PlanDecision(name="stopping", value={"nsigma": self.p.nsigma}, source="derived",
                                          inputs={"niter": self.flat.get("niter")},
                                          reason=f"clean to {self.p.nsigma:g} times the noise measured in each "
                                                 "major cycle's residual (or niter, whichever comes first)"))
        else:
            kept = {k: self.pinned[k] for k in ("niter", "threshold", "nsigma") if k in self.pinned}
            decisions.append(PlanDecision(name="stopping", value=kept, source="pinned" if kept else "default",
                                          reason="the template's or run's own stopping" if kept
                                          else "plan.stopping: template and nothing pinned: tclean's defaults"))

        return PlannedTarget(
            label=label, slug=safe_slug(label), source_name=source, role=role, intents=intents, fields=group,
            field_names=[s.field_by_id(f).name for f in group], spws=spws, pointings=len(pointings),
            parameters=params, decisions=decisions, beam_estimate_arcsec=beam.as_list() if beam else None,
            pb_fwhm_arcsec=round(pb_fwhm, 4) if pb_fwhm else None, pb_level=self.p.pb_level,
            pixels_per_beam=ppb, capped=capped)

    def _pointings(self, group: list[int], pb_fwhm: float | None) -> list[tuple[int, float, float]]:
        """(first field id, ra, dec) of each distinct pointing of the group."""
        tol = SAME_POINTING_PB * (pb_fwhm or 60.0) / ARCSEC_PER_RAD
        out: list[tuple[int, float, float]] = []
        for fid in group:
            f = self.s.field_by_id(fid)
            if not any(separation_rad(f.ra_rad, f.dec_rad, p[1], p[2]) < tol for p in out):
                out.append((fid, f.ra_rad, f.dec_rad))
        return out

    def _beam(self, group, spws, freqs, weighting, robust, taper, fov_arcsec):
        s = self.s
        mask = np.isin(s.uv_field, group) & np.isin(s.uv_spw, spws)
        u_m, v_m, w_m = s.uvw_m[0, mask], s.uvw_m[1, mask], s.uvw_m[2, mask]
        wt = s.uv_weight[mask]
        if len(wt) == 0:
            return None, 0.0
        scale = np.asarray(freqs, dtype=float) / SPEED_OF_LIGHT
        u = np.concatenate([u_m * k for k in scale])
        v = np.concatenate([v_m * k for k in scale])
        w = np.concatenate([wt for _ in scale])
        wmax = float(np.max(np.abs(w_m))) * float(scale.max())
        fov_rad = (fov_arcsec or 3600.0) / ARCSEC_PER_RAD
        imaging = imaging_weights(u, v, w, weighting=weighting, robust=robust, fov_rad=fov_rad,
                                  uvtaper_arcsec=taper)
        return estimate_beam(u, v, imaging), wmax

    def _budget(self, nx, ny, cell, nchan, pb_fwhm, beam, cell_source):
        """Fit (nx, ny, cell) into the size budget: cut the field towards the primary beam's FWHM,
        then coarsen the cell towards 3 pixels per beam, then cap; one note per step taken."""
        p = self.p
        notes: list[str] = []
        planes = nchan if self.kind == "cube" else 1
        limit = min(p.max_cube_gb, p.max_products_gb / PRODUCT_CUBES) * 1e9

        def nbytes(a: int, b: int) -> float:
            return 4.0 * a * b * planes

        if nbytes(nx, ny) > limit and pb_fwhm:
            floor_n = fast_fft_size(pb_fwhm / cell)
            scale = math.sqrt(limit / nbytes(nx, ny))
            nx2 = max(floor_n, fast_fft_size(nx * scale))
            ny2 = max(floor_n, fast_fft_size(ny * scale))
            if (nx2, ny2) != (nx, ny):
                notes.append(f"field cut from {nx}x{ny} to {nx2}x{ny2} pixels to fit the {limit / 1e9:g} GB "
                             f"image budget ({planes} plane(s))")
                nx, ny = nx2, ny2
        if nbytes(nx, ny) > limit and beam is not None and cell_source == "derived":
            coarsest = round_cell_arcsec(beam.minor_arcsec / MIN_PIXELS_PER_BEAM)
            scale = min(coarsest / cell, math.sqrt(nbytes(nx, ny) / limit))
            if scale > 1.0:
                new_cell = round_cell_arcsec(cell * scale)
                nx, ny = fast_fft_size(nx * cell / new_cell), fast_fft_size(ny * cell / new_cell)
                notes.append(f"cell coarsened from {cell:g}\" to {new_cell:g}\" "
                             f"({beam.minor_arcsec / new_cell:.1f} pixels per beam) to fit the image budget")
                cell = new_cell
        if nbytes(nx, ny) > limit:
            side = int(math.sqrt(limit / (4.0 * planes)))
            nx2, ny2 = min(nx, _fft_floor(side)), min(ny, _fft_floor(side))
            notes.append(f"size capped from {nx}x{ny} to {nx2}x{ny2} pixels by the {limit / 1e9:g} GB image budget")
            nx, ny = nx2, ny2
        if max(nx, ny) > p.max_imsize:
            nx2, ny2 = min(nx, _fft_floor(p.max_imsize)), min(ny, _fft_floor(p.max_imsize))
            notes.append(f"size capped from {nx}x{ny} to {nx2}x{ny2} pixels (plan.max_imsize {p.max_imsize})")
            nx, ny = nx2, ny2
        return nx, ny, cell, bool(notes), notes


def _fft_floor(n: int) -> int:
    """Largest FFT-friendly even size <= n."""
    best = 32
    size = 32
    while size <= n:
        best = size
        size = fast_fft_size(size + 1)
    return best


def _centroid(directions: list[tuple[float, float]]) -> tuple[float, float]:
    x = sum(math.cos(d) * math.cos(r) for r, d in directions)
    y = sum(math.cos(d) * math.sin(r) for r, d in directions)
    z = sum(math.sin(d) for _r, d in directions)
    norm = math.sqrt(x * x + y * y + z * z)
    return math.atan2(y, x) % (2 * math.pi), math.asin(z / norm)


def _taper_arcsec(uvtaper: Any) -> float | None:
    values = [v for v in (uvtaper or []) if v not in ("", None)] if isinstance(uvtaper, list) else (
        [uvtaper] if uvtaper not in ("", None) else [])
    if not values:
        return None
    # An elliptical taper [bmaj, bmin, bpa]: its geometric mean stands in for the beam estimate.
    sizes = [parse_angle_arcsec(v) for v in values[:2]]
    return math.sqrt(sizes[0] * sizes[-1])
