"""Layered configuration: defaults < presets (in order) < files (in order) < overrides.

Each layer contributes only the keys it sets explicitly, and a later layer replaces a key
whatever its value. So a file may set ``niter: 0`` to undo a preset's ``niter: 1000`` even though
0 is tclean's default - comparing with defaults (as the published pclean does) cannot tell
"not set" from "set back to the default".
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pclean_provider.config.errors import ConfigError
from pclean_provider.config.model import PcleanConfig, flatten_layer
from pclean_provider.data import PRESETS, packaged_dir

PRESETS_ENV = "PCLEAN_PRESETS_DIR"


def presets_search_path() -> list[Path]:
    """Directories searched for presets: $PCLEAN_PRESETS_DIR entries first, then the packaged ones."""
    dirs = [Path(p) for p in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if p]
    dirs.append(packaged_dir(PRESETS))
    return dirs


def list_presets() -> dict[str, Path]:
    """name -> file; earlier directories on the search path win."""
    found: dict[str, Path] = {}
    for directory in presets_search_path():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.y*ml")):
            if path.suffix in (".yaml", ".yml"):
                found.setdefault(path.stem, path)
    return found


def find_preset(name: str) -> Path:
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in (".yaml", ".yml") else name
    available = list_presets()
    if stem in available:
        return available[stem]
    close = difflib.get_close_matches(stem, list(available), n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    searched = os.pathsep.join(str(d) for d in presets_search_path())
    raise ConfigError(f"preset: no preset named {name!r}{hint}; available: {', '.join(sorted(available)) or 'none'} "
                      f"(searched {searched}; add directories with {PRESETS_ENV})", parameters=["preset"])


def read_yaml_layer(path: str | os.PathLike[str], where: str | None = None) -> dict[str, Any]:
    """One YAML file (flat or grouped) -> the flat parameters it sets."""
    path = Path(path)
    where = where or f"config file {str(path)!r}"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config: {where} does not exist; fix the path", parameters=["config"]) from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {where}: {exc}", parameters=["config"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {where} is not valid YAML: {exc}", parameters=["config"]) from None
    return flatten_layer(data or {}, where)


def load_config(presets: Iterable[str] = (), files: Iterable[str | os.PathLike[str]] = (),
                overrides: Mapping[str, Any] | None = None, *, check_paths: bool = True) -> PcleanConfig:
    """Merge the layers and validate once; ``cfg.sources`` tells which layer set each key."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def apply(layer: dict[str, Any], label: str) -> None:
        for name, value in layer.items():
            merged[name] = value
            sources[name] = label

    for name in presets or ():
        apply(read_yaml_layer(find_preset(name), f"preset {name!r}"), f"preset {name}")
    for path in files or ():
        apply(read_yaml_layer(path), f"file {path}")
    apply(flatten_layer(dict(overrides or {}), "overrides"), "override")

    cfg = PcleanConfig.from_flat(merged, check_paths=check_paths)
    cfg._sources = sources
    return cfg
