"""Paths in a run's conf: where each kind may point, and what reaches the imaging as a path.

A path from the trigger form is taken literally (never expanded), resolved once here against the data
root and with symbolic links followed, and that real, absolute path is what the run uses: a relative
one would otherwise be read against whichever working directory a worker has, and a link could be
pointed elsewhere after the check. Reads (vis, a start model, a mask) may come from anywhere in the
pipeline's data roots; the folders a run writes to may not: work_dir only in the template's work
roots, archive_dir only in its archive roots, and an outlier field's image only in the work roots
(an outlier file names the images tclean writes, so a file in the data roots could otherwise send
products into the archive, the landing area or another pipeline's work).

The imaging parameter ``mask`` is either a file (an image or a CRTF region file) or region text
written inline. Text counts as inline only when it reads as CRTF (every line a comment, a ``global``
line or a shape followed by ``[``) and names no folder; anything else is a path and confined like one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pclean_provider.atomic_files import write_text
from pclean_provider.compute.private_files import folder_problem
from pclean_provider.errors import PcleanInputError

# The shapes of CASA's region text format (CRTF), as casacore's RegionTextParser knows them.
_CRTF_SHAPES = ("box", "centerbox", "rotbox", "poly", "rotpoly", "circle", "annulus", "ellipse", "line",
                "vector", "text", "symbol", "polyline")
_CRTF_LINE = re.compile(r"^\s*(?:#.*|global\s.*|[+-]?\s*(?:" + "|".join(_CRTF_SHAPES) + r")\s*\[.*)?\s*$",
                        re.IGNORECASE)
UNSHOWN_CHARS = re.compile(r"[^A-Za-z0-9._/:+=@,-]")
# An outlier file is a few lines per field; a larger one is not an outlier file.
MAX_OUTLIER_FILE_BYTES = 64 * 1024
# Keys of an outlier field that name files tclean reads (imagename, which it writes, is judged apart).
OUTLIER_READ_KEYS = ("mask", "startmodel", "cfcache", "vptable")


class RunConfRefused(PcleanInputError):
    """The run's conf asks for something the trigger form may not set."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def shown(value: Any, limit: int = 32) -> str:
    """A conf value as a refusal may show it: at most ``limit`` characters, each outside a small
    safe set replaced by '?', quoted; longer values end in '...'."""
    text = value if isinstance(value, str) else repr(value)
    cut = UNSHOWN_CHARS.sub("?", text[:limit])
    return f"'{cut}{'...' if len(text) > limit else ''}'"


def within(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one (plain path logic: pass real paths)."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def real_roots(roots: Iterable[str | os.PathLike[str] | None]) -> list[Path]:
    """Real paths of ``roots`` (a symbolic link cannot stand in for a root), nested ones merged."""
    real: list[Path] = []
    for root in roots:
        if root is None:
            continue
        r = Path(os.path.realpath(root))
        if not within(r, real):
            real = [k for k in real if not k.is_relative_to(r)] + [r]
    return real


def confined_path(parameter: str, value: Any, roots: list[Path], data_root: Path, what: str = "data roots",
                  where: str = "the template's data_roots") -> Path:
    """A path from the conf, taken literally, relative ones under the data root; its real path
    (links followed, '..' gone) must lie in one of ``roots``. Returns that real path."""
    if not isinstance(value, str):
        raise RunConfRefused(parameter, f"a path is a string, not {type(value).__name__}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise RunConfRefused(parameter, f"{shown(value)} holds control characters; write a plain path")
    if "$" in value or value.startswith("~"):
        raise RunConfRefused(parameter, f"{shown(value)}: paths from the run conf are taken literally, "
                             "never expanded ($VARS, ~); write the path out in full")
    path = Path(value)
    real = Path(os.path.realpath(path if path.is_absolute() else data_root / path))
    if not within(real, roots):
        raise RunConfRefused(parameter, f"{shown(value)} is outside the pipeline's {what} "
                             f"({', '.join(str(r) for r in roots)}); name a path inside one of them "
                             f"({where} says which)")
    return real


def private_folder(parameter: str, path: Path, roots: list[Path]) -> Path:
    """``path`` (already confined to ``roots``) if no other user can put files in it or in any existing
    folder between its root and it: the run keeps its cluster records and products there, and a record
    planted by another user could point the run at their scheduler or at processes to kill."""
    root = next(r for r in roots if path == r or path.is_relative_to(r))
    folders = [root, *(root / Path(*path.relative_to(root).parts[:n])
                       for n in range(1, len(path.relative_to(root).parts) + 1))]
    for folder in folders:
        if not folder.is_dir():
            break
        if problem := folder_problem(folder):
            raise RunConfRefused(parameter, f"{problem}: other users could plant files in this run's folders "
                                 "(cluster records, products); choose a folder only the pipeline's user can "
                                 "write")
    return path


def is_inline_region(text: str) -> bool:
    """True when ``text`` is CRTF region text written out (``circle[[32pix,32pix],4pix]``), not a file.

    A '/' never appears in a shape line, so text with one is a path whatever its brackets say
    (``/etc/x[0]`` or ``masks/a[1].crtf``)."""
    if "/" in text or "[" not in text:
        return False
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return bool(lines) and all(_CRTF_LINE.match(line) for line in lines)


def confined_mask(parameter: str, value: Any, roots: list[Path], data_root: Path) -> Any:
    """A mask: inline region text as written, anything else a confined real path (as a string)."""
    if isinstance(value, str) and is_inline_region(value):
        return value
    return str(confined_path(parameter, value, roots, data_root))


def _outlier_values(value: str) -> list[str]:
    """The paths of one outlier-file value: 'a', "a" or a list [a, 'b']."""
    value = value.strip()
    items = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
    return [item.strip().strip("'\"") for item in items if item.strip().strip("'\"")]


def checked_outlier_text(path: Path, roots: list[Path], work_roots: list[Path], data_root: Path,
                         parameter: str = "overrides.outlierfile") -> str:
    """The outlier file's text, read once, after every path in it is judged: each field's imagename (an
    absolute path; tclean writes it) in the work roots, masks and models it reads in the data roots.

    The caller images from this text (a copy), not from the file, which may change after the check."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_OUTLIER_FILE_BYTES + 1)
    except OSError as exc:
        raise RunConfRefused(parameter, f"cannot read the outlier file {path}: {exc.strerror or exc}; "
                             "give a readable tclean outlier file or outlierfile=''") from None
    if len(raw) > MAX_OUTLIER_FILE_BYTES:
        raise RunConfRefused(parameter, f"{path} is larger than {MAX_OUTLIER_FILE_BYTES // 1024} KiB; an outlier "
                             "file holds a few key=value lines per field")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RunConfRefused(parameter, f"{path} is not UTF-8 text; an outlier file holds key=value lines") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue  # the engine refuses malformed lines with its own message
        key, value = (part.strip() for part in line.split("=", 1))
        where = f"{parameter} line {number} ({key})"
        if key == "imagename":
            for name in _outlier_values(value):
                if not os.path.isabs(name):
                    raise RunConfRefused(where, f"{shown(name)} is relative; write each field's imagename as an "
                                         "absolute path inside the pipeline's work area")
                confined_path(where, name, work_roots, data_root, what="work roots",
                              where="the template's work_roots")
        elif key in OUTLIER_READ_KEYS:
            if key == "mask" and is_inline_region(value):
                continue
            for item in _outlier_values(value):
                if not (key == "mask" and is_inline_region(item)):
                    confined_path(where, item, roots, data_root)
    return text


def outlier_snapshot(path: str, roots: list[Path], work_roots: list[Path], data_root: Path, dest: Path) -> str:
    """Write the checked text of the outlier file at ``path`` to ``dest`` (temporary name, then rename)
    and return ``dest``: the imaging reads the file that was judged, whatever happens to the original."""
    text = checked_outlier_text(Path(path), roots, work_roots, data_root)
    write_text(dest, text)
    return str(dest)
