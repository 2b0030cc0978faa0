"""Outlier fields (tclean's `outlierfile`) for a continuum run: read, checked, staged.

The row-parallel loop holds one image field: its parts, normalizer, deconvolver and restart
copies are all per field, and carrying several through the parallel loop was more than this
change could make exact and test. A run with an outlier file therefore takes the one-process
exact path: casatasks.tclean itself, with the main field and every outlier field, in the process
that runs the engine (the caller, or the coordinator subprocess of an Airflow run). It is
serial tclean by construction, and its images are staged and renamed into place like the
parallel loop's.

The file format is tclean's (casatasks' ImagerParameters.parseOutlierFile): `key=value` lines,
lines starting with `#` ignored, each `imagename=` line starting a new field whose other keys
(imsize, cell, phasecenter, nterms, gridder, ...) follow it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from pclean_provider.atomic_files import write_text
from pclean_provider.errors import PcleanInputError


class OutlierFileError(PcleanInputError):
    """The outlier file cannot be used (the message names the file, the line and the fix)."""


class OutlierField(BaseModel):
    imagename: str  # absolute
    keys: dict[str, str]  # every key=value of the field, as written (imagename included)


def read_outlier_file(path: str, main_imagename: str) -> list[OutlierField]:
    """The fields of an outlier file, checked the way tclean reads them, and more strictly.

    Refused here, before any work: a missing file, a line without exactly one '=', a key before
    the first imagename, a field without imsize, a relative imagename (the run may execute in
    another working directory than the caller's, e.g. a coordinator on the cluster, where a
    relative name would land elsewhere) and two fields (or a field and the main image) with
    one imagename.
    """
    if not os.path.isfile(path):
        raise OutlierFileError(f"outlierfile={path!r}: no such file; give the path of a tclean outlier file "
                               "or outlierfile=''.")
    fields: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pair = line.split("=")
            if len(pair) != 2:
                raise OutlierFileError(f"outlierfile={path!r} line {number}: {line.strip()!r} is not one "
                                       "key=value pair; write one parameter per line, e.g. imsize=[64,64].")
            key, value = pair[0].replace(" ", ""), pair[1].strip()
            if key == "imagename":
                fields.append({})
            elif not fields:
                raise OutlierFileError(f"outlierfile={path!r} line {number}: {key} comes before the first "
                                       "imagename=; every field starts with its imagename line.")
            fields[-1][key] = value
    if not fields:
        raise OutlierFileError(f"outlierfile={path!r}: no field in it (no imagename= line); add the fields "
                               "or use outlierfile=''.")
    seen = {os.path.abspath(main_imagename)}
    out = []
    for keys in fields:
        name = keys["imagename"].strip("'\"")
        if not os.path.isabs(name):
            raise OutlierFileError(f"outlierfile={path!r}: imagename={name!r} is relative; write it as an "
                                   "absolute path (the run may not execute in this working directory).")
        if "imsize" not in keys:
            raise OutlierFileError(f"outlierfile={path!r}: field {name!r} has no imsize; add imsize=[nx,ny].")
        name = os.path.normpath(name)
        if name in seen:
            raise OutlierFileError(f"outlierfile={path!r}: imagename={name!r} is used twice (or is the main "
                                   "imagename); give every field its own imagename.")
        if not os.path.isdir(os.path.dirname(name)):
            raise OutlierFileError(f"outlierfile={path!r}: folder {os.path.dirname(name)} of field {name!r} "
                                   "does not exist; create it first.")
        seen.add(name)
        out.append(OutlierField(imagename=name, keys=dict(keys, imagename=name)))
    return out


def write_staged_outlier_file(fields: list[OutlierField], staged_names: list[str], path: str | Path) -> str:
    """The outlier file tclean is given: the same fields, each imagename replaced by its staging name."""
    lines = []
    for field, staged in zip(fields, staged_names, strict=True):
        lines.append(f"imagename={staged}")
        lines.extend(f"{k}={v}" for k, v in field.keys.items() if k != "imagename")
    write_text(Path(path), "\n".join(lines) + "\n")
    return str(path)
