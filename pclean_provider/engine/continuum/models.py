"""What a continuum run reports: one CycleReport per major cycle, one ContinuumResult at the end.

Both are small pydantic models (paths and numbers, never pixels), so they cross process
boundaries (a Dask task, the coordinator subprocess) as JSON. pclean() and the continuum operator
hand the run on as the one result type of every imaging entry point, `engine.models.PcleanResult`,
with the ContinuumResult as its `continuum` (`ContinuumResult.pclean_result`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from pclean_provider.engine.continuum.stages import StageTime
from pclean_provider.engine.models import PcleanResult, tclean_summary


class CycleReport(BaseModel):
    """The state after one major cycle (cycle 0 is the dirty image)."""

    run_id: str
    cycle: int
    iterations: int = Field(description="Minor-cycle iterations done so far, over all cycles.")
    peak_residual: float | None = Field(None, description="Peak residual (Jy/beam) after this cycle.")
    model_flux: float | None = Field(None, description="Total model flux (Jy) after this cycle.")
    elapsed_s: float = Field(description="Seconds since the run started.")
    major_s: float = Field(0.0, description="Seconds of this major cycle (all parts, in parallel).")
    minor_s: float = Field(0.0, description="Seconds of the minor cycle before it (coordinator).")
    stopcode: int = 0
    stop_reason: str | None = None

    def line(self) -> str:
        peak = "n/a" if self.peak_residual is None else f"{self.peak_residual:.4g} Jy/beam"
        flux = "n/a" if self.model_flux is None else f"{self.model_flux:.4g} Jy"
        text = (f"continuum major cycle {self.cycle}: {self.iterations} iterations, peak residual {peak}, "
                f"model flux {flux}, {self.elapsed_s:.1f} s")
        if self.stop_reason:
            text += f" (stopped: {self.stop_reason})"
        return text


class ContinuumResult(BaseModel):
    run_id: str
    imagename: str
    products: list[str] = Field(description="Absolute paths of the images written (image, psf, ...).")
    nparts: int
    workers: list[str] = Field(default_factory=list)
    iterations: int = 0
    major_cycles: int = Field(0, description="Major cycles after the dirty image (tclean's nmajordone - 1).")
    stopcode: int = 0
    stop_reason: str | None = None
    cycles: list[CycleReport] = Field(default_factory=list)
    elapsed_s: float = 0.0
    setup_s: float = Field(0.0, description="Partitioning, imager set-up and weighting.")
    psf_s: float = 0.0
    major_cycle_s: float = Field(0.0, description="All major cycles, including the dirty image.")
    minor_cycle_s: float = Field(0.0, description="All minor cycles and mask updates (serial, coordinator).")
    restore_s: float = 0.0
    cluster_start_s: float | None = Field(None, description="Starting the cluster for this run (not in elapsed_s).")
    stages: list[StageTime] = Field(default_factory=list,
                                    description="Every stage in order (engine/continuum/stages.py); sums above.")
    progress_file: str | None = None
    part_images_kept: bool = False
    summary: dict = Field(default_factory=dict, description="Small figures from CASA's iteration summary.")

    @property
    def minor_cycle_share(self) -> float:
        return self.minor_cycle_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def pclean_result(self, *, specmode: str, niter: int, parallel: bool, seconds: float) -> PcleanResult:
        """This run as pclean() and the imaging operators report it: products by suffix, tclean's
        return record as `summary`, and this record as `continuum`."""
        products = {(p[len(self.imagename):] if p.startswith(self.imagename) else p): p for p in self.products}
        return PcleanResult(imagename=self.imagename, specmode=specmode, parallel=parallel, products=products,
                            iterations=self.iterations, stop_reason=self.stop_reason or "", seconds=seconds,
                            nworkers=self.nparts, continuum=self.model_dump(mode="json"),
                            summary=tclean_summary(niter, self.summary))
