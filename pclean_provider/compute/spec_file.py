"""Read a ClusterSpec from a YAML or JSON file (the `pclean cluster up --spec FILE` input)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from pclean_provider.compute.errors import ClusterError
from pclean_provider.config.cluster import ClusterSpec


def load_spec_file(path: str | Path) -> ClusterSpec:
    """The file holds the spec's fields at top level, or under a ``cluster:`` key (a pclean config)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClusterError(f"cannot read the cluster spec file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ClusterError(f"the cluster spec file {path} is not valid YAML/JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ClusterError(f"the cluster spec file {path} must hold a mapping of ClusterSpec fields "
                           f"(cluster_type, nworkers, slurm_queue, ...), not {type(data).__name__}")
    if isinstance(data.get("cluster"), dict):
        data = data["cluster"]
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors())
        raise ClusterError(f"the cluster spec file {path} is not a valid ClusterSpec: {problems}") from None


def with_absolute_paths(spec: ClusterSpec, base: Path | None = None) -> ClusterSpec:
    """Relative folders resolved now, so that a process started elsewhere finds the same ones."""
    base = (base or Path.cwd()).resolve()
    update = {}
    for name in ("local_directory", "slurm_local_directory", "slurm_log_directory"):
        value = getattr(spec, name)
        if value and not Path(value).expanduser().is_absolute():
            update[name] = str(base / Path(value).expanduser())
    return spec.model_copy(update=update) if update else spec
