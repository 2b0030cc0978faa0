"""Refuse a cube run that cannot work, before any cluster starts or any file is written.

Each error names the parameter and how to fix it. PreflightError is the continuum's too
(`continuum_preflight`), whose checks need the continuum's CASA records.
"""

from __future__ import annotations

import os

from pclean_provider import products
from pclean_provider.casa.ms_selection import SelectionError, check_selection
from pclean_provider.engine.concat import ConcatError, resolve_mode
from pclean_provider.errors import PcleanInputError

# Deconvolvers that only make sense for one continuum plane.
MFS_ONLY_DECONVOLVERS = ("mtmfs",)
SUPPORTED_SPECMODES = ("cube", "cubedata")


class PreflightError(PcleanInputError):
    """Bad input for a cube or continuum run (the message names the parameter and the fix)."""


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_cube_inputs(cfg) -> None:
    """All cheap checks of a cube config against its data; raises PreflightError."""
    kw = cfg.tclean_kwargs()
    specmode = kw.get("specmode")
    if specmode not in SUPPORTED_SPECMODES:
        raise PreflightError(f"specmode={specmode!r}: the cube engine makes specmode='cube' or 'cubedata' "
                             "cubes; for 'cubesource' run casatasks.tclean, for continuum use specmode='mfs'.")
    if kw.get("deconvolver") in MFS_ONLY_DECONVOLVERS:
        raise PreflightError(f"deconvolver={kw['deconvolver']!r} cannot make a cube; use deconvolver='hogbom' "
                             "or 'multiscale' for specmode='cube', or specmode='mfs' for a wideband image.")
    if kw.get("interactive"):
        raise PreflightError("interactive=True: sub-cubes run unattended on workers; set interactive=False.")
    if kw.get("outlierfile"):
        raise PreflightError("outlierfile: outlier fields are not supported for cubes; image them separately "
                             "(outlierfile='').")
    imagename = kw.get("imagename") or ""
    if not imagename:
        raise PreflightError("imagename is empty; set imagename='path/prefix' for the output cube.")
    parent = os.path.dirname(os.path.abspath(imagename))
    if not os.path.isdir(parent):
        raise PreflightError(f"imagename={imagename!r}: folder {parent} does not exist; create it first.")
    existing = [imagename + s for s in products.EXISTING_RUN_MARKERS if os.path.exists(imagename + s)]
    if existing:
        raise PreflightError(f"imagename={imagename!r}: {existing[0]} already exists and would be replaced; "
                             "choose a new imagename or remove the old products.")
    if kw.get("savemodel", "none") != "none" and cfg.extras.parallel:
        raise PreflightError(f"savemodel={kw['savemodel']!r}: a parallel cube would write the MeasurementSet from "
                             "several workers at once; use savemodel='none' and save the model afterwards with "
                             "tclean(..., niter=0, calcres=False, calcpsf=False, savemodel='modelcolumn').")
    try:
        resolve_mode(cfg.extras.concat_mode, cfg.extras.keep_subcubes)
    except ConcatError as err:
        raise PreflightError(f"concat_mode: {err}") from err

    visses = _as_list(kw.get("vis"))
    if not visses or visses == [""]:
        raise PreflightError("vis is empty; give the MeasurementSet to image, e.g. vis='target.ms'.")
    spws = _as_list(kw.get("spw", ""))
    fields = _as_list(kw.get("field", ""))
    total = 0
    for i, vis in enumerate(visses):
        spw = spws[i] if i < len(spws) else spws[-1]
        field = fields[i] if i < len(fields) else fields[-1]
        try:
            info = check_selection(vis, spw=str(spw), field=str(field))
        except SelectionError as err:
            raise PreflightError(str(err)) from err
        total += info.nchan_selected
    nchan = int(kw.get("nchan", -1))
    width = kw.get("width", "")
    channel_width = int(width) if isinstance(width, int) or (isinstance(width, str) and width.isdigit()) else 1
    if nchan > 0 and isinstance(kw.get("start", ""), (str, int)) and nchan * max(channel_width, 1) > total \
            and _unitless(kw.get("start")) and _unitless(width):
        raise PreflightError(f"nchan={nchan}: the selected data have only {total} channels; use nchan=-1 "
                             f"(all channels) or nchan<={total // max(channel_width, 1)}.")


def _unitless(value) -> bool:
    # Channel-number (or default) start/width: then nchan is counted in data channels. With a frequency
    # or velocity grid, CASA allows channels beyond the data and leaves them empty, as tclean does.
    if value in ("", None):
        return True
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()
