"""A product below the QA gate, reviewed by a person: the answer, what it may carry, and its record.

The DAG's ``review_decision`` task (dags/tasks/review.py) asks, in the Airflow UI's Required Actions
or through the REST API, for one of three answers:

- **Approve**: publish the product as the ``archive`` task would have;
- **Reject**: keep it in review; the reviewer's note goes into its ticket;
- **Re-image**: image the MS again in a new run of the same pipeline, with a few tclean parameters
  changed (:data:`REIMAGE_FIELDS`).

When nobody answers within the template's ``qa.review_timeout_minutes`` the wait ends by itself and
the product stays in review. This module is the part without Airflow: which answer was given
(:func:`review_outcome`), what the re-image form may set (:func:`check_reimage_overrides`: data
only, a small set of numbers, words and quantities, never code or paths), the re-image run's conf
(:func:`reimage_conf`, judged again by the ordinary run conf policy) and the ticket's record of it
(:func:`record_decision`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pclean_provider.pipeline.conf_paths import RunConfRefused, shown
from pclean_provider.pipeline.conf_policy import CONF_KEYS
from pclean_provider.pipeline.ingest import write_json_atomic

APPROVE, REJECT, REIMAGE = "Approve", "Reject", "Re-image"
OPTIONS = (APPROVE, REJECT, REIMAGE)
# What the wait falls back to when nobody answers in time: the product stays in review.
TIMEOUT_DEFAULT = REJECT
NOTE_FIELD = "note"
MAX_NOTE_CHARS = 4000
MAX_NITER = 100_000_000
MAX_NSIGMA = 1000.0
MAX_QUANTITY_CHARS = 32
WEIGHTINGS = ("natural", "uniform", "briggs", "briggsbwtaper", "briggsabs", "superuniform", "radial")
_FLUX = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*(nJy|uJy|mJy|Jy|kJy)?\s*$")
_WHOLE = re.compile(r"^\s*\d{1,12}\s*$")
_DECIMAL = re.compile(r"^\s*-?(\d{1,12}(\.\d{0,12})?|\.\d{1,12})([eE][+-]?\d{1,3})?\s*$")
_ANGLE = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*(mas|arcsec|arcmin|deg|rad)\s*$")

Action = Literal["approve", "reject", "reimage", "timeout"]

# The re-image form, one entry per tclean parameter it offers: JSON schema of the field (the DAG
# turns each into an Airflow Param; empty means "keep the value the product was imaged with").
REIMAGE_FIELDS: dict[str, dict[str, Any]] = {
    "niter": {"type": ["null", "integer"], "minimum": 0, "maximum": MAX_NITER, "title": "niter",
              "description": "Maximum number of clean iterations (0: a dirty image)."},
    "threshold": {"type": ["null", "string"], "maxLength": MAX_QUANTITY_CHARS, "title": "threshold",
                  "description": "Stop cleaning at this peak residual, e.g. '0.5mJy' (a number is Jy)."},
    "nsigma": {"type": ["null", "number"], "minimum": 0, "maximum": MAX_NSIGMA, "title": "nsigma",
               "description": "Stop cleaning at this many times the residual's noise (0: off)."},
    "cell": {"type": ["null", "string"], "maxLength": MAX_QUANTITY_CHARS, "title": "cell",
             "description": "Pixel size with its unit, e.g. '4arcsec'."},
    "imsize": {"type": ["null", "integer"], "minimum": 8, "title": "imsize",
               "description": "Image size in pixels per axis (within the pipeline's plan.max_imsize)."},
    "weighting": {"type": ["null", "string"], "enum": [None, *WEIGHTINGS], "title": "weighting",
                  "description": "Visibility weighting."},
    "robust": {"type": ["null", "number"], "minimum": -2, "maximum": 2, "title": "robust",
               "description": "Briggs robustness, -2 (uniform-like) to 2 (natural-like)."},
}
NOTE_SCHEMA: dict[str, Any] = {
    "type": ["null", "string"], "maxLength": MAX_NOTE_CHARS, "title": "Note",
    "description": "Why (kept in the product's review ticket); with Reject, what is wrong with it."}


@dataclass
class ReviewOutcome:
    """What one answer to a review asks for."""

    action: Action
    note: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    by: str | None = None


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _numeric_text(value: Any, whole: bool) -> Any:
    """A number a form sent as text ('500', '-0.5') as that number; anything else unchanged."""
    if isinstance(value, str) and (_WHOLE if whole else _DECIMAL).match(value):
        return int(value) if whole else float(value)
    return value


def _number(name: str, value: Any, low: float, high: float) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RunConfRefused(f"overrides.{name}", f"{shown(value)} is not a number")
    if not low <= value <= high:
        raise RunConfRefused(f"overrides.{name}", f"{value} is outside [{low:g}, {high:g}]")
    return value


def _quantity(name: str, value: Any, pattern: re.Pattern[str], example: str) -> str | float | int:
    if name == "threshold" and isinstance(value, int | float) and not isinstance(value, bool):
        return _number(name, value, 0, math.inf)
    if not isinstance(value, str) or len(value) > MAX_QUANTITY_CHARS or not pattern.match(value):
        raise RunConfRefused(f"overrides.{name}", f"{shown(value)} is not a quantity such as {example!r}")
    return value.strip()


def _imsize(value: Any) -> int | list[int]:
    sizes = value if isinstance(value, list) else [value]
    if not 1 <= len(sizes) <= 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        raise RunConfRefused("overrides.imsize", f"{shown(value)} is not a number of pixels, or two of them")
    if min(sizes) < 8:
        raise RunConfRefused("overrides.imsize", f"{min(sizes)} pixels is too small an image (at least 8)")
    return value


def _cell(value: Any) -> str | list[str]:
    if isinstance(value, list):
        if not 1 <= len(value) <= 2:
            raise RunConfRefused("overrides.cell", f"{shown(value)}: give one cell size, or one per axis")
        return [_quantity("cell", v, _ANGLE, "4arcsec") for v in value]  # type: ignore[misc]
    return _quantity("cell", value, _ANGLE, "4arcsec")  # type: ignore[return-value]


def check_reimage_overrides(raw: Any) -> dict[str, Any]:
    """The re-image form's tclean parameters as data: only the names of :data:`REIMAGE_FIELDS`, each of
    its kind and range; empty entries are dropped (they keep the product's value). RunConfRefused names
    the parameter. Image sizes are judged against the pipeline's budget by the run conf policy."""
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise RunConfRefused("overrides", f"a mapping of tclean parameters, e.g. {{\"niter\": 500}}; "
                             f"got {type(raw).__name__}")
    checked: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in REIMAGE_FIELDS:
            raise RunConfRefused(f"overrides.{shown(name, 40)[1:-1]}", "not a parameter a review may change; "
                                 f"it may set: {', '.join(REIMAGE_FIELDS)} (for anything else trigger a run "
                                 "with the pipeline's form)")
        if _empty(value):
            continue
        if name in ("niter", "imsize"):
            value = _numeric_text(value, whole=True)
        elif name in ("nsigma", "robust"):
            value = _numeric_text(value, whole=False)
        if name == "niter":
            if isinstance(value, bool) or not isinstance(value, int):
                raise RunConfRefused("overrides.niter", f"{shown(value)} is not a whole number")
            checked[name] = _number(name, value, 0, MAX_NITER)
        elif name == "nsigma":
            checked[name] = _number(name, value, 0, MAX_NSIGMA)
        elif name == "robust":
            checked[name] = _number(name, value, -2, 2)
        elif name == "weighting":
            if value not in WEIGHTINGS:
                raise RunConfRefused("overrides.weighting", f"{shown(value)} is not one of {', '.join(WEIGHTINGS)}")
            checked[name] = value
        elif name == "threshold":
            checked[name] = _quantity(name, value, _FLUX, "0.5mJy")
        elif name == "cell":
            checked[name] = _cell(value)
        else:
            checked[name] = _imsize(value)
    return checked


def review_outcome(chosen_options: list[str], params_input: dict[str, Any] | None, *, timedout: bool = False,
                   by: str | None = None) -> ReviewOutcome:
    """The action one answer asks for. A timed-out wait is its own action whatever default it
    carries; Re-image checks its overrides; Approve and Reject carry only the note."""
    params = dict(params_input or {})
    note = params.pop(NOTE_FIELD, None)
    if _empty(note):
        note = ""
    elif not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise RunConfRefused(NOTE_FIELD, f"a text of at most {MAX_NOTE_CHARS} characters")
    if timedout:
        return ReviewOutcome("timeout", note=note, by=None)
    if len(chosen_options) != 1 or chosen_options[0] not in OPTIONS:
        raise RunConfRefused("chosen_options", f"{shown(chosen_options, 60)}: answer with one of {', '.join(OPTIONS)}")
    choice = chosen_options[0]
    if choice == REIMAGE:
        return ReviewOutcome("reimage", note=note, overrides=check_reimage_overrides(params), by=by)
    return ReviewOutcome("approve" if choice == APPROVE else "reject", note=note, by=by)


def reimage_conf(run_params: dict[str, Any], vis: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The conf of the run that images ``vis`` again: the reviewed run's own settings (its preset,
    gate, folders, cluster), only that MS, and its imaging overrides with the review's laid over them.
    The new run judges it with the ordinary run conf policy, as the trigger form's."""
    conf = {k: v for k, v in run_params.items() if k in CONF_KEYS}
    earlier = conf.get("overrides") if isinstance(conf.get("overrides"), dict) else {}
    conf.update(vis=vis, overrides={**earlier, **overrides})
    return conf


def record_decision(ticket: Path, outcome: ReviewOutcome, **extra: Any) -> dict[str, Any]:
    """Write the answer into the product's review ticket (atomically: a reader sees the old ticket or
    the new one), keeping the earlier answers; returns the ticket."""
    import json

    data = json.loads(ticket.read_text()) if ticket.exists() else {}
    status = {"approve": "approved", "reject": "rejected", "reimage": "re-imaging",
              "timeout": "no answer; stays in review"}[outcome.action]
    entry = {"action": outcome.action, "by": outcome.by, "note": outcome.note, "overrides": outcome.overrides,
             "at": datetime.now(UTC).isoformat(), **extra}
    data["status"] = status
    data["decisions"] = [*data.get("decisions", []), entry]
    write_json_atomic(ticket, data)
    return data
