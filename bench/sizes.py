"""The stated sizes of every benchmark: MeasurementSets, image parameters, plane counts, time budgets.

Every measured code path gets exactly the same imaging parameters (`cube_params`, `continuum_params`)
so the ratios in RESULTS.md compare like with like.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict


class MsSize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    antennas: int
    nchan: int
    hours: float
    integration_s: float
    seed: int = 42

    def describe(self) -> str:
        baselines = self.antennas * (self.antennas - 1) // 2
        rows = baselines * int(round(self.hours * 3600 / self.integration_s))
        return (f"{self.antennas} antennas, {self.nchan} channels, {self.hours:g} h at {self.integration_s:g} s "
                f"(about {rows:,} rows)")


class BenchSize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cube_ms: MsSize
    cube_imsize: int
    cube_cell: str
    cube_niter: int
    continuum_ms: MsSize
    continuum_imsize: int
    continuum_cell: str
    continuum_niter: int
    # Clean to a threshold (niter far above what it takes): the stopping point is then the same
    # for serial and split runs, however an implementation shares niter among sub-cubes.
    threshold: str
    concat_planes: int  # planes per mode for the per-plane figure (one image per plane)
    concat_imsize: int
    concat_big_planes: int  # the "1,000 small planes" cube
    concat_big_imsize: int
    budget_s: float  # the whole run, including making the MeasurementSets
    case_timeout_s: float  # one measured case at most


SIZES = {
    # Seconds-scale: proves every stage runs end to end; its figures mean nothing.
    "tiny": BenchSize(
        name="tiny",
        cube_ms=MsSize(antennas=6, nchan=8, hours=0.25, integration_s=60),
        cube_imsize=64, cube_cell="16arcsec", cube_niter=5000,
        continuum_ms=MsSize(antennas=6, nchan=2, hours=0.25, integration_s=60),
        continuum_imsize=64, continuum_cell="16arcsec", continuum_niter=5000,
        threshold="10mJy",
        concat_planes=8, concat_imsize=32, concat_big_planes=100, concat_big_imsize=16,
        budget_s=15 * 60, case_timeout_s=150,
    ),
    "small": BenchSize(
        name="small",
        cube_ms=MsSize(antennas=12, nchan=32, hours=1.0, integration_s=30),
        cube_imsize=256, cube_cell="8arcsec", cube_niter=100000,
        continuum_ms=MsSize(antennas=12, nchan=4, hours=2.0, integration_s=15),
        continuum_imsize=256, continuum_cell="8arcsec", continuum_niter=100000,
        threshold="10mJy",
        concat_planes=32, concat_imsize=256, concat_big_planes=1000, concat_big_imsize=32,
        budget_s=5 * 60, case_timeout_s=120,
    ),
    # A wide cube (many channels, a modest image) beside CASA's MPI tclean (issue 33): only its cube
    # and mpicasa stages are meant to run (`--only cube,mpicasa`); the continuum is small's.
    "wide": BenchSize(
        name="wide",
        cube_ms=MsSize(antennas=12, nchan=256, hours=1.0, integration_s=30),
        cube_imsize=256, cube_cell="8arcsec", cube_niter=100000,
        continuum_ms=MsSize(antennas=12, nchan=4, hours=2.0, integration_s=15),
        continuum_imsize=256, continuum_cell="8arcsec", continuum_niter=100000,
        threshold="10mJy",
        concat_planes=256, concat_imsize=256, concat_big_planes=1000, concat_big_imsize=32,
        budget_s=30 * 60, case_timeout_s=900,
    ),
    # The medium: a cube of >= 128 channels at 512x512; a row-heavy (long-track) continuum MS.
    "medium": BenchSize(
        name="medium",
        cube_ms=MsSize(antennas=12, nchan=128, hours=2.0, integration_s=30),
        cube_imsize=512, cube_cell="4arcsec", cube_niter=100000,
        continuum_ms=MsSize(antennas=24, nchan=4, hours=8.0, integration_s=10),
        continuum_imsize=512, continuum_cell="4arcsec", continuum_niter=100000,
        threshold="10mJy",
        concat_planes=128, concat_imsize=512, concat_big_planes=1000, concat_big_imsize=32,
        budget_s=35 * 60, case_timeout_s=600,
    ),
}


def worker_counts(cores: int | None = None) -> list[int]:
    """1 and 2 workers always (the issue's comparison), then powers of two up to the core count."""
    cores = cores or os.cpu_count() or 2
    counts = [1, 2]
    n = 4
    while n <= cores:
        counts.append(n)
        n *= 2
    return counts


def _common(size: BenchSize, imsize: int, cell: str, niter: int) -> dict:
    # datacolumn='data': the simulated MS has no calibrated column; naming it keeps every
    # implementation on the same column instead of relying on each one's fallback.
    return {"imsize": [imsize, imsize], "cell": cell, "weighting": "briggs", "robust": 0.5,
            "gridder": "standard", "stokes": "I", "datacolumn": "data", "niter": niter,
            "threshold": size.threshold}


def cube_params(size: BenchSize) -> dict:
    # nchan explicit: the published pclean splits a cube with nchan=-1 as if it had one channel.
    return {**_common(size, size.cube_imsize, size.cube_cell, size.cube_niter), "specmode": "cube",
            "nchan": size.cube_ms.nchan, "deconvolver": "hogbom"}


def continuum_params(size: BenchSize, deconvolver: str) -> dict:
    params = {**_common(size, size.continuum_imsize, size.continuum_cell, size.continuum_niter),
              "specmode": "mfs", "deconvolver": deconvolver}
    if deconvolver == "mtmfs":
        params["nterms"] = 2
    return params
