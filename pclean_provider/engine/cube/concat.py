"""Join the sub-cubes' products into the full cube, in channel order, or fail loudly.

A concatenation that cannot produce the cube raises, rather than warn and return success with no
cube written (as the published pclean does).
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from pclean_provider.atomic_files import process_owner, replace_dir, staging_name
from pclean_provider.casa.image_concat import (
    ImageConcatError,
    channel_weights,
    common_beam,
    concat_images,
    fill_blank_channel_beams,
    image_frequencies,
)
from pclean_provider.casa.tclean_runner import TcleanRunError, restore_with_beam
from pclean_provider.engine.models import (
    FREQUENCY_RTOL,
    ConcatResult,
    CubePlan,
    SubcubeResult,
)
from pclean_provider.products import BEAM_PRODUCTS, IMAGE, RESTORED_PRODUCTS, SINGLE_TERM_PRODUCTS, SUMWT

log = logging.getLogger(__name__)


class ConcatError(RuntimeError):
    """The cube could not be produced from the sub-cubes."""


def resolve_mode(mode: str, keep_subcubes: bool) -> str:
    """'auto' -> 'paged' when the sub-cubes are kept (they stay independent images), else
    'movevirtual' (no pixel copy: the sub-cube images become the cube's storage)."""
    if mode == "auto":
        return "paged" if keep_subcubes else "movevirtual"
    if mode == "virtual" and not keep_subcubes:
        raise ConcatError("concat_mode='virtual' makes the cube a reference to the sub-cube images, so they "
                          "cannot be deleted; set keep_subcubes=True, or use concat_mode='paged' or "
                          "'movevirtual'.")
    if mode == "movevirtual" and keep_subcubes:
        raise ConcatError("concat_mode='movevirtual' moves the sub-cube images into the cube, so they cannot "
                          "be kept; set keep_subcubes=False, or use concat_mode='paged' or 'virtual'.")
    if mode not in ("paged", "virtual", "movevirtual"):
        raise ConcatError(f"concat_mode={mode!r}: use 'auto', 'paged', 'virtual' or 'movevirtual'.")
    return mode


def _ordered(plan: CubePlan, results: list[SubcubeResult]) -> list[SubcubeResult]:
    by_index = {}
    for r in results:
        r = r if isinstance(r, SubcubeResult) else SubcubeResult.model_validate(r)
        by_index[r.index] = r
    missing = [s.index for s in plan.specs if s.index not in by_index]
    if missing:
        raise ConcatError(f"sub-cubes {missing} have no result; image them before concatenating.")
    ordered = [by_index[s.index] for s in plan.specs]
    for spec, res in zip(plan.specs, ordered, strict=True):
        if (res.chan_start, res.chan_stop) != (spec.chan_start, spec.chan_stop):
            raise ConcatError(f"sub-cube {spec.index} result covers channels {res.chan_start}-{res.chan_stop - 1}, "
                              f"the plan says {spec.chan_start}-{spec.chan_stop - 1}; the result is from another plan.")
    return ordered


def _is_common(restoringbeam) -> bool:
    return isinstance(restoringbeam, str) and restoringbeam.lower() == "common"


def restore_common_beam(plan: CubePlan, imagename: str, products: dict[str, str]) -> dict[str, str]:
    """tclean's restoringbeam='common' on the joined cube: a restoration-only tclean run.

    The common beam is a property of the whole cube's PSF beam set (CASA picks it, including its
    position angle, by its own rules), so it is computed where the whole cube exists: tclean with
    niter=0, calcres=False, calcpsf=False, restart=True restores the concatenated model and
    residual with it. It runs in a staging folder that links the joined products, and its new
    .image (and .image.pbcor) replace the final names only when it succeeded.
    """
    # A working folder, not renamed itself: its restored images are swapped in one by one.
    staging = staging_name(imagename, owner=process_owner())
    os.makedirs(os.path.join(staging, "scratch"))
    base = os.path.join(staging, os.path.basename(imagename))
    try:
        for suffix, path in products.items():
            if suffix not in RESTORED_PRODUCTS:
                os.symlink(path, base + suffix)
        try:
            restore_with_beam(plan.tclean_kwargs, base, os.path.join(staging, "scratch"), "common")
        except TcleanRunError as err:
            raise ConcatError(f"restoringbeam='common': {err}") from err
        out = dict(products)
        for suffix in RESTORED_PRODUCTS:
            if os.path.isdir(base + suffix):
                replace_dir(base + suffix, imagename + suffix)
                out[suffix] = imagename + suffix
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def concat_products(plan: CubePlan, results: list[SubcubeResult], imagename: str | None = None,
                    mode: str = "auto", keep_subcubes: bool = False, restoringbeam=None) -> ConcatResult:
    """Every product the sub-cubes have, joined along frequency into `imagename`.<product>."""
    t0 = time.monotonic()
    plan = plan if isinstance(plan, CubePlan) else CubePlan.model_validate(plan)
    ordered = _ordered(plan, results)
    mode = resolve_mode(mode, keep_subcubes)
    imagename = os.path.abspath(imagename or plan.imagename)
    restoringbeam = plan.restoringbeam if restoringbeam is None else restoringbeam
    common = _is_common(restoringbeam)

    blank: list[int] = []
    if not common and all(os.path.isdir(r.product_prefix + SUMWT) for r in ordered):
        weights = [w for r in ordered for w in channel_weights(r.product_prefix + SUMWT)]
        if len(blank := [ch for ch, w in enumerate(weights) if w <= 0.0]) == len(weights):
            blank = []

    def finish(path: str) -> None:
        if blank:
            fill_blank_channel_beams(path, blank)

    present = {suffix: [os.path.isdir(r.product_prefix + suffix) for r in ordered] for suffix in SINGLE_TERM_PRODUCTS}
    products: dict[str, str] = {}
    for suffix in SINGLE_TERM_PRODUCTS:
        have = present[suffix]
        if common and suffix in RESTORED_PRODUCTS:
            continue  # restored below, with the whole cube's common beam
        if not any(have):
            continue
        if not all(have):
            lacking = [r.index for r, ok in zip(ordered, have, strict=True) if not ok]
            raise ConcatError(f"{suffix}: sub-cubes {lacking} lack it while others have it; rerun them.")
        parts = [r.product_prefix + suffix for r in ordered]
        try:
            products[suffix] = concat_images(parts, imagename + suffix, mode,
                                             finish=finish if suffix in BEAM_PRODUCTS else None)
        except ImageConcatError as err:
            raise ConcatError(str(err)) from err
    beam = None
    if common:
        products = restore_common_beam(plan, imagename, products)
        beam = common_beam(products[IMAGE])
    if IMAGE not in products:
        raise ConcatError(f"no {IMAGE} among the sub-cube products of {plan.imagename}; nothing to concatenate.")
    got = image_frequencies(products[IMAGE])
    if len(got) != plan.nchan or any(abs(g - e) > FREQUENCY_RTOL * abs(e)
                                     for g, e in zip(got, plan.frequencies_hz, strict=True)):
        raise ConcatError(f"{products[IMAGE]}: the concatenated frequency axis differs from the planned grid.")
    if not keep_subcubes and mode != "virtual":
        shutil.rmtree(plan.workdir, ignore_errors=True)
    seconds = time.monotonic() - t0
    log.info("concatenated %d sub-cubes into %s (%s, %d products) in %.1f s", len(ordered), imagename, mode,
             len(products), seconds)
    return ConcatResult(imagename=imagename, mode=mode, products=products, nchan=plan.nchan, common_beam=beam,
                        kept_subcubes=keep_subcubes, seconds=seconds)
