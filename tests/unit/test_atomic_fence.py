"""atomic_files: the folder swap leaves nothing beside the folder; the claim fences older writers.

Real folders on the real filesystem; the orders of two writers are made explicit by calling the
steps of each writer in turn (a writer is: claim, write its staging folder, replace)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pclean_provider import atomic_files
from pclean_provider.atomic_files import DirClaim, SupersededWriteError, replace_dir


def staged(parent: Path, name: str, content: str) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "product").write_text(content)
    return folder


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "rename-aside"])
def test_replace_dir_leaves_only_the_new_folder(tmp_path, monkeypatch, exchange):
    if not exchange:  # the path taken where the filesystem cannot swap two names (NFS)
        monkeypatch.setattr(atomic_files, "_exchange", lambda a, b: False)
    dst = tmp_path / "part1"
    replace_dir(staged(tmp_path, "s1", "first"), dst)
    replace_dir(staged(tmp_path, "s2", "second"), dst)
    assert (dst / "product").read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["part1"]


def test_rename_aside_puts_the_old_folder_back_when_the_new_one_cannot_go_in(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_files, "_exchange", lambda a, b: False)
    dst = staged(tmp_path, "part1", "kept")
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp_path / "missing-staging", dst)
    assert (dst / "product").read_text() == "kept" and sorted(os.listdir(tmp_path)) == ["part1"]


def test_older_writer_finishing_last_is_discarded(tmp_path):
    dst = tmp_path / "part1"
    older = DirClaim(dst)
    older_out = staged(tmp_path, "older.tmp", "older")
    newer = DirClaim(dst)  # a retry started while the older try was still writing
    newer.replace(staged(tmp_path, "newer.tmp", "newer"))
    assert not older.owns()
    with pytest.raises(SupersededWriteError, match="newer try"):
        older.replace(older_out)
    assert (dst / "product").read_text() == "newer"
    assert sorted(os.listdir(tmp_path)) == ["part1"]  # no staging, no claim, no .old-*


def test_older_writer_finishing_first_is_replaced_by_the_newer(tmp_path):
    dst = tmp_path / "part1"
    older = DirClaim(dst)
    newer = DirClaim(dst)
    with pytest.raises(SupersededWriteError):
        older.replace(staged(tmp_path, "older.tmp", "older"))
    assert not dst.exists()  # the older never publishes, even while the newer is not done
    newer.replace(staged(tmp_path, "newer.tmp", "newer"))
    assert (dst / "product").read_text() == "newer" and sorted(os.listdir(tmp_path)) == ["part1"]


def test_a_failed_writer_releases_only_its_own_claim(tmp_path):
    dst = tmp_path / "part1"
    older = DirClaim(dst)
    newer = DirClaim(dst)
    older.release()  # the older failed: the newer's claim stays
    assert newer.owns()
    newer.release()
    assert not Path(newer.path).exists()


def test_staged_puts_a_file_or_a_folder_in_place_and_leaves_nothing_beside_it(tmp_path):
    with atomic_files.staged(tmp_path / "cube.image") as tmp:
        assert os.path.basename(tmp).startswith(".cube.image.tmp-")
        staged(Path(tmp).parent, Path(tmp).name, "first")
    with atomic_files.staged(tmp_path / "cube.image") as tmp:
        staged(Path(tmp).parent, Path(tmp).name, "second")
    with atomic_files.staged(tmp_path / "note.txt") as tmp:
        Path(tmp).write_text("note")
    assert (tmp_path / "cube.image" / "product").read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["cube.image", "note.txt"]


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_staged_output_of_a_failed_block_is_removed_unless_kept(tmp_path, keep):
    dst = staged(tmp_path, "cube.image", "old")
    with pytest.raises(RuntimeError), atomic_files.staged(dst, keep_on_error=keep) as tmp:
        staged(Path(tmp).parent, Path(tmp).name, "new")
        raise RuntimeError("CASA failed")
    assert (dst / "product").read_text() == "old"
    assert [p.startswith(".cube.image.tmp-") for p in os.listdir(tmp_path) if p != "cube.image"] == ([True] if keep else [])


def test_a_dead_owners_staging_goes_and_a_live_ones_stays(tmp_path):
    """What every engine writer runs first: stagings of its image name whose owner process died (a
    killed coordinator or worker) go; a live writer's stays, and so does another machine's."""
    import subprocess
    import sys

    from pclean_provider.atomic_files import owner_alive, process_owner, remove_dead_stagings, staging_name

    image = tmp_path / "night.cont"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = staging_name(image, owner=f"{process_owner().rsplit('-', 1)[0]}-{dead.pid}")
    live = staging_name(image, owner=process_owner())
    elsewhere = staging_name(image, owner="another-machine-1")
    other_image = staging_name(tmp_path / "night.cont2", owner=f"{process_owner().rsplit('-', 1)[0]}-{dead.pid}")
    for path in (gone, live, elsewhere, other_image):
        os.makedirs(path)
    assert owner_alive(os.path.basename(live)) and not owner_alive(os.path.basename(gone))
    assert remove_dead_stagings(image) == [os.path.basename(gone)]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (live, elsewhere, other_image))


def test_publishing_runs_only_for_the_newest_claim_and_ends_the_claim(tmp_path):
    """A writer of several products (the exact cube's concatenation) publishes under its claim."""
    from pclean_provider.atomic_files import DirClaim, SupersededWriteError

    name = tmp_path / "night.cube"
    older = DirClaim(name)
    newer = DirClaim(name)
    published = []
    with pytest.raises(SupersededWriteError, match="newer try"):
        with older.publishing():
            published.append("older")
    with newer.publishing():
        published.append("newer")
    assert published == ["newer"] and not os.path.exists(str(name) + ".claim")
    # A writer that fails while publishing keeps its claim until it releases it.
    failing = DirClaim(name)
    with pytest.raises(OSError):
        with failing.publishing():
            raise OSError("disk full")
    assert failing.owns()
    failing.release()
    assert not os.path.exists(str(name) + ".claim")


def test_a_set_goes_in_whole_and_the_old_entries_go_with_the_staging(tmp_path):
    from pclean_provider.atomic_files import put_set_in_place

    staging = staged(tmp_path, ".night.tmp-1", "unused")
    staged(staging, "night.image", "new image")
    (staging / "night.truth.json").write_text("new truth")
    staged(tmp_path, "night.image", "old image")
    moves = [(staging / "night.image", tmp_path / "night.image"),
             (staging / "night.truth.json", tmp_path / "night.truth.json")]
    put_set_in_place(moves, aside=staging / ".replaced")
    assert (tmp_path / "night.image" / "product").read_text() == "new image"
    assert (tmp_path / "night.truth.json").read_text() == "new truth"
    assert os.listdir(staging / ".replaced") == ["0-night.image"]


def test_a_set_that_fails_midway_puts_back_what_it_had_not_replaced(tmp_path):
    from pclean_provider.atomic_files import put_set_in_place

    staging = staged(tmp_path, ".night.tmp-1", "unused")
    staged(staging, "night.image", "new image")
    staged(tmp_path, "night.image", "old image")
    staged(tmp_path, "night.psf", "old psf")
    moves = [(staging / "night.image", tmp_path / "night.image"),
             (staging / "night.psf", tmp_path / "night.psf")]  # not staged: its rename fails
    with pytest.raises(FileNotFoundError):
        put_set_in_place(moves, aside=staging / ".replaced")
    assert (tmp_path / "night.image" / "product").read_text() == "new image"
    assert (tmp_path / "night.psf" / "product").read_text() == "old psf"
