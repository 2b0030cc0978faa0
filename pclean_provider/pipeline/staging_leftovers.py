"""Staging folders that a killed or failed imaging run leaves beside its image name, found and removed.

The engine writes every product under a staging name and renames it into place; a coordinator that is
killed (SIGKILL, its worker lost, a cancelled try whose subprocess ran on) or that fails on a full
disk leaves that staging behind, and each retry would add another (a continuum staging holds a copy of
every product and the part images). Nothing reads them again, so whoever starts the next writer of the
same image name, or ends the run, removes them:

* an imaging operator, just before it submits a new try's work (the older tries' work was withdrawn
  a moment before; a new try supersedes every earlier writer of its image name);
* the nightly DAG's cluster teardown, once the run's cluster is down (no writer of the run is left),
  over the run folder, exact cubes and continuum only: a fan-out run keeps its sub-cubes, which a
  clear of one batch task reuses.

The names are the engine's (atomic_files.staged and staging_name, used by the continuum run, the
concatenation and the common-beam restore; atomic_files.replace_dir's fallback); a staging that carries
its owner (``.tmp-<host>-<pid>-``, as every engine writer names its own) is left alone while that
process lives on this machine.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from pclean_provider.atomic_files import STAGING_MARK, owner_alive
from pclean_provider.products import SUBCUBES

log = logging.getLogger(__name__)

# A product suffix as a chain of the words CASA and pclean name products with (.image, .image.tt0,
# .alpha.error, .image.pbcor, .workdirectory, ...): tight enough that another image name sharing the
# prefix (night.cube.v2 beside night.cube) is never taken for a product of this one.
_SUFFIX = r"(?:\.(?:image|residual|model|psf|pb|sumwt|weight|mask|alpha|error|beta|pbcor|tt\d+|workdirectory))*"


def _patterns(base: str) -> list[re.Pattern[str]]:
    b = re.escape(base)
    return [
        # a run's staging folder (continuum, the common-beam restore), a staged product
        re.compile(rf"^\.{b}{_SUFFIX}{re.escape(STAGING_MARK)}.+$"),
        re.compile(rf"^{b}{_SUFFIX}\.old-[0-9a-f]{{8}}$"),              # a replaced folder not yet removed
    ]


def staging_leftovers(imagename: str | os.PathLike[str]) -> list[Path]:
    """The staging entries beside ``imagename`` that its writers leave when they die, oldest name first."""
    parent, base = os.path.split(os.path.abspath(os.fspath(imagename)))
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    patterns = _patterns(base)
    return [Path(parent, n) for n in names if any(p.match(n) for p in patterns)]


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        # Left for the next sweep; the new try's own staging has a name of its own either way.
        log.warning("could not remove the staging leftover %s: %s", path, exc)
        return False


def sweep_staging_leftovers(imagename: str | os.PathLike[str], *, subcubes: bool = False) -> list[Path]:
    """Remove what dead writers of ``imagename`` left (with ``subcubes``, also the exact cube's
    ``<imagename>.subcubes``); a staging whose owner process is alive here is kept. Returns what went."""
    removed = []
    candidates = staging_leftovers(imagename)
    if subcubes and os.path.isdir(os.fspath(imagename) + SUBCUBES):
        candidates.append(Path(os.fspath(imagename) + SUBCUBES))
    for path in candidates:
        if owner_alive(path.name):
            log.info("kept %s: its writer (pid in the name) is still running", path)
            continue
        if _remove(path):
            removed.append(path)
    return removed


def image_names_in(run_dir: str | os.PathLike[str], suffix: str) -> list[str]:
    """The image names (``<...>.<suffix>``) of a run folder's products, as the engine's stagings name
    them: from products, staging folders and sub-cube folders alike (a run that died before writing a
    product still left its staging), in ``<ms>/`` and ``<ms>/<target>/`` as prepare lays them out."""
    names: set[str] = set()
    root = Path(run_dir)
    word = re.compile(rf"^\.?(.+?\.{re.escape(suffix)})(?:{_SUFFIX}{re.escape(STAGING_MARK)}.*|"
                      rf"{re.escape(SUBCUBES)}|{_SUFFIX})$")
    for folder in [p for pattern in ("*/*", "*/*/*") for p in root.glob(pattern) if p.is_dir()]:
        match = word.match(folder.name)
        if match:
            names.add(str(folder.parent / match.group(1)))
    return sorted(names)


def sweep_run_folder(run_dir: str | os.PathLike[str], suffix: str, *, subcubes: bool) -> list[Path]:
    """At the end of a run (its cluster down): every staging leftover of the run's images, and with
    ``subcubes`` the exact cubes' sub-cube folders, which only a successful concatenation removes."""
    removed: list[Path] = []
    for imagename in image_names_in(run_dir, suffix):
        removed += sweep_staging_leftovers(imagename, subcubes=subcubes)
    return removed
