"""Archive staging, versioning, manifest and verify on FITS files made with astropy (no CASA)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pclean_provider.pipeline import archive as ar
from pclean_provider.pipeline.archive_manifest import (
    Manifest,
    ObsCore,
    Provenance,
    describe_file,
    package_versions,
    time_range_from_metadata,
    wavelength_range_m,
)
from pclean_provider.pipeline.fits_export import add_checksums, verify_fits_checksums


def _fits(path: Path, value: float = 1.0) -> Path:
    raw = path.with_name(path.name + ".raw")
    fits.PrimaryHDU(np.full((8, 8), value, dtype="f4")).writeto(raw)
    add_checksums(raw, path)
    raw.unlink()
    return path


def _stage_product(root: Path, product_id: str = "prod", value: float = 1.0) -> tuple[int, Path]:
    with ar.staging_area(root, product_id) as folder:
        f = _fits(folder / "prod.image.fits", value)
        (folder / "qa").mkdir()
        (folder / "qa" / "qa.json").write_text("{}")
        files = [describe_file(folder, f, "fits:image", fits_checksum=True),
                 describe_file(folder, folder / "qa" / "qa.json", "qa:qa.json")]
        manifest = Manifest(
            product_id=product_id, created_utc="t", files=files,
            provenance=Provenance(versions=package_versions(), finished_utc="t"),
            obscore=ObsCore(dataproduct_type="image", obs_id="o"),
        )
        ar.write_manifest(folder, manifest)
        return ar.commit(root, product_id, folder)


def test_publish_makes_new_versions_and_keeps_old(tmp_path):
    v1, p1 = _stage_product(tmp_path, value=1.0)
    before = (p1 / "manifest.json").read_bytes()
    v2, p2 = _stage_product(tmp_path, value=2.0)
    assert (v1, v2) == (1, 2)
    assert p1.name == "v0001" and p2.name == "v0002"
    assert (p1 / "manifest.json").read_bytes() == before
    assert ar.verify(p1).ok and ar.verify(p2).ok
    assert ar.list_versions(tmp_path / "prod") == [1, 2]
    # Nothing left behind in staging after a clean publish.
    assert [p.name for p in (tmp_path / ".staging").iterdir()] == []


def _publish_worker(root: str, queue) -> None:
    queue.put(_stage_product(Path(root))[0])


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_publish_worker, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    versions = sorted(queue.get(timeout=5) for _ in procs)
    assert versions == [1, 2, 3, 4]
    assert all(ar.verify(tmp_path / "prod" / f"v{v:04d}").ok for v in versions)


def test_commit_refuses_folder_without_manifest(tmp_path):
    with ar.staging_area(tmp_path, "prod") as folder:
        (folder / "x.fits").write_text("x")
        with pytest.raises(ar.ArchiveError, match="no manifest.json"):
            ar.commit(tmp_path, "prod", folder)
    assert not (tmp_path / "prod").exists() or ar.list_versions(tmp_path / "prod") == []


def test_clean_stale_staging_removes_dead_keeps_live(tmp_path):
    staging = tmp_path / ".staging"
    staging.mkdir()
    dead = staging / "prod.dead"
    dead.mkdir()
    (dead / "half.fits").write_text("partial")
    (staging / "prod.dead.lock").write_text("")  # nobody holds it: its publisher died
    live = staging / "prod.live"
    live.mkdir()
    lock = staging / "prod.live.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = ar.clean_stale_staging(tmp_path)
        assert removed == [str(dead)]
        assert not dead.exists() and not (staging / "prod.dead.lock").exists()
        assert live.exists() and lock.exists()
    finally:
        os.close(fd)


def test_verify_catches_flipped_byte_missing_and_unlisted_files(tmp_path):
    _, folder = _stage_product(tmp_path)
    fits_path = folder / "prod.image.fits"
    data = bytearray(fits_path.read_bytes())
    data[2880 + 17] ^= 0x01  # one bit in the data unit
    fits_path.write_bytes(bytes(data))
    result = ar.verify(folder)
    assert not result.ok
    reasons = [p.reason for p in result.problems if p.path == "prod.image.fits"]
    assert any("SHA-256" in r for r in reasons)
    assert any("DATASUM" in r for r in reasons)

    (folder / "qa" / "qa.json").unlink()
    (folder / "stray.txt").write_text("?")
    result = ar.verify(folder)
    paths = {p.path: p.reason for p in result.problems}
    assert "missing" in paths["qa/qa.json"]
    assert "not listed" in paths["stray.txt"]
    assert "prod.image.fits" in result.summary()


def test_verify_tree_walks_archive(tmp_path):
    _stage_product(tmp_path, "a")
    _stage_product(tmp_path, "b")
    results = ar.verify_tree(tmp_path)
    assert len(results) == 2 and all(r.ok for r in results)
    assert not ar.verify_tree(tmp_path / "nope")[0].ok


def test_fits_checksum_verification(tmp_path):
    good = _fits(tmp_path / "g.fits")
    assert verify_fits_checksums(good) == []
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((4, 4), "f4")).writeto(plain)
    assert any("no CHECKSUM" in p for p in verify_fits_checksums(plain))
    (tmp_path / "junk.fits").write_bytes(b"not a fits file")
    assert verify_fits_checksums(tmp_path / "junk.fits")


def test_product_id_validation():
    assert ar.check_product_id("ngc1234_cube.v2") == "ngc1234_cube.v2"
    for bad in ("", ".hidden", "a/b", "-x", "a b"):
        with pytest.raises(ar.ArchiveError, match="product_id"):
            ar.check_product_id(bad)


def test_obscore_helpers():
    em_min, em_max = wavelength_range_m(1.384e9, 1.416e9)
    assert em_min == pytest.approx(299792458 / 1.416e9) and em_min < em_max
    assert time_range_from_metadata({"time_start_mjd_s": 86400.0 * 60000, "time_end_mjd_s": 86400.0 * 60000.5}) == (
        pytest.approx(60000.0), pytest.approx(60000.5))
    assert time_range_from_metadata({"time_range": [60001.0, 60002.0]}) == (60001.0, 60002.0)
    assert time_range_from_metadata({}) == (None, None)


def test_pause_hook_is_inert_without_env(monkeypatch, capsys):
    monkeypatch.delenv(ar.PAUSE_ENV, raising=False)
    ar._pause("fits-written")  # returns at once, silently
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(ar.PAUSE_ENV, "fits-written")
    monkeypatch.setenv(ar.PAUSE_SECONDS_ENV, "0")
    ar._pause("other-point")  # another point does not pause
    assert capsys.readouterr().err == ""
    ar._pause("fits-written")
    assert "paused at fits-written" in capsys.readouterr().err


def test_archive_refuses_an_ms_changed_since_ingest(tmp_path):
    from pclean_provider.pipeline.ingest import ms_fingerprint

    ms = tmp_path / "night.ms"
    (ms / "ANTENNA").mkdir(parents=True)
    (ms / "table.f0").write_bytes(b"rows")
    meta = {"path": str(ms), "nrows": 1, "fingerprint": ms_fingerprint(ms)}
    ar.check_ms_unchanged([str(ms)], [meta])
    ar.check_ms_unchanged([str(ms)], [{"nrows": 1}])  # no fingerprint recorded: nothing to compare
    (ms / "table.f0").write_bytes(b"rows of another copy")
    with pytest.raises(ar.ArchiveError, match=r"night.ms.*changed since ingest.*archive refuses it"):
        ar.check_ms_unchanged([str(ms)], [meta])
    with pytest.raises(ar.ArchiveError, match="changed since ingest"):
        ar.check_ms_unchanged([], [meta])  # the MS is found by the metadata's path


def _modes(folder: Path) -> dict[str, int]:
    import stat

    return {str(p.relative_to(folder)) or ".": stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("0640", 0o640), ("600", 0o600), (0o644, 0o644)])
def test_file_mode_parses_octal(value, expected):
    assert ar.parse_file_mode(value) == expected


@pytest.mark.parametrize("value, why", [("rw-r-----", "not an octal"), ("0755", "at most 0666"),
                                        ("0044", "owner read"), ("01644", "at most 0666")])
def test_file_mode_refuses_what_is_not_a_file_mode(value, why):
    with pytest.raises(ar.ArchiveError, match=why):
        ar.parse_file_mode(value)


def test_template_archive_file_mode_is_checked_when_loaded():
    from pclean_provider.pipeline.pipeline_template import ArchivePolicy

    assert ArchivePolicy(file_mode="640").file_mode == "0640" and ArchivePolicy().file_mode is None
    with pytest.raises(ValueError, match="quote it"):
        ArchivePolicy(file_mode=640)  # YAML's reading of an unquoted 0640
    with pytest.raises(ValueError, match="archive.file_mode='0777'"):
        ArchivePolicy(file_mode="0777")


@pytest.mark.parametrize("file_mode, umask, files, dirs", [
    (0o640, 0o022, 0o440, 0o550),   # the template's mode, whatever the umask
    (None, 0o027, 0o440, 0o550),    # no mode: the umask decides (0666 & ~027 = 0640)
    (None, 0o002, 0o444, 0o555),
])
def test_published_version_follows_the_mode_and_is_read_only(tmp_path, file_mode, umask, files, dirs):
    old = os.umask(umask)
    try:
        with ar.staging_area(tmp_path, "prod") as folder:
            (folder / "qa").mkdir()
            (folder / "qa" / "qa.json").write_text("{}")
            (folder / "prod.image.fits").write_bytes(b"fits")
            ar.write_manifest(folder, Manifest(
                product_id="prod", created_utc="t", files=[], obscore=ObsCore(dataproduct_type="image", obs_id="o"),
                provenance=Provenance(versions=package_versions(), finished_utc="t")))
            ar._apply_modes(folder, ar.umask_file_mode() if file_mode is None else file_mode)
            _version, target = ar.commit(tmp_path, "prod", folder)
            ar.make_read_only(target)
    finally:
        os.umask(old)
    modes = _modes(target)
    assert {k: v for k, v in modes.items() if (target / k).is_file()} == dict.fromkeys(
        ["manifest.json", "prod.image.fits", "qa/qa.json"], files)
    assert {k: v for k, v in modes.items() if (target / k).is_dir()} == {".": dirs, "qa": dirs}
    assert not list((tmp_path / ar.STAGING).iterdir())  # the staging lock went with the publish


def test_failed_publish_after_the_modes_is_cleaned_up(tmp_path):
    with pytest.raises(RuntimeError, match="export failed"), ar.staging_area(tmp_path, "prod") as folder:
        (folder / "qa").mkdir()
        (folder / "qa" / "qa.json").write_text("{}")
        ar._apply_modes(folder, 0o400)  # even a mode without owner write leaves the staging removable
        raise RuntimeError("export failed")
    assert not list((tmp_path / ar.STAGING).iterdir())
