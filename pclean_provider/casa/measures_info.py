"""How current CASA's measures data are, and whether an MS was observed after they end.

CASA converts times and frames with the IERS Earth-orientation tables (``geodetic/IERSeop2000``:
measured; ``geodetic/IERSpredict``: predicted ahead) and the leap-second table
(``geodetic/TAI_UTC``). An MS observed after the predictions end is imaged with extrapolated Earth
orientation, and one observed after a leap second the table does not know is off by a second:
both are silent in CASA, so ingest says it (``measures_warnings``) and ``pclean measures`` shows
the dates and refreshes a site copy.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from pclean_provider.casa.runtime import ensure_casa_runtime

_MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
# Leap seconds are announced about six months ahead: a table older than that by the observation's
# date may be missing one.
LEAP_SECOND_NOTICE_DAYS = 180


class MeasuresStatus(BaseModel):
    """The dates that matter in one measures folder (MJD days; ISO dates for people)."""

    path: str
    eop_measured_until_mjd: float | None = None
    eop_predicted_until_mjd: float | None = None
    leap_seconds_table_date: str | None = None  # the table's version date, YYYY-MM-DD
    leap_seconds_table_mjd: float | None = None

    def describe(self) -> list[str]:
        lines = [f"measures {self.path}"]
        if self.eop_measured_until_mjd is not None:
            lines.append(f"Earth orientation measured until {mjd_to_date(self.eop_measured_until_mjd)}")
        if self.eop_predicted_until_mjd is not None:
            lines.append(f"Earth orientation predicted until {mjd_to_date(self.eop_predicted_until_mjd)}")
        if self.leap_seconds_table_date:
            lines.append(f"leap-second table of {self.leap_seconds_table_date}")
        return lines


def mjd_to_date(mjd: float) -> str:
    return (_MJD_EPOCH + timedelta(days=float(mjd))).date().isoformat()


def _date_to_mjd(text: str) -> float | None:
    # casacore writes VS_DATE as 'YYYY/MM/DD/hh:mm'.
    try:
        when = datetime.strptime(text.strip()[:10], "%Y/%m/%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (when - _MJD_EPOCH).total_seconds() / 86400.0


def read_status(path: str | os.PathLike) -> MeasuresStatus:
    """Read the dates from the measures tables under ``path`` (a folder holding ``geodetic/``)."""
    ensure_casa_runtime()
    import casatools

    geodetic = Path(path) / "geodetic"
    status = MeasuresStatus(path=str(path))
    tb = casatools.table()

    def last_mjd(name: str) -> float | None:
        if not (geodetic / name).is_dir():
            return None
        tb.open(str(geodetic / name))
        try:
            return float(tb.getcell("MJD", tb.nrows() - 1)) if tb.nrows() else None
        finally:
            tb.close()

    status.eop_measured_until_mjd = last_mjd("IERSeop2000")
    status.eop_predicted_until_mjd = last_mjd("IERSpredict")
    if (geodetic / "TAI_UTC").is_dir():
        tb.open(str(geodetic / "TAI_UTC"))
        try:
            version_date = str(tb.getkeywords().get("VS_DATE", ""))
        finally:
            tb.close()
        status.leap_seconds_table_mjd = _date_to_mjd(version_date)
        if status.leap_seconds_table_mjd is not None:
            status.leap_seconds_table_date = mjd_to_date(status.leap_seconds_table_mjd)
    return status


@functools.lru_cache(maxsize=4)
def status_of(path: str) -> MeasuresStatus:
    """``read_status``, once per folder and process (an ingest checks many MSs against one folder)."""
    return read_status(path)


def update_site_copy(path: str | os.PathLike, force: bool = False) -> None:
    """Fetch the newest measures into ``path`` (needs the network). casaconfig downloads the tarball
    and unpacks it under a lock of its own, so readers of the folder see the old or the new tables."""
    from casaconfig import measures_update

    measures_update(path=os.fspath(path), force=force, verbose=2)
    status_of.cache_clear()


def current_status() -> MeasuresStatus:
    """The status of the measures this process's CASA uses."""
    return status_of(ensure_casa_runtime().measures_path)


def measures_warnings(status: MeasuresStatus, observed_until_mjd: float | None) -> list[str]:
    """What an MS observed until ``observed_until_mjd`` gets from measures this old (empty: nothing)."""
    if observed_until_mjd is None:
        return []
    when = mjd_to_date(observed_until_mjd)
    fix = ("refresh them: `pclean measures update` into the folder set as [pclean] measures_path "
           "(PCLEAN_MEASURES_PATH), or point that setting at the site's current copy")
    out = []
    predicted = status.eop_predicted_until_mjd
    if predicted is not None and observed_until_mjd > predicted:
        out.append(f"the MS was observed until {when}, after the measures' Earth-orientation predictions end "
                   f"({mjd_to_date(predicted)}): CASA extrapolates them, which shifts frame conversions; {fix}")
    leap = status.leap_seconds_table_mjd
    if leap is not None and observed_until_mjd > leap + LEAP_SECOND_NOTICE_DAYS:
        out.append(f"the MS was observed on {when}, more than {LEAP_SECOND_NOTICE_DAYS} days after the "
                   f"measures' leap-second table ({status.leap_seconds_table_date}), which may miss a leap "
                   f"second announced since; {fix}")
    return out
