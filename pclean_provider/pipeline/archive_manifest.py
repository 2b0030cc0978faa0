"""The archive manifest: every file with size and SHA-256, plus provenance and ObsCore fields.

The manifest is the product's table of contents: ``verify`` trusts nothing else. It is written
last inside the staging folder, so a product folder with a manifest is a complete product.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
C_M_PER_S = 299_792_458.0


class ManifestFile(BaseModel):
    path: str  # relative to the product folder, with '/' separators
    size: int
    sha256: str
    role: str  # e.g. "fits:image", "qa:qa.json"
    source: str | None = None  # what it was made from (CASA image path, QA folder)
    fits_checksum: bool = False  # carries CHECKSUM/DATASUM keywords that verify re-checks


class ObsCore(BaseModel):
    """ObsCore-style discovery fields (IVOA ObsCore 1.1 names and units)."""

    dataproduct_type: Literal["cube", "image"]
    calib_level: int = 3  # 3 = science-ready image product
    obs_id: str
    obs_collection: str | None = None
    target_name: str | None = None
    s_ra: float | None = None  # deg
    s_dec: float | None = None  # deg
    s_fov: float | None = None  # deg
    s_resolution: float | None = None  # arcsec
    em_min: float | None = None  # m
    em_max: float | None = None  # m
    t_min: float | None = None  # MJD
    t_max: float | None = None  # MJD
    t_exptime: float | None = None  # s
    pol_states: str | None = "/I/"
    pol_xel: int | None = None  # number of polarization planes
    facility_name: str | None = None
    s_xel1: int | None = None  # pixels along the first spatial axis
    s_xel2: int | None = None
    em_xel: int | None = None  # channels
    em_res_power: float | None = None  # centre frequency / channel width
    o_ucd: str = "phot.flux.density;em.radio"
    access_format: str = "application/fits"


class Versions(BaseModel):
    provider: str | None
    casatools: str | None
    casatasks: str | None
    airflow: str | None
    python: str


class QaSummary(BaseModel):
    overall_score: float | None = None
    overall_band: str | None = None
    gate: str | None = None
    scores: list[dict[str, Any]] = []


class InputFingerprints(BaseModel):
    """What a product was made from, as hashes; ``key`` decides whether a publish is new.

    ``key`` covers the content of every archived image (``images``: file name -> content hash,
    see ``casa/image_fingerprint.py``) and the identity of the input MSs (``ms``). The imaging
    configuration is hashed too (``config``, paths and cluster settings left out), for the
    record, but is not part of the key: every parameter that changes a product changes its
    pixels, while a new run folder or scheduler address changes nothing in it.
    """

    images: dict[str, str]
    ms: dict[str, str] = {}
    config: str | None = None
    key: str


class Provenance(BaseModel):
    input_ms: list[str] = []
    ms_metadata: list[dict[str, Any]] = []
    imaging_config: dict[str, Any] = {}
    images: list[str] = []
    versions: Versions
    dag_run_id: str | None = None
    started_utc: str | None = None
    finished_utc: str
    host: str = Field(default_factory=platform.node)
    qa: QaSummary | None = None
    inputs: InputFingerprints | None = None  # absent in manifests written before fingerprints


class Manifest(BaseModel):
    schema_version: int = 1
    product_id: str
    created_utc: str
    files: list[ManifestFile]
    provenance: Provenance
    obscore: ObsCore


def sha256_of(path: str | os.PathLike, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_file(root: Path, path: Path, role: str, source: str | None = None, fits_checksum=False) -> ManifestFile:
    return ManifestFile(
        path=path.relative_to(root).as_posix(),
        size=path.stat().st_size,
        sha256=sha256_of(path),
        role=role,
        source=source,
        fits_checksum=fits_checksum,
    )


def package_versions() -> Versions:
    """Versions from package metadata only: importing Airflow here would be slow and wrong."""

    def v(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return Versions(
        provider=v("airflow-provider-pclean"),
        casatools=v("casatools"),
        casatasks=v("casatasks"),
        airflow=v("apache-airflow"),
        python=platform.python_version(),
    )


def wavelength_range_m(freq_min_hz: float, freq_max_hz: float) -> tuple[float | None, float | None]:
    """(em_min, em_max) in metres from a frequency range in Hz (high frequency = short wavelength)."""
    if freq_min_hz <= 0 or freq_max_hz <= 0:
        return None, None
    return C_M_PER_S / freq_max_hz, C_M_PER_S / freq_min_hz


def time_range_from_metadata(meta: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(t_min, t_max) in MJD from MS metadata, whatever its spelling of the time range.

    Accepts MJD days or CASA's MJD seconds (values above 1e6 are seconds).
    """

    def mjd(value) -> float | None:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(x):
            return None
        return x / 86400.0 if x > 1e6 else x

    pairs = (
        ("time_start_mjd_s", "time_end_mjd_s"),
        ("t_min", "t_max"),
        ("t_min_mjd", "t_max_mjd"),
        ("start_mjd", "end_mjd"),
        ("time_start_mjd", "time_end_mjd"),
        ("start_mjd_s", "end_mjd_s"),
    )
    for lo, hi in pairs:
        if lo in meta and hi in meta:
            return mjd(meta[lo]), mjd(meta[hi])
    for key in ("time_range_mjd", "time_range", "time_range_s", "time_range_mjd_s"):
        value = meta.get(key)
        if isinstance(value, Mapping):
            nums = [v for v in value.values() if isinstance(v, int | float)]
            if len(nums) >= 2:
                return mjd(min(nums)), mjd(max(nums))
        elif isinstance(value, list | tuple) and len(value) >= 2:
            return mjd(value[0]), mjd(value[-1])
    return None, None
