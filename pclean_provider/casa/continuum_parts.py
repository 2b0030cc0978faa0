"""How a continuum run is cut into row partitions, and what each part is told.

CASA's own parallel continuum imager cuts the rows of every MeasurementSet into contiguous
ranges with `synthesisutils.contdatapartition` (TaQL ROWNUMBER() selections; no Multi-MS), and
defines ONE coordinate system from the full selection which every part then images onto. Both
are done here, on the coordinator, so that every part grids onto the same pixels and frequency
reference whatever rows it holds.

The coordinate system is a casatools record with numpy arrays in it; it crosses the process
boundary as JSON with its array types tagged (`records.encode_record`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pclean_provider.casa.runtime import import_casatasks
from pclean_provider.products import WORKDIRECTORY


class PartSpec(BaseModel):
    """What one part imager needs: its rows, the global image definition, its own image name."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    part: int  # 0-based
    nparts: int
    selection: dict[str, dict[str, Any]]  # 'ms0'... checked selections with the part's TaQL
    image: dict[str, Any]  # with 'csys' (encoded) and the part's imagename
    gridding: dict[str, Any]
    weighting: dict[str, Any]
    workdir: str  # the part's own cwd: CASA's IMAGING_WEIGHT_* temp files must not collide
    log_dir: str | None = None

    @property
    def label(self) -> str:
        return f"part {self.part + 1}/{self.nparts}"


def check_selection(selection: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each MS selection as synthesisutils completes it (readonly, usescratch, frame defaults)."""
    import casatools

    su = casatools.synthesisutils()
    try:
        out = {}
        for key in sorted(selection):
            rec = dict(selection[key])
            forced = {k: rec[k] for k in ("readonly", "usescratch") if k in rec}
            checked = su.checkselectionparams(rec)
            checked.update(forced)
            out[key] = checked
        return out
    finally:
        su.done()


def partition_rows(selection: dict[str, dict[str, Any]], nparts: int) -> list[dict[str, dict[str, Any]]]:
    """Row ranges per part, exactly as CASA's parallel continuum imager cuts them."""
    import casatools

    if nparts == 1:
        return [selection]
    su = casatools.synthesisutils()
    try:
        parted = su.contdatapartition(selection, int(nparts))
    finally:
        su.done()
    return [parted[str(i)] for i in range(nparts)]


def mosaic_field_order_blocker(selection: dict[str, dict[str, Any]],
                               row_parts: list[dict[str, dict[str, Any]]]) -> str:
    """Why these row parts cannot image a mosaic exactly ("" when they can).

    Measured on a two-pointing MS whose rows visit field 0, 1, 0, 1 in blocks: a part whose rows
    meet field 1 before field 0 (the whole selection meets 0 first) grids a dirty image 20-45 % off
    tclean's and a PSF whose peak is off centre, with any weighting; parts that meet the fields in the
    whole's order, or only one of them, are exact. CASA's own row cuts (contdatapartition) give
    such a part for 3 and 4 parts of that MS. So every part's order of first appearance of the
    fields must be a subsequence of the whole selection's.
    """
    import casatools

    tb = casatools.table()
    for key, whole in selection.items():
        msname = whole["msname"]
        fields = _selected_fields(msname, str(whole.get("field") or ""))
        want = _field_order(tb, msname, str(whole.get("taql") or ""), fields)
        for k, part in enumerate(row_parts):
            if key not in part:
                continue
            got = _field_order(tb, msname, str(part[key].get("taql") or ""), fields)
            if not _is_subsequence(got, want):
                return (f"row part {k + 1} of {len(row_parts)} meets the fields of {os.path.basename(msname)} in the "
                        f"order {got}, the whole selection in the order {want}; the mosaic gridder images such a part "
                        "differently from serial tclean")
    return ""


def _selected_fields(msname: str, field: str) -> list[int] | None:
    if not field:
        return None
    import casatools

    ms = casatools.ms()
    try:
        return sorted(int(f) for f in ms.msseltoindex(vis=msname, field=field)["field"])
    finally:
        ms.done()


def _field_order(tb: Any, msname: str, taql: str, fields: list[int] | None) -> list[int]:
    conditions = [f"({taql})"] if taql else []
    if fields is not None:
        conditions.append(f"FIELD_ID IN [{','.join(str(f) for f in fields)}]")
    tb.open(msname)
    try:
        rows = tb.query(" && ".join(conditions), columns="FIELD_ID") if conditions else tb
        ids = rows.getcol("FIELD_ID").tolist() if rows.nrows() else []
        if rows is not tb:
            rows.close()
    finally:
        tb.close()
    return list(dict.fromkeys(int(i) for i in ids))


def _is_subsequence(part: list[int], whole: list[int]) -> bool:
    rest = iter(whole)
    return all(field in rest for field in part)


def uses_cfcache(gridding: dict[str, Any]) -> bool:
    """The A-projection gridders, whose convolution functions live in a cache on disk (cfcache)."""
    return str(gridding.get("gridder", "")).startswith("awpr")


def cfcache_ready(path: str) -> bool:
    # An empty folder is what a failed fill leaves; CASA refills it then, and so does this.
    return bool(path) and os.path.isdir(path) and bool(os.listdir(path))


# tclean's selection keys and the names casatools.ms().msselect gives the same MSSelection parts.
_MSSELECT_ITEMS = {"field": "field", "spw": "spw", "scan": "scan", "timestr": "time", "uvdist": "uvdist",
                   "antenna": "baseline", "obs": "observation", "state": "scanintent", "taql": "taql"}


def every_selected_spw_has_rows(sel: dict[str, Any]) -> bool:
    """Whether each spectral window the spw expression names keeps at least one row after the
    whole selection. False whenever that cannot be told for sure.

    Why it matters: in the data frame (outframe REST) CASA's selectdata keeps every spw the
    expression names, while in LSRK it keeps only those its frequency pass found rows of
    (MSUtil::getFreqRangeInSpw). When every named spw has rows the two keep the same spws, the
    same channels and the same MS, so the image's coordinate system comes out the same.
    """
    import casatools

    msname = sel["msname"]
    ms = casatools.ms()
    tb = casatools.table()
    try:
        named = {int(s) for s in ms.msseltoindex(vis=msname, spw=sel.get("spw") or "*")["spw"]}
        ms.open(msname)
        items = {tool: sel[key] for key, tool in _MSSELECT_ITEMS.items() if sel.get(key)}
        if items and not ms.msselect(items):
            return False
        ddids = [int(d) for d in ms.range(["data_desc_id"])["data_desc_id"]]
        tb.open(os.path.join(msname, "DATA_DESCRIPTION"))
        spw_of_dd = tb.getcol("SPECTRAL_WINDOW_ID")
    except Exception:
        return False
    finally:
        # Closing a tool that never opened returns False; nothing here may hide the answer above.
        with contextlib.suppress(Exception):
            ms.close()
        with contextlib.suppress(Exception):
            tb.close()
    with_rows = {int(spw_of_dd[d]) for d in ddids}
    return bool(named) and named <= with_rows


def global_coordinates(selection: dict[str, dict[str, Any]], image: dict[str, Any],
                       gridding: dict[str, Any], *, skip_frame_pass: bool | None = None) -> dict[str, Any]:
    """The coordinate system of the full selection, which every part must image onto.

    For the A-projection gridders this imager, which sees every row, also fills the convolution
    function cache (gridding['cfcache']) when it is not there yet, before any part exists: the
    parts then only read it (CASA's parallel imager fills it once, serially, for the same
    reason - filling it from several processes races on the cache's tables).

    Cost: selectdata and defineimage each convert every spw's frequency range to the output frame
    at every distinct (time, data description) of the selection (MSUtil::getFreqRangeInSpw: about
    10 s each on 1.94 M rows with 43,200 of them; its cost follows those, not the rows; measured). defineimage's pass makes the coordinate
    system and cannot be skipped; selectdata's only tunes which channels are gridded, and this
    imager grids nothing. So it selects in the data frame (outframe REST, no pass) whenever that
    keeps the same spws (every_selected_spw_has_rows) - `skip_frame_pass` None decides so, True
    or False forces it (tests compare both). The A-projection cache fill grids (a dry run), so it
    always keeps the LSRK selection.
    """
    import casatools

    if skip_frame_pass is None:
        # One MS only: in the data frame, the selections of several MSs recorded in different frames
        # (one TOPO, one LSRK after cvel) cannot be combined ("incompatible frame of reference").
        skip_frame_pass = not uses_cfcache(gridding) and len(selection) == 1 and all(
            every_selected_spw_has_rows(selection[key]) for key in selection)
    si = casatools.synthesisimager()
    try:
        for key in sorted(selection):
            sel = selection[key]
            si.selectdata(dict(sel, outframe="REST", freqframe="REST") if skip_frame_pass else sel)
        impars = dict(image)
        impars.pop("startmodel", None)
        si.defineimage(impars=impars, gridpars=gridding)
        if uses_cfcache(gridding) and not cfcache_ready(gridding["cfcache"]):
            _fill_cfcache(si, gridding)
        return si.getcsys()["coordsys"]
    finally:
        si.done()


def mosaic_weight_density(selection: dict[str, dict[str, Any]], image: dict[str, Any], gridding: dict[str, Any],
                          weighting: dict[str, Any], scratch_prefix: str) -> str:
    """The Briggs/uniform weight density of a mosaic weighted per field (mosweight), from every row.

    With `multifield` the density has one plane per field, and the sum of the parts' densities that
    serves single fields does not take that shape (a part's process aborts in makepsf: casacore's
    "reform() - total elements differ"). So one imager that selects all the data makes it, as CASA's
    own parallel continuum imager does, and every part loads it. Returns the density image's path
    (under `scratch_prefix`'s folder, which the caller removes once the parts have loaded it).
    """
    import casatools

    folder = os.path.dirname(scratch_prefix)
    os.makedirs(folder, exist_ok=True)
    si = casatools.synthesisimager()
    try:
        with contextlib.chdir(folder):
            for key in sorted(selection):
                si.selectdata(selection[key])
            impars = dict(image, imagename=scratch_prefix)
            impars.pop("startmodel", None)
            si.defineimage(impars=impars, gridpars=dict(gridding, imagename=scratch_prefix))
            si.setweighting(**weighting)
            name = str(si.getweightdensity())
    finally:
        si.done()
    return name if os.path.isabs(name) else os.path.join(folder, name)


def _fill_cfcache(si: Any, gridding: dict[str, Any]) -> None:
    """tclean's makeCFCache: a dry gridding pass lists the functions needed, then they are computed."""
    cache = gridding["cfcache"]
    try:
        si.drygridding([])
        names = sorted(f for f in os.listdir(cache) if f.startswith("CFS")) if os.path.isdir(cache) else []
        si.fillcfcache(names, gridding["gridder"], cache, bool(gridding.get("psterm")),
                       bool(gridding.get("aterm", True)), bool(gridding.get("conjbeams")))
        si.reloadcfcache()
    except Exception as exc:
        raise RuntimeError(f"gridder={gridding['gridder']!r}: building the convolution-function cache "
                           f"{cache} failed in CASA: {exc}") from exc
    if not cfcache_ready(cache):
        raise RuntimeError(f"gridder={gridding['gridder']!r}: CASA built no convolution function in {cache} "
                           "(see the CASA log); this casatools cannot image with this gridder here.")


def part_workdir(imagename: str) -> Path:
    """The folder of the part images, next to the products (CASA's own layout)."""
    return Path(imagename + WORKDIRECTORY)


def part_image_name(imagename: str, part: int) -> str:
    """Part images live in <imagename>.workdirectory/<base>.n<k> (k 1-based), as CASA names them."""
    base = os.path.basename(imagename)
    return str(part_workdir(imagename) / f"{base}.n{part + 1}")



def image_shape(path: str) -> list[int]:
    """The shape of a CASA image (x, y, stokes, frequency as CASA orders them)."""
    import casatools

    ia = casatools.image()
    try:
        ia.open(path)
        return [int(v) for v in ia.shape()]
    finally:
        ia.close()


def run_tclean_here(kwargs: dict[str, Any], cwd: str) -> dict[str, Any]:
    """casatasks.tclean in this process (the continuum engine's one-process exact path, e.g. for
    outlier fields); returns the scalars of its summary. Scratch tables go to `cwd`."""
    import contextlib

    tclean = import_casatasks().tclean
    Path(cwd).mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(cwd):
        ret = tclean(**dict(kwargs, fullsummary=False))
    if not isinstance(ret, dict):
        # tclean returns False (or nothing) when it failed and only logged why.
        raise RuntimeError(f"tclean returned {ret!r} for {kwargs.get('imagename')}; see the CASA log")
    keep = ("iterdone", "nmajordone", "stopcode", "stopDescription", "maxpsfsidelobe", "threshold", "nsigma",
            "cyclethreshold", "niter", "cycleniter")
    return {k: (ret[k].item() if hasattr(ret[k], "item") else ret[k]) for k in keep if k in ret}
