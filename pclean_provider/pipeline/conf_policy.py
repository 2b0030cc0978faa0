"""What a DAG run's conf (the trigger form) may set: data, never code.

Whoever may trigger a pipeline DAG is a wider group than whoever administers its Airflow connection
and its pipeline template, so the conf only chooses among what the administrator configured and
sets imaging parameters:

- cluster internals (job script prologue, Python on the nodes, #SBATCH lines, scheduler address,
  directories) come from the connection or the template; the conf may size the cluster with the
  fields of ``config.cluster.CONF_SETTABLE_FIELDS``, within the template's ``cluster.conf_limits``,
  and pick a cluster type only among ``cluster.type`` and ``cluster.conf_types``;
- paths are taken literally (no ``~``, no ``$VARS``: an expanded variable would put a secret of the
  Airflow worker's environment into a folder name, a log and the metadata database) and must lie,
  once symbolic links are followed, in the template's data roots;
- the QA gate may be raised, never lowered below the template's ``qa.gate_floor``.

A refusal names the parameter, the rule and the fix; it shows a conf value only cut short and
reduced to harmless characters, since the value itself may be the attack (a newline that forges
log lines, a 1 MB string).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pclean_provider.config.cluster import CONF_SETTABLE_FIELDS, memory_bytes
from pclean_provider.config.layering import list_presets
from pclean_provider.config.model import flatten_layer
from pclean_provider.config.sections import FLAT_NAMES, SECTIONS
from pclean_provider.errors import PcleanInputError
from pclean_provider.pipeline.pipeline_template import PipelineTemplate

# Every key the conf may carry, each a field of the trigger form (dags/params.py).
CONF_KEYS = ("vis", "preset", "overrides", "work_dir", "archive_dir", "cluster", "cluster_options", "redo",
             "qa_min_score", "cluster_connection_id", "qa_thresholds")
CONF_PATHS = ("vis", "work_dir", "archive_dir")
# Imaging parameters that name files or folders (mask only when it is not region text).
OVERRIDE_PATHS = ("startmodel", "outlierfile", "vptable", "cfcache", "mask")
# Imaging parameters the pipeline sets itself from ingest and the work directory.
PIPELINE_SET = ("vis", "imagename")

_SHOWN = re.compile(r"[^A-Za-z0-9._/:+=@,-]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class RunConfRefused(PcleanInputError):
    """The run's conf asks for something the trigger form may not set."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def shown(value: Any, limit: int = 32) -> str:
    """A conf value as a refusal may show it: at most ``limit`` characters, each outside a small
    safe set replaced by '?', quoted; longer values end in '...'."""
    text = value if isinstance(value, str) else repr(value)
    cut = _SHOWN.sub("?", text[:limit])
    return f"'{cut}{'...' if len(text) > limit else ''}'"


@dataclass
class CheckedConf:
    """The conf after the policy: paths real and confined, every value of the right type."""

    vis: Path | None = None
    work_dir: Path | None = None
    archive_dir: Path | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    cluster_type: str = "local"
    cluster_options: dict[str, Any] = field(default_factory=dict)
    cluster_connection_id: str | None = None
    redo: bool = False
    qa_min_score: float = 0.66


def allowed_roots(template: PipelineTemplate, data_root: Path) -> list[Path]:
    """The template's data_roots, else the data root and any of the template's areas outside it;
    real paths, so a symbolic link cannot stand in for a root."""
    if template.data_roots:
        roots = [template.resolve(r, data_root) for r in template.data_roots]
    else:
        roots = [data_root, *template.paths(data_root).values()]
    real: list[Path] = []
    for root in roots:
        r = Path(os.path.realpath(root))  # type: ignore[arg-type]
        if not any(r == k or r.is_relative_to(k) for k in real):
            real = [k for k in real if not k.is_relative_to(r)] + [r]
    return real


def confined_path(parameter: str, value: Any, roots: list[Path], data_root: Path) -> Path:
    """A path from the conf, taken literally, relative ones under the data root; its real path
    (links followed, '..' gone) must lie in one of ``roots``."""
    if not isinstance(value, str):
        raise RunConfRefused(parameter, f"a path is a string, not {type(value).__name__}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise RunConfRefused(parameter, f"{shown(value)} holds control characters; write a plain path")
    if "$" in value or value.startswith("~"):
        raise RunConfRefused(parameter, f"{shown(value)}: paths from the run conf are taken literally, "
                             "never expanded ($VARS, ~); write the path out in full")
    path = Path(value)
    real = Path(os.path.realpath(path if path.is_absolute() else data_root / path))
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise RunConfRefused(parameter, f"{shown(value)} is outside the pipeline's data roots "
                             f"({', '.join(str(r) for r in roots)}); name a path inside one of them "
                             "(the template's data_roots says which)")
    return real


def _check_name(parameter: str, key: Any) -> str:
    if not isinstance(key, str) or not _NAME.match(key):
        raise RunConfRefused(parameter, f"{shown(key)} is not a parameter name")
    return key


def _check_overrides(raw: Any, roots: list[Path], data_root: Path) -> dict[str, Any]:
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
        if name in OVERRIDE_PATHS:
            for item in value if isinstance(value, list) else [value]:
                if item in ("", None):
                    continue
                if name == "mask" and isinstance(item, str) and "[" in item:
                    continue  # region text (circle[[...]]), not a file
                confined_path(where, item, roots, data_root)
    # The values as given: prepare validates them as imaging parameters; only paths were judged here.
    return dict(raw)


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
                f"cluster_options.{_SHOWN.sub('?', str(key)[:40])}",
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
    unknown = sorted(_SHOWN.sub("?", str(k)[:40]) for k in params if k not in CONF_KEYS)
    if unknown:
        raise RunConfRefused(unknown[0], f"not a setting of this pipeline's run conf (also unknown: "
                             f"{', '.join(unknown[1:5]) or 'none'}); the run conf takes: {', '.join(CONF_KEYS)}")
    roots = allowed_roots(template, data_root)
    checked = CheckedConf()
    for key in CONF_PATHS:
        value = params.get(key)
        if value not in (None, ""):
            setattr(checked, key, confined_path(key, value, roots, data_root))
    checked.preset = _check_preset(template, params.get("preset", template.preset))
    # The form shows the template's own values as its defaults; those are the administrator's, not
    # the run's, so only what the run changed is judged (settings_for_run lays it over the template).
    checked.overrides = _check_overrides(_changed(params.get("overrides"), template.overrides), roots, data_root)

    cluster = params.get("cluster") or template.cluster.type
    allowed_types = [template.cluster.type, *[c for c in template.cluster.conf_types if c != template.cluster.type]]
    if cluster not in allowed_types:
        raise RunConfRefused("cluster", f"{shown(cluster)} is not a cluster type this pipeline lets a run "
                             f"choose; allowed: {', '.join(allowed_types)} (the template's cluster.type and "
                             "cluster.conf_types)")
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
