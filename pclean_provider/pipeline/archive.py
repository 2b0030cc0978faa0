"""Publish imaging products into an archive atomically, and verify what is there.

Layout::

    <archive_root>/
        .staging/                      invisible to readers; leftovers of crashed publishers
            <product>.<random>/        a product being assembled
            <product>.<random>.lock    held (flock) by the live publisher of that folder
        <product_id>/
            v0001/  manifest.json  *.fits  qa/qa.json qa/qa.html qa/qa.schema.json
            v0002/  ...

Why it is crash-safe: a product is assembled completely in ``.staging`` (FITS with checksums,
QA reports, and last the manifest), then one ``rename`` moves it to ``<product_id>/vNNNN``. A
directory rename is atomic, so readers see the version entirely or not at all, and a crash at
any point leaves the previous versions untouched and at most a staging folder that readers
never look at. The next publish removes staging folders whose publisher is dead (their lock
is free; the kernel drops an flock when its process dies, even on SIGKILL).

Why two publishers never share a version: ``rename`` onto an existing, non-empty directory
fails (ENOTEMPTY/EEXIST), and a published version always holds its manifest; the loser takes
the next number. Nothing is ever overwritten.

Who may read it: the files get the mode the template names (``archive.file_mode``), or what the
publisher's umask gives, as any file it creates; folders the same plus search (x) wherever read
is allowed. A published version is then made read-only (write bits removed from its files and
folders): it is never changed again, only superseded by a newer version.

Why a retry never publishes twice: every manifest records the product's input fingerprints
(``InputFingerprints.key``: the content of every archived image and the identity of the input
MSs) and the DAG run that published it. A publish whose key equals the newest version's (an
unchanged product, e.g. a rerun that re-made the same images), or equals the key of a version
published by the same DAG run (a retry after the rename committed, the task killed before it
could report), returns that version instead of making a new one. The check runs once before the
FITS export (to skip it) and again under the product's lock (``<product_id>/.publish.lock``)
just before the rename, so two publishers of the same inputs cannot both commit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pclean_provider.atomic_files import fsync_dir, umask_file_mode
from pclean_provider.atomic_files import write_text as atomic_write_text
from pclean_provider.casa import image_io
from pclean_provider.casa.image_fingerprint import image_fingerprint
from pclean_provider.casa.msinfo import read_ms_metadata
from pclean_provider.errors import PcleanInputError
from pclean_provider.pipeline.archive_manifest import (
    MANIFEST_NAME,
    InputFingerprints,
    Manifest,
    ManifestFile,
    ObsCore,
    Provenance,
    QaSummary,
    describe_file,
    package_versions,
    sha256_of,
    time_range_from_metadata,
    wavelength_range_m,
)
from pclean_provider.pipeline.fits_export import export_fits, science_products, verify_fits_checksums
from pclean_provider.pipeline.fits_provenance import build_provenance
from pclean_provider.pipeline.ingest import MsChangedError, verify_fingerprint

log = logging.getLogger(__name__)

STAGING = ".staging"
VERSION_RE = re.compile(r"^v(\d{4,})$")
PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
QA_FILES = ("qa.json", "qa.html", "qa.schema.json")
# Fault-injection hook for tests of crash safety: the publisher stops at the named point
# (see ``_pause``) so that a test can SIGKILL it there. Unset in normal operation.
PAUSE_ENV = "PCLEAN_ARCHIVE_PAUSE_AT"
PAUSE_SECONDS_ENV = "PCLEAN_ARCHIVE_PAUSE_SECONDS"
# A staging folder with no lock file is a publisher that died between creating the two;
# leave it alone for a while in case it is just being created.
ORPHAN_AGE_S = 600.0
# Held by a publisher from its last duplicate check to its rename. Never deleted, so every
# publisher of the product locks the same inode (a removed-and-recreated lock file could be
# held by two publishers at once).
PRODUCT_LOCK = ".publish.lock"
# Configuration keys that say where or on which cluster a run happened, not what it made: left
# out of the configuration's fingerprint.
RUN_SPECIFIC_CONFIG_KEYS = frozenset({
    "imagename", "scheduler_address", "local_directory", "address_file", "cluster", "nworkers",
    "threads_per_worker", "memory_limit", "keep_subcubes", "keep_partimages", "in_process_below_s",
})
# What identifies an MS's data in its metadata record (its path may differ between runs).
MS_IDENTITY_KEYS = ("nrows", "spws", "fields", "time_start_mjd_s", "time_end_mjd_s", "antennas", "telescope",
                    "observation_ids", "data_columns", "correlations")


class ArchiveError(PcleanInputError):
    """Bad publish arguments or an archive that cannot be used; the message names the fix."""


class PublishResult(BaseModel):
    product_id: str
    version: int
    path: str
    manifest: str
    nfiles: int
    removed_staging: list[str] = []
    # True when nothing new was published: this version already held the same inputs.
    already_published: bool = False
    inputs_key: str | None = None
    dag_run_id: str | None = None  # the run that published this version


class VerifyProblem(BaseModel):
    path: str
    reason: str


class VerifyResult(BaseModel):
    path: str
    ok: bool
    checked: int
    problems: list[VerifyProblem] = []

    def summary(self) -> str:
        if self.ok:
            return f"OK {self.path}: {self.checked} files verified"
        lines = [f"FAILED {self.path}: {len(self.problems)} problem(s)"]
        lines += [f"  {p.path}: {p.reason}" for p in self.problems]
        return "\n".join(lines)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pause(point: str) -> None:
    """Stop here when PAUSE_ENV names this point (used by crash tests, which then SIGKILL us)."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    sys.stderr.write(f"pclean-archive: paused at {point} (pid {os.getpid()})\n")
    sys.stderr.flush()
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "600")))


def check_product_id(product_id: str) -> str:
    if not PRODUCT_ID_RE.match(product_id or ""):
        raise ArchiveError(
            f"product_id={product_id!r} is not usable as a folder name; use letters, digits and . _ + - "
            "(not starting with '.' or '-'), e.g. product_id='ngc1234_cube'"
        )
    return product_id


def list_versions(product_dir: str | os.PathLike) -> list[int]:
    """Published version numbers of a product (staging and anything else ignored)."""
    path = Path(product_dir)
    if not path.is_dir():
        return []
    out = []
    for entry in path.iterdir():
        match = VERSION_RE.match(entry.name)
        if match and entry.is_dir():
            out.append(int(match.group(1)))
    return sorted(out)


def clean_stale_staging(archive_root: str | os.PathLike) -> list[str]:
    """Remove staging folders left by publishers that died; return what was removed."""
    staging = Path(archive_root) / STAGING
    if not staging.is_dir():
        return []
    removed = []
    for entry in sorted(staging.iterdir()):
        try:
            age = time.time() - entry.stat().st_mtime
        except FileNotFoundError:  # the lock of a folder removed just before
            continue
        if entry.name.endswith(".lock"):
            # A lock alone may be a publisher between creating its lock and its folder.
            if age > ORPHAN_AGE_S and not entry.with_suffix("").exists() and _lock_is_free(entry):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            continue
        lock = entry.with_name(entry.name + ".lock")
        if lock.exists():
            if not _lock_is_free(lock):
                continue  # a live publisher owns it
        elif age < ORPHAN_AGE_S:
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        removed.append(str(entry))
    return removed


def _lock_is_free(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return True


@contextlib.contextmanager
def staging_area(archive_root: str | os.PathLike, product_id: str) -> Iterator[Path]:
    """A fresh staging folder, locked for the life of this context; removed unless committed.

    The lock file is created and locked before the folder exists, so a cleaner never sees an
    unlocked folder of a live publisher.
    """
    # Not atomic_files.staged: a product's staging folder lives in the archive's shared .staging/
    # (readers of the product folder never see it, a cleaner finds crashed publishers' folders by
    # their free lock), and it is published by `commit` under a version number chosen only then.
    root = Path(archive_root).resolve()
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    fd, lock_path = tempfile.mkstemp(prefix=f"{product_id}.", suffix=".lock", dir=staging)
    fcntl.flock(fd, fcntl.LOCK_EX)
    folder = Path(lock_path[: -len(".lock")])
    try:
        folder.mkdir()
        yield folder
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def commit(archive_root: str | os.PathLike, product_id: str, folder: Path) -> tuple[int, Path]:
    """Rename a complete staging folder to the product's next free version; return it."""
    check_product_id(product_id)
    if not (folder / MANIFEST_NAME).is_file():
        raise ArchiveError(f"staging folder {folder} has no {MANIFEST_NAME}; refusing to publish it")
    product_dir = Path(archive_root).resolve() / product_id
    product_dir.mkdir(parents=True, exist_ok=True)
    version = (max(list_versions(product_dir), default=0)) + 1
    while True:
        target = product_dir / f"v{version:04d}"
        try:
            # A plain rename, never a replace: an existing version is another publisher's, kept.
            os.rename(folder, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                version += 1  # another publisher took this number first
                continue
            raise
        fsync_dir(product_dir)
        return version, target


def _sha_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _without_run_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_run_keys(v) for k, v in value.items() if k not in RUN_SPECIFIC_CONFIG_KEYS}
    if isinstance(value, list | tuple):
        return [_without_run_keys(v) for v in value]
    return value


def input_fingerprints(
    products: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    metadata: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any] | None,
) -> InputFingerprints:
    """Fingerprints of a product: its images' content, its MSs' identity, its configuration."""
    images = {}
    for base, found in products:
        stem = Path(base).name
        for suffix, image in found:
            images[f"{stem}{suffix}"] = image_fingerprint(image)
    ms = {}
    for meta in metadata:
        name = Path(str(meta.get("path") or "ms")).name
        ms[name] = _sha_json({k: meta.get(k) for k in MS_IDENTITY_KEYS})
    return InputFingerprints(
        images=images,
        ms=ms,
        config=_sha_json(_without_run_keys(config)) if config else None,
        key=_sha_json({"images": images, "ms": ms}),
    )


def _read_manifest(folder: Path) -> Manifest | None:
    try:
        return Manifest.model_validate_json((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def find_published(archive_root: str | os.PathLike, product_id: str, key: str,
                   dag_run_id: str | None = None) -> tuple[int, Path, Manifest] | None:
    """The version that already holds a product with these inputs, if publishing again would
    duplicate it: the newest version when its key is ``key`` (nothing changed), or any version
    with ``key`` published by ``dag_run_id`` (a retry of that run's publish)."""
    product_dir = Path(archive_root).resolve() / check_product_id(product_id)
    newest = True
    for version in reversed(list_versions(product_dir)):
        folder = product_dir / f"v{version:04d}"
        manifest = _read_manifest(folder)
        inputs = manifest.provenance.inputs if manifest else None
        if inputs is not None and inputs.key == key and (
                newest or (dag_run_id is not None and manifest.provenance.dag_run_id == dag_run_id)):
            return version, folder, manifest
        newest = False
    return None


@contextlib.contextmanager
def product_lock(archive_root: str | os.PathLike, product_id: str) -> Iterator[None]:
    """Exclusive lock of one product's publishing (released when the process dies)."""
    product_dir = Path(archive_root).resolve() / check_product_id(product_id)
    product_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(product_dir / PRODUCT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _existing_result(product_id: str, found: tuple[int, Path, Manifest], removed: list[str]) -> PublishResult:
    version, folder, manifest = found
    return PublishResult(
        product_id=product_id, version=version, path=str(folder), manifest=str(folder / MANIFEST_NAME),
        nfiles=len(manifest.files), removed_staging=removed, already_published=True,
        inputs_key=manifest.provenance.inputs.key if manifest.provenance.inputs else None,
        dag_run_id=manifest.provenance.dag_run_id,
    )


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    return atomic_write_text(folder / MANIFEST_NAME, manifest.model_dump_json(indent=2))


def _qa_summary(qa_json: Path | None) -> QaSummary | None:
    if qa_json is None or not qa_json.is_file():
        return None
    data = json.loads(qa_json.read_text())
    overall = data.get("overall_score")
    gate = None
    min_score = (data.get("thresholds") or {}).get("min_score_for_archive")
    if overall is not None and min_score is not None:
        gate = "archive" if overall >= min_score else "review"
    return QaSummary(
        overall_score=overall,
        overall_band=data.get("overall_band"),
        gate=gate,
        scores=[
            {k: s.get(k) for k in ("metric", "value", "unit", "score", "band", "applies_to", "message")}
            for s in data.get("scores", [])
        ],
    )


def _ms_metadata(vis: Sequence[str], ms_metadata) -> list[dict[str, Any]]:
    if ms_metadata is not None:
        items = ms_metadata if isinstance(ms_metadata, list | tuple) else [ms_metadata]
        return [m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(m) for m in items]
    out = []
    for path in vis:
        out.append(read_ms_metadata(path).model_dump(mode="json"))
    return out


def parse_file_mode(value: str | int | None, what: str = "archive.file_mode") -> int | None:
    """An octal file mode ('0640', 0o640) as an int, None for "follow the umask"; ArchiveError if unusable."""
    if value in (None, ""):
        return None
    try:
        mode = value if isinstance(value, int) else int(str(value), 8)
    except ValueError:
        raise ArchiveError(f"{what}={value!r} is not an octal file mode; give e.g. '0640' (owner read-write, "
                           "group read) or leave it empty to follow the umask") from None
    if not 0 <= mode <= 0o666 or not mode & 0o400:
        raise ArchiveError(f"{what}={value!r} ({mode:#o}): a product file mode may only hold read/write bits "
                           "(at most 0666) and must let the owner read; e.g. '0640', or empty for the umask")
    return mode


def _dir_mode(file_mode: int) -> int:
    # A folder whose files may be read must also be searchable by the same people; its owner keeps
    # full rights until the version is published (the rename of a folder and the removal of a failed
    # staging folder need them), when make_read_only takes the write bit.
    return file_mode | 0o700 | ((file_mode & 0o044) >> 2)


def _apply_modes(folder: Path, file_mode: int) -> None:
    """Give every file `file_mode` and every folder its searchable twin (before publishing)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)
        for name in dirs:
            os.chmod(os.path.join(root, name), _dir_mode(file_mode))
    os.chmod(folder, _dir_mode(file_mode))


def make_read_only(folder: str | os.PathLike) -> None:
    """Remove every write bit from a published version: its content is final.

    Folders last and bottom-up, so an interruption never leaves a read-only folder over files that
    are still to be changed. A cleaner or an operator who must remove a version restores write
    permission first (``chmod -R u+w``)."""
    folder = os.fspath(folder)
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode & 0o7555)
        for name in dirs:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode & 0o7555)
    os.chmod(folder, os.stat(folder).st_mode & 0o7555)


def check_ms_unchanged(vis_list: Sequence[str], metadata: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (ArchiveError) when an input MS is not the one ingest fingerprinted.

    The metadata records come from ingest (one per MS, in the order of ``vis``); a record without
    a fingerprint (read afresh, or from an older ingest) has nothing to compare with.
    """
    for i, meta in enumerate(metadata):
        vis = vis_list[i] if i < len(vis_list) else meta.get("path")
        if not vis or not meta.get("fingerprint"):
            continue
        try:
            verify_fingerprint(vis, meta["fingerprint"], "archive")
        except MsChangedError as exc:
            raise ArchiveError(str(exc)) from exc


def publish(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    archive_root: str | os.PathLike,
    product_id: str | None = None,
    *,
    qa_dir: str | os.PathLike | None = None,
    vis: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    ms_metadata: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any | None = None,
    config: Mapping[str, Any] | Any | None = None,
    dag_run_id: str | None = None,
    started_utc: str | None = None,
    obs_id: str | None = None,
    obs_collection: str | None = None,
    file_mode: str | int | None = None,
) -> PublishResult:
    """Export the products' science images to FITS, write the manifest, publish a new version.

    ``images`` are imagename prefixes (as given to tclean/pclean). ``qa_dir`` holds qa.json /
    qa.html / qa.schema.json (default ``<first imagename>.qa`` when it exists). ``config`` is
    the full imaging configuration (a dict or a PcleanConfig). ``ms_metadata`` may be given
    instead of reading each ``vis`` again.

    Idempotent: when the archive already holds these inputs as its newest version, or as a
    version this ``dag_run_id`` published, that version is returned (``already_published``)
    and nothing is written. ``file_mode`` (octal, e.g. '0640') sets the published files' mode;
    None follows the umask. The published version is read-only.
    """
    started_utc = started_utc or _now()
    mode = parse_file_mode(file_mode)
    names = [images] if isinstance(images, str | os.PathLike) else list(images)
    if not names:
        raise ArchiveError("images is empty; pass at least one imagename (e.g. --image /data/run1/cube)")
    products = []
    for name in names:
        found = science_products(name)
        if not found:
            raise ArchiveError(
                f"image={name}: no science images found ({name}.image or {name}.image.tt0); pass the "
                "imagename prefix given to tclean/pclean"
            )
        products.append((os.path.abspath(os.fspath(name)), found))
    product_id = check_product_id(product_id or Path(products[0][0]).name)
    vis_list = [] if vis is None else ([os.fspath(vis)] if isinstance(vis, str | os.PathLike) else [os.fspath(v) for v in vis])
    vis_list = [os.path.abspath(v) for v in vis_list]
    for v in vis_list:
        if not os.path.isdir(v):
            raise ArchiveError(f"vis={v} does not exist; pass the MeasurementSet the product was imaged from")
    qa_path = Path(qa_dir) if qa_dir is not None else Path(products[0][0] + ".qa")
    if qa_dir is not None and not (qa_path / "qa.json").is_file():
        raise ArchiveError(f"qa_dir={qa_path} has no qa.json; run `pclean qa --out {qa_path}` first or omit it")
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    config_dict = dict(config or {})
    metadata = _ms_metadata(vis_list, ms_metadata)
    check_ms_unchanged(vis_list, metadata)

    root = Path(archive_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    removed = clean_stale_staging(root)
    if removed:
        log.info("archive: removed %d staging folder(s) of dead publishers", len(removed))
    inputs = input_fingerprints(products, metadata, config_dict)
    found = find_published(root, product_id, inputs.key, dag_run_id)
    if found:
        log.info("archive %s: version %d already holds these inputs (published by run %s); nothing new to publish",
                 product_id, found[0], found[2].provenance.dag_run_id)
        return _existing_result(product_id, found, removed)
    versions = package_versions()
    qa_summary = _qa_summary(qa_path / "qa.json")
    provenance = build_provenance(
        product_id=product_id, versions=versions.model_dump(), dag_run_id=dag_run_id, inputs_key=inputs.key,
        ms_fingerprints=inputs.ms, qa=qa_summary.model_dump() if qa_summary else None, config=config_dict)
    with staging_area(root, product_id) as folder:
        _pause("staging-created")
        files: list[ManifestFile] = []
        used_names: set[str] = set()
        for base, found in products:
            stem = Path(base).name
            for suffix, image in found:
                fits_name = f"{stem}{suffix}.fits"
                if fits_name in used_names:
                    raise ArchiveError(f"two images would both be archived as {fits_name}; give them distinct names")
                used_names.add(fits_name)
                log.info("archive %s: exporting %s", product_id, fits_name)
                out = export_fits(image, folder / fits_name, provenance)
                files.append(describe_file(folder, out, f"fits:{suffix.lstrip('.')}", image, fits_checksum=True))
        _pause("fits-written")
        if (qa_path / "qa.json").is_file():
            (folder / "qa").mkdir()
            for name in QA_FILES:
                src = qa_path / name
                if src.is_file():
                    dst = folder / "qa" / name
                    shutil.copyfile(src, dst)
                    files.append(describe_file(folder, dst, f"qa:{name}", str(src)))

        first_image = products[0][1][0][1]
        with image_io.ImageReader(first_image) as reader:
            beams = [b.major_arcsec for b in reader.beams if b]
            fmin = float(reader.freqs_hz.min() - reader.chan_width_hz / 2)
            fmax = float(reader.freqs_hz.max() + reader.chan_width_hz / 2)
            fov_deg = max(reader.nx * reader.cell_arcsec[0], reader.ny * reader.cell_arcsec[1]) / 3600.0
            nx, ny, stokes = reader.nx, reader.ny, reader.stokes
            centre_hz = float(reader.freqs_hz.mean())
            res_power = centre_hz / reader.chan_width_hz if reader.chan_width_hz > 0 else None
        nchans = []
        for _base, found in products:
            with image_io.ImageReader(found[0][1], with_beams=False) as reader:
                nchans.append(reader.nchan)
        ra, dec = image_io.image_centre_world(first_image)
        em_min, em_max = wavelength_range_m(fmin, fmax)
        t_min = t_max = None
        for meta in metadata:
            lo, hi = time_range_from_metadata(meta)
            if lo is not None:
                t_min = lo if t_min is None else min(t_min, lo)
                t_max = hi if t_max is None else max(t_max, hi)
        if t_min is None and vis_list:
            ranges = [image_io.ms_time_range_mjd(v) for v in vis_list]
            t_min, t_max = min(r[0] for r in ranges), max(r[1] for r in ranges)
        first_meta = metadata[0] if metadata else {}
        fields = first_meta.get("fields") or []
        obscore = ObsCore(
            dataproduct_type="cube" if max(nchans) > 1 else "image",
            obs_id=obs_id or (Path(vis_list[0]).name.removesuffix(".ms") if vis_list else product_id),
            obs_collection=obs_collection,
            target_name=fields[0].get("name") if fields and isinstance(fields[0], Mapping) else None,
            s_ra=ra,
            s_dec=dec,
            s_fov=fov_deg,
            s_resolution=sorted(beams)[len(beams) // 2] if beams else None,
            em_min=em_min,
            em_max=em_max,
            t_min=t_min,
            t_max=t_max,
            t_exptime=(t_max - t_min) * 86400.0 if t_min is not None and t_max is not None else None,
            facility_name=first_meta.get("telescope"),
            pol_states="/" + "/".join(stokes) + "/",
            pol_xel=len(stokes),
            s_xel1=nx,
            s_xel2=ny,
            em_xel=max(nchans),
            em_res_power=res_power,
        )
        manifest = Manifest(
            product_id=product_id,
            created_utc=_now(),
            files=files,
            provenance=Provenance(
                input_ms=vis_list or [str(m.get("path")) for m in metadata if m.get("path")],
                ms_metadata=metadata,
                imaging_config=config_dict,
                images=[p[0] for p in products],
                versions=versions,
                dag_run_id=dag_run_id,
                started_utc=started_utc,
                finished_utc=_now(),
                qa=qa_summary,
                inputs=inputs,
            ),
            obscore=obscore,
        )
        write_manifest(folder, manifest)
        _apply_modes(folder, umask_file_mode() if mode is None else mode)
        fsync_dir(folder)
        _pause("manifest-written")
        # Once more at the last moment: a copy over the MS during the export must not be archived.
        check_ms_unchanged(vis_list, metadata)
        with product_lock(root, product_id):
            # Another publisher of the same inputs may have committed while this one exported.
            found = find_published(root, product_id, inputs.key, dag_run_id)
            if found:
                log.info("archive %s: version %d was published meanwhile with the same inputs; discarding this copy",
                         product_id, found[0])
                return _existing_result(product_id, found, removed)
            version, target = commit(root, product_id, folder)
            # After the rename: a folder without write permission could not be renamed by its owner.
            make_read_only(target)
        log.info("archive %s: published version %d at %s (%d files)", product_id, version, target, len(files))
    _pause("committed")
    return PublishResult(
        product_id=product_id,
        version=version,
        path=str(target),
        manifest=str(target / MANIFEST_NAME),
        nfiles=len(files),
        removed_staging=removed,
        inputs_key=inputs.key,
        dag_run_id=dag_run_id,
    )


def verify(path: str | os.PathLike) -> VerifyResult:
    """Re-check one published version: every manifest file exists with its size and SHA-256,
    FITS CHECKSUM/DATASUM verify, and no file is there that the manifest does not list.
    """
    folder = Path(path).resolve()
    problems: list[VerifyProblem] = []
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return VerifyResult(
            path=str(folder), ok=False, checked=0, problems=[VerifyProblem(path=MANIFEST_NAME, reason="missing")]
        )
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text())
    except Exception as exc:
        return VerifyResult(
            path=str(folder), ok=False, checked=0,
            problems=[VerifyProblem(path=MANIFEST_NAME, reason=f"unreadable: {exc}")],
        )
    listed = set()
    checked = 0
    for entry in manifest.files:
        listed.add(entry.path)
        if entry.path.startswith("/") or ".." in Path(entry.path).parts:
            problems.append(VerifyProblem(path=entry.path, reason="manifest path leaves the product folder"))
            continue
        target = folder / entry.path
        if not target.is_file():
            problems.append(VerifyProblem(path=entry.path, reason="missing (listed in the manifest)"))
            continue
        checked += 1
        size = target.stat().st_size
        if size != entry.size:
            problems.append(VerifyProblem(path=entry.path, reason=f"size {size} != manifest {entry.size}"))
        digest = sha256_of(target)
        if digest != entry.sha256:
            problems.append(VerifyProblem(path=entry.path, reason=f"SHA-256 {digest[:16]}... != manifest {entry.sha256[:16]}..."))
        if entry.fits_checksum:
            for issue in verify_fits_checksums(target):
                problems.append(VerifyProblem(path=entry.path, reason=f"FITS {issue}"))
    for dirpath, _dirs, filenames in os.walk(folder):
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel != MANIFEST_NAME and rel not in listed:
                problems.append(VerifyProblem(path=rel, reason="not listed in the manifest"))
    return VerifyResult(path=str(folder), ok=not problems, checked=checked, problems=problems)


def verify_tree(path: str | os.PathLike) -> list[VerifyResult]:
    """Verify one version folder, every version of a product, or every product of an archive."""
    folder = Path(path).resolve()
    if not folder.is_dir():
        return [VerifyResult(path=str(folder), ok=False, checked=0, problems=[VerifyProblem(path=str(folder), reason="no such folder")])]
    if (folder / MANIFEST_NAME).exists():
        return [verify(folder)]
    versions = list_versions(folder)
    if versions:
        return [verify(folder / f"v{v:04d}") for v in versions]
    results = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith(".") and list_versions(entry):
            results.extend(verify(entry / f"v{v:04d}") for v in list_versions(entry))
    if not results:
        return [verify(folder)]  # reports the missing manifest
    return results
