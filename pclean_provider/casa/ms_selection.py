"""Check a MeasurementSet and a tclean data selection before any imaging or cluster starts."""

from __future__ import annotations

import os

from pydantic import BaseModel

from pclean_provider.errors import PcleanInputError


class SelectionError(PcleanInputError):
    """The data or the selection cannot be imaged; the message names the parameter and the fix."""


class SelectionInfo(BaseModel):
    vis: str
    nrows: int
    spws: list[int]
    fields: list[int]
    nchan_selected: int
    # Spectral windows in the MS (selected or not): a row holds one spw's channels, so the selected
    # data are about nrows x nchan_selected / nspw_total visibilities.
    nspw_total: int = 1

    def visibilities(self) -> float:
        """Rows x channels of the selected data, about (rows are shared among the spws)."""
        return self.nrows * self.nchan_selected / max(self.nspw_total, 1)


def _is_measurement_set(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "table.dat")) and os.path.isdir(
        os.path.join(path, "SPECTRAL_WINDOW"))


def check_selection(vis: str, spw: str = "", field: str = "") -> SelectionInfo:
    """Open `vis`, resolve the spw/field selection; raise SelectionError naming what is wrong."""
    import casatools

    if not os.path.exists(vis):
        raise SelectionError(f"vis: {vis!r} does not exist; give the path of a MeasurementSet.")
    if not _is_measurement_set(vis):
        raise SelectionError(f"vis: {vis!r} is not a MeasurementSet (no table.dat / SPECTRAL_WINDOW); "
                             "give the path of a MeasurementSet folder.")
    ms = casatools.ms()
    msmd = casatools.msmetadata()
    try:
        try:
            ms.open(vis)
            nrows = int(ms.nrow())
        except RuntimeError as err:
            raise SelectionError(f"vis: {vis!r} cannot be opened as a MeasurementSet: {err}") from err
        finally:
            ms.close()
        if nrows == 0:
            raise SelectionError(f"vis: {vis!r} has no rows; nothing to image.")
        try:
            idx = ms.msseltoindex(vis=vis, spw=spw or "", field=field or "")
        except RuntimeError as err:
            which = "spw" if spw else "field"
            if spw and field:
                which = "spw/field"
            raise SelectionError(f"{which}: the selection spw={spw!r} field={field!r} matches nothing in "
                                 f"{vis} ({str(err).strip().splitlines()[-1] if str(err).strip() else err}); "
                                 "check the ids/names with listobs or leave it ''.") from err
        spws = [int(s) for s in idx.get("spw", [])]
        fields = [int(f) for f in idx.get("field", [])]
        if spw and not spws:
            raise SelectionError(f"spw={spw!r} matches no spectral window of {vis}; leave spw='' or pick "
                                 "an existing one.")
        if field and not fields:
            raise SelectionError(f"field={field!r} matches no field of {vis}; leave field='' or pick an "
                                 "existing one.")
        msmd.open(vis)
        try:
            nspw_total = int(msmd.nspw())
            if not spws:
                spws = list(range(nspw_total))
            nchan = 0
            chans = idx.get("channel")
            if spw and chans is not None and len(chans):
                for row in chans:
                    sid, first, last, step = (int(v) for v in row[:4])
                    step = max(step, 1)
                    nchan += (last - first) // step + 1
            else:
                nchan = sum(int(msmd.nchan(s)) for s in spws)
        finally:
            msmd.close()
    finally:
        ms.done()
        msmd.done()
    if nchan < 1:
        raise SelectionError(f"spw={spw!r} selects no channels of {vis}; widen the channel range.")
    return SelectionInfo(vis=vis, nrows=nrows, spws=spws, fields=fields, nchan_selected=nchan,
                         nspw_total=max(nspw_total, 1))
