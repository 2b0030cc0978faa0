"""Refuse a continuum (mfs) run that cannot work, before any cluster starts or any file is written.

The parameters the continuum engine cannot honour, the products in the way, each
MeasurementSet's selection and the shape of the images a restart continues from; each error
names the parameter and how to fix it. Also the name a run writes (`output_name`), which the
checks need and the run itself uses.
"""

from __future__ import annotations

import os
from typing import Any

from pclean_provider.casa.continuum_parts import image_shape
from pclean_provider.casa.ms_selection import check_selection
from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.config.casa_bridge import BridgeError, CasaRecords, casa_records_for
from pclean_provider.engine.continuum.outliers import read_outlier_file
from pclean_provider.engine.imaging_errors import ImagingInputError, PreflightError
from pclean_provider.products import MODEL, PSF, RESIDUAL, WORKDIRECTORY, first_term, products_for


class ContinuumInputError(ImagingInputError):
    """A request the continuum engine refuses before starting (names the parameter and the fix)."""


def _product_suffixes(rec: CasaRecords) -> list[str]:
    """Every name this run may write beside imagename (the widest set for its deconvolver/gridder)."""
    # pbcor/niter widened: a mask or pbcor image left by an earlier run with other switches would
    # still be overwritten by this one.
    return sorted(set(products_for(rec.deconvolver, nterms=rec.nterms, gridder=rec.gridder, pbcor=True,
                                   niter=1)) | {WORKDIRECTORY})


def _is_casa_table(path: str) -> bool:
    """A CASA image (or any casacore table) is a directory with a table.dat in it."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "table.dat"))


def existing_products(final: str, rec: CasaRecords) -> list[str]:
    """Earlier images under this name; other files beside them (a log, notes) are none of our business."""
    return [final + s for s in _product_suffixes(rec) if s != WORKDIRECTORY and _is_casa_table(final + s)]


def _in_the_way(final: str, rec: CasaRecords) -> list[str]:
    """Paths with a product's name that are not CASA images: the run could not publish over them."""
    return [final + s for s in _product_suffixes(rec) if os.path.lexists(final + s)
            and not _is_casa_table(final + s) and s != WORKDIRECTORY]


# The gridders the parallel loop images with (the awproject ones fill their cache on the coordinator).
_GRIDDERS = ("standard", "wproject", "widefield", "mosaic", "awproject", "awprojectft")


def _check_request(rec: CasaRecords, final: str) -> None:
    if rec.image.get("startmodel"):
        raise ContinuumInputError("startmodel: not supported by the continuum engine; leave it ''.")
    if rec.gridder not in _GRIDDERS:
        raise ContinuumInputError(f"gridder={rec.gridder!r}: the continuum engine supports "
                                  f"{', '.join(map(repr, _GRIDDERS))}; use one of them.")
    if rec.deconvolver not in ("hogbom", "clark", "clarkstokes", "multiscale", "mtmfs"):
        raise ContinuumInputError(f"deconvolver={rec.deconvolver!r}: use hogbom, clark, clarkstokes, "
                                  "multiscale or mtmfs with the continuum engine.")
    blocking = _in_the_way(final, rec)
    if blocking:
        raise ContinuumInputError(
            f"imagename={final!r}: {blocking[0]} is in the way of a product and is not a CASA image; "
            "move it away or choose another imagename.")
    # tclean's restart: calcpsf/calcres=False take the PSF/residual an earlier run left.
    for flag, on, suffix in (("calcpsf", rec.calcpsf, PSF), ("calcres", rec.calcres, RESIDUAL)):
        needed = final + first_term(suffix, rec.deconvolver)
        if not on and not _is_casa_table(needed):
            raise ContinuumInputError(
                f"{flag}=False continues from the {suffix[1:]} of an earlier run, but {needed} does not exist; "
                f"set {flag}=True, or run once with {flag}=True under this imagename first.")


def check_continuum_request(cfg: Any) -> CasaRecords:
    """The parameter checks of a continuum config (no data opened); returns its records.

    With an outlier file the records are the main field's, and the file's fields are checked too
    (`outliers`): that run takes the one-process exact path.
    """
    outlierfile = outlierfile_of(cfg)
    try:
        rec = casa_records_for(cfg.replace(outlierfile="") if outlierfile else cfg)
    except BridgeError as exc:
        raise ContinuumInputError(str(exc)) from None
    _check_request(rec, output_name(rec))
    if outlierfile:
        if not rec.image.get("restart", True):
            raise ContinuumInputError("restart=False with outlierfile: the next numbered name would be picked for "
                                      "the main field only; use restart=True and a new imagename.")
        for field in read_outlier_file(outlierfile, output_name(rec)):
            _check_request(rec, field.imagename)
    return rec


def outlierfile_of(cfg: Any) -> str:
    return str(cfg.tclean_kwargs().get("outlierfile") or "")


# The endings by which tclean's restart=False recognises images of an earlier run.
_NUMBERED_NAME_ENDINGS = (".image", ".residual", ".model", ".psf", ".sumwt", ".tt0")


def output_name(rec: CasaRecords) -> str:
    """The absolute imagename a run writes: the one asked for, or with restart=False the next
    numbered one (`<name>_2`, `<name>_3`, ...) when images exist under it, as tclean picks it."""
    final = os.path.abspath(rec.imagename)
    if rec.image.get("restart", True):
        return final
    folder, prefix = os.path.split(final)
    if not os.path.isdir(folder):
        return final
    # tclean's rule, file names only: an image named <prefix><ending> (or <prefix>.x.tt0) means
    # the name is taken; <prefix>_<N><ending> takes N; the next free number follows the largest.
    taken, largest = False, 1
    for name in os.listdir(folder):
        stem, ending = os.path.splitext(name)
        if not name.startswith(prefix) or ending not in _NUMBERED_NAME_ENDINGS:
            continue
        if name.startswith(prefix + "_"):
            number = name[len(prefix) + 1:].split(".")[0]
            if number.isdigit():
                taken, largest = True, max(largest, int(number))
        elif (prefix + "_") not in name:
            if ending == ".tt0":
                stem = os.path.splitext(stem)[0]
            taken = taken or stem == prefix
    return f"{final}_{largest + 1}" if taken else final


def check_continuum_inputs(cfg) -> None:
    """Every check of a continuum (mfs) config, cheap and before any cluster starts.

    The parameters the continuum engine cannot honour, the products already on disk, and each
    MeasurementSet's selection; raises a PcleanInputError subclass (ContinuumInputError or
    SelectionError) naming the parameter and the fix. The engine runs the same checks again
    where a run starts without this process (the coordinator task of an Airflow run).
    """
    rec = check_continuum_request(cfg)
    ensure_casa_runtime()
    for sel in rec.selection.values():
        check_selection(str(sel["msname"]), spw=str(sel.get("spw", "")), field=str(sel.get("field", "")))
    _check_restart_shape(rec)


def _check_restart_shape(rec) -> None:
    """A restart continues on the earlier images, so they must have the size asked for.

    CASA refuses a mismatch too, but only once the imagers exist on the cluster, and its message
    names the staging copy instead of the parameter.
    """
    final = output_name(rec)
    earlier = next((final + s for s in (first_term(PSF, rec.deconvolver), first_term(RESIDUAL, rec.deconvolver),
                                        first_term(MODEL, rec.deconvolver))
                    if os.path.isdir(final + s)), None)
    if earlier is None:
        return
    imsize = rec.image["imsize"]
    imsize = [int(imsize), int(imsize)] if isinstance(imsize, (int, float)) else [int(v) for v in imsize]
    if len(imsize) == 1:
        imsize = imsize * 2
    found = image_shape(earlier)[:2]
    if found != imsize[:2]:
        raise PreflightError(
            f"imsize={imsize[:2]}: restart=True continues from the images of an earlier run under "
            f"imagename={final!r}, and {os.path.basename(earlier)} is {found[0]}x{found[1]}; use "
            f"imsize={found}, restart=False (a new numbered name) or another imagename.")
