"""Refuse a cube run that cannot work, before any cluster starts or any file is written.

Each error names the parameter and how to fix it (a `PreflightError`).
"""

from __future__ import annotations

import os

from pclean_provider import products
from pclean_provider.casa.ms_selection import SelectionError, SelectionInfo, check_selection
from pclean_provider.config.groups import CUBE_ENGINE_SPECMODES, MFS_ONLY_DECONVOLVERS
from pclean_provider.engine.cube.concat import ConcatError, resolve_mode
from pclean_provider.engine.imaging_errors import PreflightError


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def earlier_products(cfg) -> list[str]:
    """The product suffixes of an earlier run under this imagename: CASA images only (a stray file or
    folder of that name is not one, and is refused as before)."""
    imagename = str(cfg.tclean_kwargs().get("imagename") or "")
    return [s for s in products.SINGLE_TERM_PRODUCTS if products.is_casa_image(imagename + s)]


def continues_earlier_run(cfg) -> bool:
    """tclean's restart=True for a cube of the exact loop: a run whose imagename holds an earlier run's
    images continues from them (model, mask, PSF, residual), as serial tclean does."""
    kw = cfg.tclean_kwargs()
    return (cfg.extras.cube_engine == "sessions" and bool(kw.get("restart", True))
            and any(s in products.EXISTING_RUN_MARKERS for s in earlier_products(cfg)))


def check_cube_inputs(cfg, allow_restart: bool = False) -> list[SelectionInfo]:
    """All cheap checks of a cube config against its data; raises PreflightError. Returns what the
    selection check read of each MS (rows, selected channels), for the small-cube estimate.

    `allow_restart`: earlier products under imagename are continued from (`continues_earlier_run`)
    instead of refused; pclean() and the command line allow it, the pipelines' planners do not."""
    kw = cfg.tclean_kwargs()
    specmode = kw.get("specmode")
    if specmode not in CUBE_ENGINE_SPECMODES:
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
    if existing and not (allow_restart and continues_earlier_run(cfg)):
        how = ("restart=False would write the next numbered name, which the cube engine does not do"
               if not kw.get("restart", True) else
               "only the exact loop (cube_engine='sessions') continues from earlier products")
        raise PreflightError(f"imagename={imagename!r}: {existing[0]} already exists and would be replaced "
                             f"({how}); choose a new imagename or remove the old products.")
    if kw.get("savemodel", "none") != "none" and cfg.extras.parallel and cfg.extras.cube_engine == "independent":
        # The exact loop saves the model once, after it; independent sub-cubes are whole tclean runs.
        raise PreflightError(f"savemodel={kw['savemodel']!r}: cube_engine='independent' would write the "
                             "MeasurementSet from several workers at once; use cube_engine='sessions' (the "
                             "default), or savemodel='none' and save the model afterwards with "
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
    # Only the selection itself is checked here. nchan/start/width are tclean's to judge: it images
    # channels beyond (or between) the selected data and leaves them blank, so refusing them would
    # refuse what serial tclean makes.
    selections = []
    for i, vis in enumerate(visses):
        spw = spws[i] if i < len(spws) else spws[-1]
        field = fields[i] if i < len(fields) else fields[-1]
        try:
            selections.append(check_selection(vis, spw=str(spw), field=str(field)))
        except SelectionError as err:
            raise PreflightError(str(err)) from err
    return selections
