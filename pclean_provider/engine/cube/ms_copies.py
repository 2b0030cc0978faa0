"""The exact loop's sessions read copies of the MSs laid out for them (`relayout_ms`).

Every session reads its data selection from the MS in every major cycle. With the MS as most
writers lay it out (tiles spanning all channels, per-row columns in one incremental manager), each
session reads nearly what serial tclean reads, so the bytes grow with the workers (bench/RESULTS.md,
"Bytes read"). One copy per MS, written once before the sessions start with tiles of a few
channels (`casa.ms_layout`), lets each session read only its own channels' tiles. The copies hold
the same values, so the images are unchanged; they live in the cube's work folder (which every
worker reads) and go when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator

from pclean_provider.casa.ms_layout import MsLayoutError, write_layout_copy
from pclean_provider.casa.msinfo import folder_size
from pclean_provider.engine.models import CubePlan

log = logging.getLogger(__name__)

# A session reads the tiles of its channels plus those its margin channels fall into: tiles of at
# most an eighth of the smallest session keep that extra small, and tiles of many channels keep a
# wide session's tile count (and its cache) bounded.
TILES_PER_SESSION = 8
# The copy needs the MS's size and room to spare (the sessions' images share the folder).
SPACE_FACTOR = 1.5
# relayout_ms='auto' copies from this many sessions of a cleaned cube. Measured on a 48-channel cube
# (bench/RESULTS.md, "Bytes read"): the sessions read 1.81x serial tclean's bytes at 2 workers, 3.25x at
# 4 and 5.99x at 8 from the MS as written, 0.55x-0.76x from the copy; the time at 2 workers was 1.47x
# serial with the copy against 1.30x without, one run each (this machine's noise is about 7 %). A dirty
# cube reads the data twice (PSF, residual), too few passes to repay writing a copy.
AUTO_MIN_SESSIONS = 4


def wants_copies(setting: bool | str, nsessions: int, niter: int) -> bool:
    """Whether the sessions read re-laid copies (`relayout_ms`: True, False or 'auto')."""
    if nsessions < 2 or setting is False:
        return False
    if setting is True:
        return True
    return niter > 0 and nsessions >= AUTO_MIN_SESSIONS


def _free_bytes(folder: str) -> int:
    existing = folder
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    return shutil.disk_usage(existing).free


def channels_per_tile(plan: CubePlan) -> int:
    return max(1, min(spec.nchan for spec in plan.specs) // TILES_PER_SESSION)


@contextlib.contextmanager
def sessions_read_copies(plan: CubePlan) -> Iterator[CubePlan]:
    """The plan with every MS replaced by a copy laid out for the sessions; copies removed on exit.

    An MS that cannot be copied row by row (a reference table, a multi-MS) is imaged as it is."""
    folder = os.path.join(plan.workdir, f"ms-copies-{uuid.uuid4().hex[:8]}")
    visses = plan.tclean_kwargs["vis"]
    as_list = isinstance(visses, list)
    chans = channels_per_tile(plan)
    copies = []
    try:
        for index, vis in enumerate(visses if as_list else [visses]):
            dest = os.path.join(folder, f"{index:02d}-{os.path.basename(vis.rstrip('/'))}")
            need, free = folder_size(vis), _free_bytes(folder)
            if need * SPACE_FACTOR > free:
                # casacore aborts the process when a write meets a full disk: never start one that cannot fit.
                log.warning("relayout_ms: %s (%.1f GB) would not fit in %s (%.1f GB free); imaged as it is",
                            vis, need / 1e9, folder, free / 1e9)
                copies.append(vis)
                continue
            try:
                copy = write_layout_copy(vis, dest, chans)
            except (MsLayoutError, RuntimeError) as err:
                # A faster read is not worth a failed run: the MS as it is gives the same images.
                log.warning("relayout_ms: %s; imaged as it is", err)
                copies.append(vis)
                continue
            log.info("relayout_ms: %s copied with tiles of %d channel(s) (%s) in %.1f s; the sessions read the copy",
                     vis, chans, ", ".join(copy.spectral_columns) or "no spectral column", copy.seconds)
            copies.append(copy.path)
        new_vis = copies if as_list else copies[0]
        yield plan.model_copy(update={
            "tclean_kwargs": dict(plan.tclean_kwargs, vis=new_vis),
            "specs": [spec.model_copy(update={"vis": new_vis}) for spec in plan.specs]})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
