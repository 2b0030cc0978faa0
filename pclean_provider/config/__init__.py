"""Imaging configuration: tclean's parameters as pydantic models, presets and layered loading."""

from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.config.errors import ConfigError
from pclean_provider.config.groups import (
    CUBE_SPECMODES,
    TCLEAN_GROUPS,
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
from pclean_provider.config.layering import find_preset, list_presets, load_config, presets_search_path
from pclean_provider.config.model import PcleanConfig, flat_defaults
from pclean_provider.config.sections import FLAT_NAMES, SECTIONS, TCLEAN_NAMES

__all__ = [
    "CUBE_SPECMODES",
    "FLAT_NAMES",
    "SECTIONS",
    "TCLEAN_GROUPS",
    "TCLEAN_NAMES",
    "ClusterSpec",
    "ConfigError",
    "Deconvolution",
    "Extras",
    "Gridding",
    "Image",
    "Iteration",
    "Misc",
    "Normalization",
    "PcleanConfig",
    "Selection",
    "Spectral",
    "Weighting",
    "find_preset",
    "flat_defaults",
    "list_presets",
    "load_config",
    "presets_search_path",
]
