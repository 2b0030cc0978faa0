"""How long one target's imaging may take before its task gives up: a bound from the template that
grows with the cube.

An imaging task waits on its coordinator, which can hang for good (a CASA table lock, an NFS mount
in D state, a scheduler stopped with SIGSTOP that still accepts connections); every poll of the
waiting trigger renews the cluster's lease, so without a bound the task, the cluster and its SLURM
jobs would wait for ever. The bound is the template's (``imaging_timeout``): pinned in minutes, or a
base plus time per gigabyte of the image cube (nx * ny * channels * 4 bytes: what gridding and
cleaning scale with) and per gigabyte of the MeasurementSet (what every major cycle reads).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GB = 1e9


class ImagingTimeout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minutes: float | None = Field(
        None, gt=0, description="The bound of every target's imaging, pinned. Unset: base_minutes plus the "
        "per-gigabyte terms below, from each target's own cube and MS.")
    base_minutes: float = Field(60.0, gt=0, description="Minutes every target gets (start-up, PSF, a few cycles).")
    minutes_per_cube_gb: float = Field(
        60.0, ge=0, description="Minutes per gigabyte of the image cube (nx * ny * channels * 4 bytes).")
    minutes_per_ms_gb: float = Field(15.0, ge=0, description="Minutes per gigabyte of the MeasurementSet.")
    most_minutes: float = Field(
        7 * 24 * 60.0, gt=0, description="Never more than this, however large the cube (a week).")

    def bound(self, nx: int, ny: int, nchan: int, ms_bytes: float) -> tuple[float, str]:
        """(seconds, how they were reached) for one target's imaging."""
        if self.minutes is not None:
            return self.minutes * 60.0, f"{self.minutes:g} min (the template's imaging_timeout.minutes)"
        cube_gb = nx * ny * max(nchan, 1) * 4 / GB
        ms_gb = max(ms_bytes, 0.0) / GB
        minutes = self.base_minutes + self.minutes_per_cube_gb * cube_gb + self.minutes_per_ms_gb * ms_gb
        capped = minutes > self.most_minutes
        minutes = min(minutes, self.most_minutes)
        how = (f"{minutes:.0f} min: {self.base_minutes:g} min + {self.minutes_per_cube_gb:g} min/GB x "
               f"{cube_gb:.3g} GB image cube ({nx}x{ny}x{max(nchan, 1)}) + {self.minutes_per_ms_gb:g} min/GB x "
               f"{ms_gb:.3g} GB MS{', capped at most_minutes' if capped else ''} (the template's imaging_timeout)")
        return minutes * 60.0, how
