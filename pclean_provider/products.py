"""The images one tclean (or pclean) run writes, each named ``<imagename><suffix>``.

The one table of product suffixes for every layer: the CASA helpers, the engine (sub-cubes,
concatenation, continuum), QA and the archive. Standard library only, so any layer can import it.

What CASA 6's tclean writes (observed, and kept so by tests/unit/test_products.py):
- one-term deconvolvers (hogbom, clark, multiscale, ...), cube or mfs: ``.image .residual
  .model .psf .pb .sumwt``, plus ``.mask`` once it cleans (niter > 0), ``.weight`` with the
  mosaic-type gridders, ``.image.pbcor`` with pbcor;
- mtmfs with ``nterms`` Taylor terms: ``.image.ttN .residual.ttN .model.ttN`` for N < nterms,
  ``.psf.ttN .sumwt.ttN`` (and ``.weight.ttN`` with mosaic-type gridders) for N < 2 nterms - 1,
  ``.pb.tt0``, ``.alpha .alpha.error`` when nterms > 1, ``.beta`` when nterms > 2, ``.mask`` once
  it cleans, and with pbcor ``.image.ttN.pbcor`` and ``.pb.ttN`` for N < nterms.
"""

from __future__ import annotations

import os

IMAGE = ".image"
RESIDUAL = ".residual"
MODEL = ".model"
PSF = ".psf"
PB = ".pb"
SUMWT = ".sumwt"
WEIGHT = ".weight"
MASK = ".mask"
ALPHA = ".alpha"
ALPHA_ERROR = ".alpha.error"
BETA = ".beta"
#: Appended to a restored image's name: ``.image.pbcor``, ``.image.tt0.pbcor``.
PBCOR = ".pbcor"
IMAGE_PBCOR = IMAGE + PBCOR
#: The folder of a parallel continuum run's part images (as CASA's parallel imager names it).
WORKDIRECTORY = ".workdirectory"
#: The folder of a cube run's sub-cubes and sub-cube sessions (``<imagename>.subcubes``).
SUBCUBES = ".subcubes"

#: Gridders whose runs also write the mosaic weight image.
WEIGHT_GRIDDERS = frozenset({"mosaic", "awproject", "awp2", "awphpg"})
#: The deconvolver that writes Taylor-term images.
TAYLOR_DECONVOLVER = "mtmfs"


def taylor_term(suffix: str, term: int) -> str:
    """The name of Taylor term ``term`` of a product: ``.image`` -> ``.image.tt0``."""
    return f"{suffix}.tt{int(term)}"


def first_term(suffix: str, deconvolver: str) -> str:
    """The product as a one-term run names it, or its Taylor term 0 for mtmfs (``.residual.tt0``)."""
    return taylor_term(suffix, 0) if deconvolver == TAYLOR_DECONVOLVER else suffix


#: Every product a one-term run may write; a cube's sub-cube hands over those that exist.
SINGLE_TERM_PRODUCTS = (IMAGE, RESIDUAL, MODEL, PSF, PB, MASK, SUMWT, WEIGHT, IMAGE_PBCOR)
#: Products with a beam per channel: the concatenation keeps each channel's beam.
BEAM_PRODUCTS = (IMAGE, PSF, RESIDUAL, IMAGE_PBCOR, MODEL)
#: Restored products: restored again when one common beam is asked for.
RESTORED_PRODUCTS = (IMAGE, IMAGE_PBCOR)
#: Products whose presence means a run already wrote under that imagename.
EXISTING_RUN_MARKERS = (IMAGE, RESIDUAL, PSF)
#: The science images an archive keeps, for a one-term and for an mtmfs run: the restored and
#: primary-beam-corrected images, the residual, the primary beam (to correct or weight the image
#: again) and the clean mask (what was cleaned), as a science archive takes them.
SCIENCE_PRODUCTS = (IMAGE, IMAGE_PBCOR, RESIDUAL, PB, MASK)
MTMFS_SCIENCE_PRODUCTS = (
    taylor_term(IMAGE, 0),
    taylor_term(IMAGE, 0) + PBCOR,
    taylor_term(RESIDUAL, 0),
    taylor_term(IMAGE, 1),
    ALPHA,
    ALPHA_ERROR,
    taylor_term(PB, 0),
    MASK,
)
#: Suffixes with which a path names a product's main image instead of its imagename prefix.
MAIN_IMAGE_SUFFIXES = (taylor_term(IMAGE, 0), IMAGE)


def products_for(deconvolver: str = "hogbom", nterms: int = 2, gridder: str = "standard",
                 pbcor: bool = False, niter: int = 0) -> tuple[str, ...]:
    """The suffixes of the images tclean writes for these parameters (cube and mfs alike)."""
    weights = gridder in WEIGHT_GRIDDERS
    if deconvolver != TAYLOR_DECONVOLVER:
        out = [IMAGE, RESIDUAL, MODEL, PSF, PB, SUMWT]
        out += [WEIGHT] * weights + [MASK] * (niter > 0) + [IMAGE_PBCOR] * pbcor
        return tuple(sorted(out))
    nterms = int(nterms)
    out = [taylor_term(s, t) for s in (IMAGE, RESIDUAL, MODEL) for t in range(nterms)]
    out += [taylor_term(s, t) for s in (PSF, SUMWT) + (WEIGHT,) * weights for t in range(2 * nterms - 1)]
    out += [taylor_term(PB, 0)]
    out += [ALPHA, ALPHA_ERROR] * (nterms > 1) + [BETA] * (nterms > 2) + [MASK] * (niter > 0)
    if pbcor:
        out += [taylor_term(IMAGE, t) + PBCOR for t in range(nterms)] + [taylor_term(PB, t) for t in range(nterms)]
    return tuple(sorted(set(out)))


def imagename_of(path: str | os.PathLike) -> str:
    """The absolute imagename prefix of a product given by its prefix or by its main image."""
    base = os.path.abspath(os.fspath(path))
    for suffix in MAIN_IMAGE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base


def is_taylor_product(imagename: str) -> bool:
    """Whether the product under ``imagename`` is an mtmfs one (term-0 image, no one-term image)."""
    return os.path.isdir(imagename + taylor_term(IMAGE, 0)) and not os.path.isdir(imagename + IMAGE)


def existing(imagename: str, suffixes: tuple[str, ...] = SINGLE_TERM_PRODUCTS) -> list[str]:
    """Those of ``suffixes`` that exist under ``imagename``, in the order given."""
    return [s for s in suffixes if os.path.isdir(imagename + s)]


def is_casa_image(path: str | os.PathLike) -> bool:
    """A CASA image folder: a paged image (its table) or a cube concatenated as a reference to its parts."""
    return os.path.isfile(os.path.join(path, "table.dat")) or os.path.isfile(os.path.join(path, "imageconcat.json"))


def remove_products(imagename: str, suffixes: tuple[str, ...] | list[str]) -> list[str]:
    """Remove the product folders ``<imagename><suffix>`` that exist; return the paths removed.

    Only CASA images and folders of ours, each named exactly: never a file, nor a folder that merely
    shares the name's prefix (the MeasurementSet ``<imagename>.ms``). An earlier try of a task that
    writes ``imagename`` left them; the retry starts from none, as tclean would refuse to continue
    a half-written product.
    """
    import shutil

    removed = []
    for suffix in suffixes:
        path = imagename + suffix
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
