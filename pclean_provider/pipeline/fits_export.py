"""FITS export of science products, with CHECKSUM/DATASUM in every HDU.

CASA writes the FITS file (it knows how to turn per-channel beams into a BEAMS table); astropy
then rewrites it with checksums. Both steps write to temporary names beside the target and the
final name appears by rename only, so a crash never leaves a half-written .fits under its name.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pclean_provider import products
from pclean_provider.atomic_files import remove_path, replacing, staging_name
from pclean_provider.casa import image_io
from pclean_provider.pipeline.fits_provenance import FitsProvenance, apply_provenance


def science_products(imagename: str | os.PathLike) -> list[tuple[str, str]]:
    """(suffix, path) of every science image of one tclean/pclean product that exists.

    Those that do not exist (no pbcor, no alpha) are skipped.
    """
    base = products.imagename_of(imagename)
    mtmfs = os.path.isdir(base + products.taylor_term(products.IMAGE, 0))
    suffixes = products.MTMFS_SCIENCE_PRODUCTS if mtmfs else products.SCIENCE_PRODUCTS
    return [(s, base + s) for s in products.existing(base, suffixes)]


def add_checksums(src: str | os.PathLike, dst: str | os.PathLike,
                  provenance: FitsProvenance | None = None) -> Path:
    """Copy a FITS file to ``dst`` with CHECKSUM and DATASUM in every HDU (temp name + rename),
    and the product's provenance keywords in the primary header."""
    from astropy.io import fits  # seconds to import; only exports and checks need it

    dst = Path(dst)
    with replacing(dst) as tmp, fits.open(src, memmap=False) as hdul:
        apply_provenance(hdul[0].header, provenance)
        # What CASA wrote is fixed where the standard allows; what cannot be fixed stops the export.
        hdul.writeto(tmp, overwrite=True, checksum=True, output_verify="silentfix")
    return dst


def export_fits(image: str | os.PathLike, dst: str | os.PathLike,
                provenance: FitsProvenance | None = None) -> Path:
    """CASA image -> FITS at ``dst`` with checksums (and the provenance keywords, when given)."""
    dst = Path(dst).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    # CASA's FITS is an intermediate, never renamed: add_checksums writes `dst` from it.
    raw = staging_name(dst, owner="casa")
    try:
        image_io.export_fits(image, raw)
        add_checksums(raw, dst, provenance)
    finally:
        remove_path(raw)
    return dst


def verify_fits_checksums(path: str | os.PathLike) -> list[str]:
    """Problems with a FITS file's CHECKSUM/DATASUM (empty list = every HDU verifies)."""
    from astropy.io import fits  # seconds to import; only exports and checks need it

    problems = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, checksum=True, memmap=False) as hdul:
                for i, hdu in enumerate(hdul):
                    name = hdu.name or str(i)
                    check, data = hdu.verify_checksum(), hdu.verify_datasum()
                    if check == 2 or data == 2:
                        problems.append(f"HDU {i} ({name}) has no CHECKSUM/DATASUM keyword")
                    if check == 0:
                        problems.append(f"HDU {i} ({name}) CHECKSUM does not match")
                    if data == 0:
                        problems.append(f"HDU {i} ({name}) DATASUM does not match")
    except Exception as exc:  # a corrupted header may not even parse
        problems.append(f"cannot read as FITS: {exc}")
    return problems
