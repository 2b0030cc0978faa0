"""PcleanConfig: the whole imaging configuration (tclean's groups, pclean's extras, the cluster).

Users speak tclean's flat keyword arguments; the model keeps them in groups so that each part of
the engine takes only what it needs. ``FLAT_NAMES`` (config.sections, derived from the models,
never written by hand) maps each flat name to its group, in both directions.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.config.errors import ConfigError
from pclean_provider.config.groups import (
    CUBE_SPECMODES,
    MFS_ONLY_DECONVOLVERS,
    MFS_SPECMODES,
    Deconvolution,
    Extras,
    Gridding,
    Image,
    Iteration,
    Misc,
    Normalization,
    Selection,
    Spectral,
    Weighting,
)
from pclean_provider.config.sections import FLAT_NAMES, SECTIONS, TCLEAN_NAMES
from pclean_provider.config.validation_messages import translate_validation_error

# Parameters holding paths that tclean resolves against its working directory; workers run
# elsewhere, so they are made absolute. `mask` is only a path when it names an existing file
# (it may also be region text).
_PATH_PARAMETERS = ("startmodel", "outlierfile", "vptable", "cfcache")


def suggest(name: str, candidates: list[str] | tuple[str, ...] | Mapping[str, Any]) -> str:
    """' (did you mean 'niter'?)' or '' - the tail of an unknown-name message."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def unknown_parameter_error(name: str, where: str = "") -> ConfigError:
    place = f" in {where}" if where else ""
    return ConfigError(
        f"{name}: unknown parameter{place}{suggest(name, FLAT_NAMES)}; `pclean --help` lists them all",
        parameters=[name],
    )


def group_flat(flat: Mapping[str, Any], where: str = "") -> dict[str, dict[str, Any]]:
    """{'niter': 5, 'nworkers': 2} -> {'iteration': {'niter': 5}, 'cluster': {'nworkers': 2}}."""
    grouped: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        section = FLAT_NAMES.get(name)
        if section is None:
            raise unknown_parameter_error(name, where)
        grouped.setdefault(section, {})[name] = value
    return grouped


def flatten_layer(data: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
    """A flat or grouped mapping (YAML preset, config file, overrides) -> flat explicit settings.

    A key that names a section and holds a mapping is a group (``weighting`` is both a group
    and a parameter: ``weighting: briggs`` is the parameter, ``weighting: {robust: 0}`` the group).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'configuration'} must be a mapping of parameter names to values, "
                          f"not {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, Mapping):
            for name, inner in value.items():
                name = str(name)
                section = FLAT_NAMES.get(name)
                if section is None:
                    raise unknown_parameter_error(name, f"{where} group {key!r}" if where else f"group {key!r}")
                if section != key:
                    raise ConfigError(f"{name}: belongs to group {section!r}, not {key!r}"
                                      f"{' in ' + where if where else ''}; move it there or write it flat",
                                      parameters=[name])
                flat[name] = inner
        elif key in FLAT_NAMES:
            flat[key] = value
        elif key in SECTIONS:
            raise ConfigError(f"{key}: group {key!r}{' in ' + where if where else ''} must be a mapping "
                              f"of its parameters", parameters=[key])
        else:
            raise unknown_parameter_error(key, where)
    return flat


def _is_existing_path(value: str) -> bool:
    return bool(value) and os.path.exists(os.path.expanduser(value))


def _absolute(value: Any, only_existing: bool = False) -> Any:
    if isinstance(value, list):
        return [_absolute(v, only_existing) for v in value]
    if not isinstance(value, str) or value == "":
        return value
    if only_existing and not _is_existing_path(value):
        return value
    return os.path.abspath(os.path.expanduser(value))


class _ConfigDumper(yaml.SafeDumper):
    """Block mappings (one parameter per line) with lists inline, as people write them by hand."""


_ConfigDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


class PcleanConfig(BaseModel):
    """Everything one pclean/tclean run needs. Build it with ``from_flat`` or ``load_config``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    selection: Selection = Field(default_factory=Selection)
    image: Image = Field(default_factory=Image)
    spectral: Spectral = Field(default_factory=Spectral)
    gridding: Gridding = Field(default_factory=Gridding)
    weighting: Weighting = Field(default_factory=Weighting)
    deconvolution: Deconvolution = Field(default_factory=Deconvolution)
    iteration: Iteration = Field(default_factory=Iteration)
    normalization: Normalization = Field(default_factory=Normalization)
    misc: Misc = Field(default_factory=Misc)
    extras: Extras = Field(default_factory=Extras)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)

    # flat name -> the layer that set it ('preset quicklook_continuum', 'file x.yaml', 'override').
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    # -- construction ------------------------------------------------------------------------
    # No __init__ override: pydantic would then validate through __init__ and drop the validation
    # context (check_paths). Direct construction raises pydantic's ValidationError (a ValueError);
    # the classmethods below translate it into ConfigError.
    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> PcleanConfig:  # type: ignore[override]
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise translate_validation_error(exc, FLAT_NAMES) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> PcleanConfig:  # type: ignore[override]
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise translate_validation_error(exc, FLAT_NAMES) from None

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any] | None = None, /, *, check_paths: bool = True,
                  **kwargs: Any) -> PcleanConfig:
        """tclean-style keyword arguments (plus pclean's extras and cluster knobs) -> config.

        ``check_paths=False`` skips the MeasurementSet existence check, for configs built where
        the data is not visible (a DAG file parsed on the scheduler).
        """
        merged = {**(flat or {}), **kwargs}
        grouped = group_flat(merged)
        return cls.model_validate(grouped, context={"check_paths": check_paths})

    @classmethod
    def from_yaml(cls, text: str, *, check_paths: bool = True) -> PcleanConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration is not valid YAML: {exc}") from None
        return cls.from_flat(flatten_layer(data), check_paths=check_paths)

    def replace(self, *, check_paths: bool = True, **changes: Any) -> PcleanConfig:
        """A validated copy with some flat parameters changed (e.g. a sub-cube's start and nchan)."""
        new = type(self).from_flat({**self.to_flat(), **changes}, check_paths=check_paths)
        new._sources = dict(self._sources)
        return new

    # -- cross-group checks: the combinations tclean refuses, caught before any work ----------
    @model_validator(mode="after")
    def _check_combinations(self) -> PcleanConfig:
        specmode = self.spectral.specmode
        deconvolver = self.deconvolution.deconvolver
        if deconvolver in MFS_ONLY_DECONVOLVERS and specmode in CUBE_SPECMODES:
            raise ConfigError(
                f"deconvolver={deconvolver!r} cannot make a cube (specmode={specmode!r}); use "
                "specmode='mfs' for a wideband continuum image, or deconvolver='hogbom' or "
                "'multiscale' for a cube", parameters=["deconvolver", "specmode"])
        if specmode == "mvc" and (deconvolver != "mtmfs" or self.deconvolution.nterms <= 1):
            raise ConfigError("specmode='mvc' needs deconvolver='mtmfs' and nterms >= 2; set them, or use "
                              "specmode='mfs'", parameters=["specmode", "deconvolver", "nterms"])
        weighting = self.weighting.weighting
        if weighting == "briggsbwtaper" and specmode in MFS_SPECMODES:
            raise ConfigError("weighting='briggsbwtaper' works only for cubes; use weighting='briggs' with "
                              f"specmode={specmode!r}", parameters=["weighting", "specmode"])
        if weighting == "briggsbwtaper" and self.weighting.npixels != 0:
            raise ConfigError("weighting='briggsbwtaper' needs npixels=0; set npixels=0 or use "
                              "weighting='briggs'", parameters=["npixels", "weighting"])
        gridder = self.gridding.gridder
        if specmode == "mvc" and gridder == "awproject" and (self.gridding.conjbeams or not self.gridding.wbawp):
            raise ConfigError("specmode='mvc' with gridder='awproject' needs conjbeams=False and wbawp=True",
                              parameters=["conjbeams", "wbawp"])
        if specmode == "mvc" and gridder == "mosaic" and self.gridding.conjbeams:
            raise ConfigError("specmode='mvc' with gridder='mosaic' needs conjbeams=False",
                              parameters=["conjbeams"])
        return self

    def __eq__(self, other: object) -> bool:
        # Same parameters = same config, whichever layers they came from (pydantic would also
        # compare the private provenance).
        if not isinstance(other, PcleanConfig):
            return NotImplemented
        return self.to_grouped() == other.to_grouped()

    __hash__ = None  # type: ignore[assignment]

    # -- views -------------------------------------------------------------------------------
    @property
    def is_cube(self) -> bool:
        return self.spectral.specmode in CUBE_SPECMODES

    @property
    def sources(self) -> dict[str, str]:
        """Which layer set each explicitly set parameter (empty for configs not from load_config)."""
        return dict(self._sources)

    def to_flat(self) -> dict[str, Any]:
        """Every parameter, flat, tclean names plus extras and cluster knobs."""
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            flat.update(getattr(self, section).model_dump(mode="python"))
        return flat

    def to_grouped(self) -> dict[str, dict[str, Any]]:
        return {section: getattr(self, section).model_dump(mode="json") for section in SECTIONS}

    def tclean_kwargs(self) -> dict[str, Any]:
        """Exactly the keyword arguments of casatasks.tclean, with paths made absolute."""
        flat = self.to_flat()
        kwargs = {name: flat[name] for name in TCLEAN_NAMES if name != "parallel"}
        kwargs["parallel"] = False
        kwargs["imagename"] = _absolute(kwargs["imagename"])
        for name in _PATH_PARAMETERS:
            kwargs[name] = _absolute(kwargs[name])
        kwargs["mask"] = _absolute(kwargs["mask"], only_existing=True)
        return kwargs

    def to_yaml(self, header: str | None = None) -> str:
        """Grouped YAML with every parameter; ``from_yaml`` reads it back to an equal config."""
        text = yaml.dump(self.to_grouped(), Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True)
        if header:
            text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
        return text

    def require_runnable(self) -> None:
        """Raise ConfigError unless the config names its input and output (defaults leave both empty)."""
        missing = []
        if self.selection.vis in ("", []):
            missing.append("vis")
        if not self.image.imagename:
            missing.append("imagename")
        if missing:
            raise ConfigError(" and ".join(missing) + " must be set, e.g. vis='target.ms' imagename='out/target'",
                              parameters=missing)


def flat_defaults() -> dict[str, Any]:
    """Every parameter's default, flat (from the models; what --help shows)."""
    return PcleanConfig().to_flat()
