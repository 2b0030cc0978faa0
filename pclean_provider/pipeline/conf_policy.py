"""What a DAG run's conf (the trigger form) may set: data, never code.

Whoever may trigger a pipeline DAG is a wider group than whoever administers its Airflow connection
and its pipeline template, so the conf only chooses among what the administrator configured and
sets imaging parameters:

- cluster internals (job script prologue, Python on the nodes, #SBATCH lines, scheduler address,
  directories) come from the connection or the template; the conf may size the cluster with the
  fields of ``config.cluster.CONF_SETTABLE_FIELDS``, within the template's ``cluster.conf_limits``,
  and pick a cluster type only among ``cluster.type`` and ``cluster.conf_types``;
- paths are taken literally (no ``~``, no ``$VARS``: an expanded variable would put a secret of the
  Airflow worker's environment into a folder name, a log and the metadata database), must lie, once
  symbolic links are followed, in the template's data roots (work_dir and archive_dir in their own
  roots), and go on as that real, absolute path (pipeline/conf_paths.py);
- sizes and selections have caps (image axes, channels, spw/field numbers), so that a value such as
  ``spw: "0~99999999999"`` is refused here instead of being expanded by ingest or imaged for days;
- the QA gate may be raised, never lowered below the template's ``qa.gate_floor`` nor the site's
  lowest gate (pipeline/qa_gate.py).

A refusal names the parameter, the rule and the fix; it shows a conf value only cut short and
reduced to harmless characters, since the value itself may be the attack (a newline that forges
log lines, a 1 MB string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pclean_provider.config.cluster import CONF_SETTABLE_FIELDS, memory_bytes
from pclean_provider.config.layering import list_presets
from pclean_provider.config.model import flatten_layer
from pclean_provider.config.sections import FLAT_NAMES, SECTIONS
from pclean_provider.pipeline.conf_paths import (
    UNSHOWN_CHARS,
    RunConfRefused,
    checked_outlier_text,
    confined_mask,
    confined_path,
    private_folder,
    real_roots,
    shown,
)
from pclean_provider.pipeline.pipeline_template import PipelineTemplate

__all__ = ["CONF_KEYS", "CheckedConf", "RunConfRefused", "allowed_roots", "archive_roots", "check_run_conf",
           "confined_path", "shown", "work_roots"]

# Every key the conf may carry, each a field of the trigger form (dags/params.py).
CONF_KEYS = ("vis", "preset", "overrides", "work_dir", "archive_dir", "cluster", "cluster_options", "redo",
             "qa_min_score", "cluster_connection_id", "qa_thresholds")
# Imaging parameters that name files or folders (mask only when it is not region text).
OVERRIDE_PATHS = ("startmodel", "outlierfile", "vptable", "cfcache", "mask")
# Imaging parameters the pipeline sets itself from ingest and the work directory.
PIPELINE_SET = ("vis", "imagename")
# Data selections: text that CASA's MS selection parses. Longer is a mistake or an attack; one entry per
# MS at most in a list.
SELECTIONS = ("spw", "field", "scan", "observation", "antenna", "timerange", "uvrange", "intent")
MAX_SELECTION_CHARS = 1024
MAX_SELECTION_ITEMS = 64
# Selections whose numbers are ids or channels: no MeasurementSet has a million spectral windows,
# fields, scans or channels in one window, so a larger number is a typo (or a range meant to be
# expanded into memory), refused before ingest reads it.
NUMBERED_SELECTIONS = ("spw", "field", "scan", "observation")
MAX_SELECTION_NUMBER = 1_000_000
# The smallest image a plan makes (plan_policy.max_imsize's lower bound): a cube's channels are capped by
# the template's size budget even where the image size is left to the plan.
SMALLEST_IMAGE = 64

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_NUMBER = re.compile(r"\d+")
# A selection item that ends in a unit ('1420000000~1421000000Hz', '1.4GHz', '-20~20km/s') names
# frequencies or velocities, not ids or channels.
_WITH_UNIT = re.compile(r"[0-9.]\s*[A-Za-z/]+\s*$")


@dataclass
class CheckedConf:
    """The conf after the policy: paths real and confined, every value of the right type."""

    vis: Path | None = None
    work_dir: Path | None = None
    archive_dir: Path | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    cluster_type: str | None = None  # None: the connection's type
    cluster_options: dict[str, Any] = field(default_factory=dict)
    cluster_connection_id: str | None = None
    redo: bool = False
    qa_min_score: float = 0.66


#: The trigger form's cluster choice that means "the connection's type".
CONNECTION_CHOICE = "connection"


def allowed_roots(template: PipelineTemplate, data_root: Path) -> list[Path]:
    """The template's data_roots, else the data root and any of the template's areas outside it;
    real paths, so a symbolic link cannot stand in for a root."""
    if template.data_roots:
        return real_roots(template.resolve(r, data_root) for r in template.data_roots)
    return real_roots([data_root, *template.paths(data_root).values()])


def work_roots(template: PipelineTemplate, data_root: Path) -> list[Path]:
    """Where a run's conf work_dir may point: the template's work_roots, else its work_dir."""
    return real_roots(template.resolve(r, data_root) for r in template.work_roots or [template.work_dir])


def archive_roots(template: PipelineTemplate, data_root: Path) -> list[Path]:
    """Where a run's conf archive_dir may point: the template's archive_roots, else its archive_dir."""
    return real_roots(template.resolve(r, data_root) for r in template.archive_roots or [template.archive_dir])


def _check_name(parameter: str, key: Any) -> str:
    if not isinstance(key, str) or not _NAME.match(key):
        raise RunConfRefused(parameter, f"{shown(key)} is not a parameter name")
    return key


def _check_overrides(template: PipelineTemplate, raw: Any, roots: list[Path], data_root: Path) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise RunConfRefused("overrides", f"a mapping of imaging parameters, e.g. {{\"nchan\": 16}}; "
                             f"got {type(raw).__name__}")
    for key, value in raw.items():
        _check_name("overrides", key)
        if key in SECTIONS and isinstance(value, dict):
            for inner in value:
                _check_name(f"overrides.{key}", inner)
    flat = flatten_layer(raw, "overrides")
    for name, value in flat.items():
        where = f"overrides.{name}"
        if FLAT_NAMES.get(name) == "cluster":
            raise RunConfRefused(where, "cluster settings are not imaging parameters; size the cluster with "
                                 f"cluster_options ({', '.join(CONF_SETTABLE_FIELDS)})")
        if name in PIPELINE_SET:
            raise RunConfRefused(where, "the pipeline sets it (vis: the run's vis or the landing area; "
                                 "imagename: under work_dir); leave it out of overrides")
        if name in SELECTIONS:
            _check_selection(where, name, value)
    resolved = {name: _resolved_paths(template, name, value, roots, data_root)
                for name, value in flat.items() if name in OVERRIDE_PATHS}
    _check_sizes(template, flat)
    # The values as given (prepare validates them as imaging parameters), except that every path is the
    # real, absolute path judged here: a relative one would be read against a worker's cwd.
    return {**flat, **resolved}


def _resolved_paths(template: PipelineTemplate, name: str, value: Any, roots: list[Path], data_root: Path) -> Any:
    where = f"overrides.{name}"
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if item in ("", None):
            out.append(item)
        elif name == "mask":
            out.append(confined_mask(where, item, roots, data_root))
        else:
            path = confined_path(where, item, roots, data_root)
            if name == "outlierfile":
                # Refused now, before anything runs; prepare images from a checked copy of this file.
                checked_outlier_text(path, roots, work_roots(template, data_root), data_root, where)
            out.append(str(path))
    return out if isinstance(value, list) else out[0]


def _check_selection(where: str, name: str, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_SELECTION_ITEMS:
        raise RunConfRefused(where, f"{len(items)} selections; give one, or one per MeasurementSet (at most "
                             f"{MAX_SELECTION_ITEMS})")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise RunConfRefused(where, f"{shown(item)} is not a selection; write it as text, e.g. '0~3'")
        text = str(item)
        if len(text) > MAX_SELECTION_CHARS:
            raise RunConfRefused(where, f"{shown(text)} is {len(text)} characters long; a selection is at most "
                                 f"{MAX_SELECTION_CHARS} (use ranges such as '0~3')")
        if name in NUMBERED_SELECTIONS:
            # Text length first: Python's int() refuses (slowly) numbers of thousands of digits.
            big = [n for part in re.split(r"[,;:]", text) if not _WITH_UNIT.search(part)
                   for n in _NUMBER.findall(part) if len(n) > 7 or int(n) > MAX_SELECTION_NUMBER]
            if big:
                raise RunConfRefused(where, f"{shown(text)} names {shown(big[0], 16)}, beyond any MeasurementSet "
                                     f"(at most {MAX_SELECTION_NUMBER:,} spectral windows, fields, scans or "
                                     "channels); select what the MS holds (pclean ingest lists it)")


def _image_axes(value: Any) -> list[int] | None:
    sizes = value if isinstance(value, list) else [value]
    if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        return None  # not a size: prepare's validation says what imsize takes
    return sizes


def _check_sizes(template: PipelineTemplate, flat: dict[str, Any]) -> None:
    """Image axes within the template's plan.max_imsize, and a cube within its plan.max_cube_gb: a run's
    conf cannot make the cluster grid (or the disk hold) what the administrator's budget never allowed."""
    budget = template.plan
    axes = _image_axes(flat["imsize"]) if "imsize" in flat else None
    if axes and max(axes) > budget.max_imsize:
        raise RunConfRefused("overrides.imsize", f"{max(axes)} pixels is above this pipeline's limit of "
                             f"{budget.max_imsize} per axis (the template's plan.max_imsize); ask for a smaller "
                             "image or a coarser cell")
    nchan = flat.get("nchan")
    if isinstance(nchan, int) and not isinstance(nchan, bool) and nchan > 0:
        if axes is None:
            axes = _image_axes(template.overrides.get("imsize")) or [SMALLEST_IMAGE]
        nx, ny = axes[0], axes[-1]
        cube_gb = nchan * nx * ny * 4 / 1e9
        if cube_gb > budget.max_cube_gb:
            most = max(1, int(budget.max_cube_gb * 1e9 / (4 * nx * ny)))
            raise RunConfRefused("overrides.nchan", f"{nchan} channels of {nx}x{ny} pixels make a {cube_gb:,.0f} GB "
                                 f"cube, above this pipeline's {budget.max_cube_gb:g} GB (the template's "
                                 f"plan.max_cube_gb); ask for at most {most:,} channels at that size")


def _positive_int(parameter: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RunConfRefused(parameter, f"{shown(value)} is not a whole number of at least 1")
    if value > most:
        raise RunConfRefused(parameter, f"{value} is above this pipeline's limit of {most} "
                             "(the template's cluster.conf_limits)")
    return value


def _memory(parameter: str, value: Any, most: str, zero_ok: bool) -> str:
    try:
        size = memory_bytes(value)
    except ValueError as exc:
        raise RunConfRefused(parameter, f"{shown(value)}: {exc}") from None
    if size == 0 and zero_ok:
        return str(value)  # memory_limit '0': Dask's memory manager off, no memory asked for
    if size <= 0 or size > memory_bytes(most):
        raise RunConfRefused(parameter, f"{shown(value)} is outside (0, {most}], this pipeline's limit per "
                             "worker (the template's cluster.conf_limits.max_worker_memory)")
    return str(value)


def _check_cluster_options(template: PipelineTemplate, raw: Any) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise RunConfRefused("cluster_options", f"a mapping, e.g. {{\"nworkers\": 4}}; got {type(raw).__name__}")
    limits = template.cluster.conf_limits
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in CONF_SETTABLE_FIELDS:
            raise RunConfRefused(
                f"cluster_options.{UNSHOWN_CHARS.sub('?', str(key)[:40])}",
                "not settable from the run conf: cluster internals (job script, Python, SLURM directives, "
                "cluster type, scheduler address, directories) come from the Airflow connection or the "
                f"pipeline template. The run conf may set: {', '.join(CONF_SETTABLE_FIELDS)}")
        where = f"cluster_options.{key}"
        if key == "nworkers":
            checked[key] = _positive_int(where, value, limits.max_nworkers)
        elif key == "threads_per_worker":
            checked[key] = _positive_int(where, value, limits.max_threads_per_worker)
        else:
            checked[key] = _memory(where, value, limits.max_worker_memory, zero_ok=key == "memory_limit")
    return checked


def _check_preset(template: PipelineTemplate, raw: Any) -> str | None:
    if raw is None or raw in ("", "none"):
        return None
    if raw == template.preset:
        return raw
    available = sorted(list_presets())
    if not isinstance(raw, str) or raw not in available:
        raise RunConfRefused("preset", f"{shown(raw)} is not one of the installed presets "
                             f"({', '.join(available) or 'none'}); choose one of them or 'none'")
    return raw


def _check_qa_min_score(template: PipelineTemplate, raw: Any) -> float:
    if raw is None:
        return template.qa.gate_min_score
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != raw:
        raise RunConfRefused("qa_min_score", f"{shown(raw)} is not a number between 0 and 1")
    floor = template.qa.floor()
    if raw < floor or raw > 1:
        raise RunConfRefused("qa_min_score", f"{raw} is outside [{floor}, 1]: a run may raise the QA gate, "
                             f"never lower it below this pipeline's floor {floor} (the template's qa.gate_floor)")
    return float(raw)


def _changed(raw: Any, template_values: dict[str, Any]) -> Any:
    """A conf mapping without the entries that equal the template's (anything else as it came)."""
    if not isinstance(raw, dict):
        return raw
    return {k: v for k, v in raw.items() if k not in template_values or template_values[k] != v}


def check_run_conf(template: PipelineTemplate, params: dict[str, Any], data_root: Path) -> CheckedConf:
    """The conf judged against the template; RunConfRefused at the first thing it may not set."""
    unknown = sorted(UNSHOWN_CHARS.sub("?", str(k)[:40]) for k in params if k not in CONF_KEYS)
    if unknown:
        raise RunConfRefused(unknown[0], f"not a setting of this pipeline's run conf (also unknown: "
                             f"{', '.join(unknown[1:5]) or 'none'}); the run conf takes: {', '.join(CONF_KEYS)}")
    roots = allowed_roots(template, data_root)
    checked = CheckedConf()
    # Each path where its kind belongs: reads anywhere in the data roots, writes only in their own roots
    # (a run's products never land in the archive, the landing area or another pipeline's folders).
    for key, key_roots, what in (
            ("vis", roots, "data roots"),
            ("work_dir", work_roots(template, data_root), "work roots"),
            ("archive_dir", archive_roots(template, data_root), "archive roots")):
        value = params.get(key)
        if value not in (None, ""):
            where = f"the template's {what.replace(' ', '_')}"
            path = confined_path(key, value, key_roots, data_root, what=what, where=where)
            setattr(checked, key, path if key == "vis" else private_folder(key, path, key_roots))
    checked.preset = _check_preset(template, params.get("preset", template.preset))
    # The form shows the template's own values as its defaults; those are the administrator's, not
    # the run's, so only what the run changed is judged (settings_for_run lays it over the template).
    checked.overrides = _check_overrides(template, _changed(params.get("overrides"), template.overrides),
                                         roots, data_root)

    # Empty (or the form's "connection") keeps the template's choice; a template that pins no type
    # leaves it to its connection.
    cluster = params.get("cluster") or None
    if cluster == CONNECTION_CHOICE:
        cluster = None
    cluster = cluster or template.cluster.type
    allowed_types = [t for t in dict.fromkeys([template.cluster.type, *template.cluster.conf_types]) if t]
    if cluster is not None and cluster not in allowed_types:
        allowed = ", ".join(allowed_types) or f"none (the connection {template.cluster.connection_id} decides)"
        raise RunConfRefused("cluster", f"{shown(cluster)} is not a cluster type this pipeline lets a run "
                             f"choose; allowed: {allowed} (the template's cluster.type and cluster.conf_types)")
    checked.cluster_type = cluster
    checked.cluster_options = _check_cluster_options(
        template, _changed(params.get("cluster_options"), template.cluster.options))

    connection = params.get("cluster_connection_id")
    if connection not in (None, "", template.cluster.connection_id):
        raise RunConfRefused("cluster_connection_id", f"{shown(connection)} is not this pipeline's "
                             f"connection ({template.cluster.connection_id or 'none'}); the cluster's "
                             "connection is set in the template (cluster.connection_id)")
    checked.cluster_connection_id = template.cluster.connection_id
    thresholds = params.get("qa_thresholds")
    if thresholds not in (None, {}) and thresholds != template.qa.thresholds:
        raise RunConfRefused("qa_thresholds", "the QA thresholds are set in the template (qa.thresholds); a run "
                             "may move the gate with qa_min_score")

    redo = params.get("redo", False)
    if not isinstance(redo, bool):
        raise RunConfRefused("redo", f"{shown(redo)} is not true or false")
    checked.redo = redo
    checked.qa_min_score = _check_qa_min_score(template, params.get("qa_min_score"))
    return checked
