"""Runtime data shipped inside the package: imaging presets, pipeline templates, SLURM templates.

Looked up with importlib.resources, so an installed wheel finds them exactly as a checkout does.
A site adds or replaces files through the environment variables named where each kind is read
(presets: ``PCLEAN_PRESETS_DIR``; pipeline templates: ``PCLEAN_PIPELINES_DIR``; the coordinator
job template: ``PCLEAN_SBATCH_TEMPLATE``); the packaged copy is the default.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PRESETS = "presets"
PIPELINES = "pipelines"
SLURM = "slurm"


def packaged_dir(kind: str) -> Path:
    """The packaged folder of one kind of data (PRESETS, PIPELINES or SLURM) as a real path."""
    folder = resources.files(__name__) / kind
    # Providers are installed unpacked (wheels, editable checkouts); a zipped install would need
    # every reader to copy files out first, which nothing here supports.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise FileNotFoundError(f"the packaged data folder {kind!r} of pclean_provider is missing "
                                f"({folder}); reinstall the provider from its wheel")
    return folder
