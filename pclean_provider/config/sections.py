"""The sections of the configuration and the flat name of every parameter in them.

Below both model.py (which builds PcleanConfig from the sections) and validation_messages.py
(which phrases pydantic's errors by section and field type), so that each imports it at module
level and neither imports the other.
"""

from __future__ import annotations

from pydantic import BaseModel

from pclean_provider.config.cluster import ClusterSpec
from pclean_provider.config.groups import TCLEAN_GROUPS, Extras

# Every section of PcleanConfig, in the order --help and YAML dumps show them.
SECTIONS: dict[str, type[BaseModel]] = {**TCLEAN_GROUPS, "extras": Extras, "cluster": ClusterSpec}


def _flat_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for section, model in SECTIONS.items():
        for name in model.model_fields:
            if name in names:
                raise RuntimeError(f"parameter {name!r} is in both {names[name]!r} and {section!r}")
            names[name] = section
    return names


# Flat parameter name -> its section; derived from the models, never written by hand.
FLAT_NAMES: dict[str, str] = _flat_names()

# tclean's own `parallel` means CASA's MPI mode; pclean's `parallel` (extras) means Dask. The
# engine never hands MPI parallelism to tclean, so the tclean keyword is always False.
TCLEAN_NAMES: tuple[str, ...] = tuple(
    name for name, section in FLAT_NAMES.items() if section in TCLEAN_GROUPS
) + ("parallel",)
