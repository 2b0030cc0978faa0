"""The imaging-plan policy: how a template asks for cells, sizes and targets derived from the data.

A template states policies here (``plan:`` in a pipeline template, ``--policy`` of ``pclean
plan``); a tclean parameter pinned in the template's or the run's overrides (``cell: 0.5arcsec``)
still wins over the policy, and the plan records that it did.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PlanPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Literal["science", "all"] = Field(
        "science", description="Which fields become imaging targets. 'science': fields observed with a "
        "science intent (OBSERVE_TARGET), and every field of an MS that records no intents; calibrator "
        "fields are skipped with that reason. 'all': calibrators are imaged too, each as a target of its own.")
    spw_grouping: Literal["auto", "per_spw", "together"] = Field(
        "auto", description="Spectral windows per target. 'per_spw': one target per spectral window "
        "(cubes of native channels, which differ in width between windows); 'together': one target over "
        "all of a source's windows (continuum); 'auto': per_spw for cubes, together for continuum.")
    cell: Literal["auto"] = Field(
        "auto", description="The cell is a fraction of the synthesized beam's minor axis, estimated from the "
        "weighted uv coverage of the target's own data with the run's weighting (a pinned `cell` wins).")
    pixels_per_beam: float = Field(
        5.0, ge=3.0, le=20.0, description="Pixels across the beam's minor axis (the cell is the beam "
        "divided by this, rounded down to two significant digits).")
    imsize: Literal["auto"] = Field(
        "auto", description="The image covers the primary beam down to pb_level (the union of the "
        "pointings for a mosaic), rounded up to a size the FFT handles fast (a pinned `imsize` wins).")
    pb_level: float = Field(
        0.2, gt=0.0, lt=1.0, description="Primary-beam response at the image edge (0.2: out to where the "
        "dishes see a fifth of the centre's response, 1.5 FWHM across).")
    pb_fwhm_factor: float = Field(
        1.13, gt=0.5, lt=2.0, description="Primary-beam FWHM in units of lambda/D (1.13 for a tapered "
        "illumination, as ALMA uses; the VLA's 25 m dishes are close to 1.02-1.13).")
    max_imsize: int = Field(
        8192, ge=64, description="Most pixels along either image axis; a larger field is cut down to this "
        "and the plan records the cut.")
    max_cube_gb: float = Field(
        40.0, gt=0, description="Largest image cube (nx * ny * channels * 4 bytes) one target may make; "
        "the field is cut down (never below the primary beam FWHM) and then the cell coarsened (never "
        "below 3 pixels per beam) until it fits.")
    max_products_gb: float = Field(
        300.0, gt=0, description="Disk budget of all of one target's products (image, residual, model, "
        "psf, pb, mask, ...): about 6 cubes' worth.")
    gridder: Literal["auto"] = Field(
        "auto", description="'auto': mosaic for several pointings, w-projection where the w-term's phase at "
        "the image edge exceeds wproject_phase_rad, else standard (a pinned `gridder` wins).")
    wproject_phase_rad: float = Field(
        1.0, gt=0, description="The w-term phase (pi * w_max * theta^2, theta the image half-width) above "
        "which gridder auto chooses w-projection.")
    stopping: Literal["auto", "template"] = Field(
        "auto", description="'auto': clean down to nsigma times the noise measured in each major cycle's "
        "residual (tclean's nsigma), unless the template pins threshold or nsigma; 'template': only the "
        "template's own niter/threshold/nsigma.")
    nsigma: float = Field(3.0, gt=0, description="The noise multiple stopping auto cleans down to.")
    max_uv_rows: int = Field(
        200_000, ge=1000, description="Rows of UVW and WEIGHT read for the beam estimate, at a fixed stride "
        "through the MS (more only costs time; the same MS always gives the same sample).")
