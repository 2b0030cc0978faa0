"""The archive's data safety with real products: files follow the template's mode (or the umask),
a published version is read-only and the idempotent and re-publish paths still work on it, and an
MS changed since ingest is refused before anything is written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def product(small_ms, tmp_path_factory):
    from casatasks import tclean

    out = tmp_path_factory.mktemp("mode-products")
    names = []
    for run, niter in (("run1", 0), ("run2", 10)):  # the second is a changed product
        name = str(out / run / "cube")
        Path(name).parent.mkdir()
        tclean(vis=small_ms.ms, imagename=name, imsize=small_ms.suggested_imsize, cell=small_ms.suggested_cell,
               phasecenter=small_ms.phasecenter, specmode="cube", nchan=2, width=8, niter=niter)
        names.append(name)
    return names


def _modes(folder: Path) -> tuple[set[int], set[int]]:
    entries = [folder, *folder.rglob("*")]
    return ({stat.S_IMODE(p.stat().st_mode) for p in entries if p.is_file()},
            {stat.S_IMODE(p.stat().st_mode) for p in entries if p.is_dir()})


def test_template_mode_read_only_version_and_republish(product, small_ms, tmp_path):
    from pclean_provider.pipeline.archive import publish, verify

    archive = tmp_path / "archive"
    config = {"imagename": product[0], "specmode": "cube", "niter": 0}
    first = publish(product[0], archive, "cube_modes", vis=small_ms.ms, config=config, dag_run_id="r1", file_mode="0640")
    assert _modes(Path(first.path)) == ({0o440}, {0o550})
    assert verify(first.path).ok
    # A retry of the same run and an unchanged rerun find the read-only version and return it.
    again = publish(product[0], archive, "cube_modes", vis=small_ms.ms, config=config, dag_run_id="r1", file_mode="0640")
    assert (again.version, again.already_published) == (1, True)
    # Changed inputs publish a new version beside it (the product folder itself stays writable).
    second = publish(product[1], archive, "cube_modes", vis=small_ms.ms, config={**config, "niter": 10},
                     dag_run_id="r2")
    assert second.version == 2 and not second.already_published
    umask = os.umask(0)
    os.umask(umask)
    files = (0o666 & ~umask) & ~0o222
    assert _modes(Path(second.path))[0] == {files}
    assert not list((archive / ".staging").iterdir())


def test_archive_refuses_an_ms_changed_since_ingest(product, small_ms, tmp_path):
    import shutil

    from pclean_provider.pipeline.archive import ArchiveError, publish
    from pclean_provider.pipeline.ingest import ingest_one

    ms = tmp_path / "night.ms"
    shutil.copytree(small_ms.ms, ms)
    accepted = ingest_one(ms, metadata_dir=tmp_path / "meta")
    meta = json.loads(Path(accepted.metadata_path).read_text())
    table = ms / "table.f1"
    table.write_bytes(table.read_bytes()[:100])  # a redo copy landed over it, half done
    with pytest.raises(ArchiveError, match=r"changed since ingest.*archive refuses it"):
        publish(product[0], tmp_path / "archive", "cube_changed", vis=str(ms), ms_metadata=meta)
    assert not (tmp_path / "archive" / "cube_changed").exists()
