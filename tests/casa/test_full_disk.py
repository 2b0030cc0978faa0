"""Every writer on a full filesystem fails cleanly: a clear error, nothing half-written at a final
name, earlier products untouched.

Each test mounts its own small tmpfs (the suite runs as root), writes what must survive while there
is room, then fills the filesystem up to a small remainder and runs the writer again. The writers
that run CASA run in a child process, so that CASA failing on a full disk cannot take pytest down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.casa


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(fs: Path, leave: int) -> Path:
    """Take all but about `leave` bytes of the filesystem with one filler file."""
    st = os.statvfs(fs)
    filler = fs / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return filler


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.name != "filler"}


def run_child(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    from pclean_provider.casa.runtime import casa_env

    env = {**os.environ, **casa_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def products(small_ms, tmp_path_factory):
    from casatasks import tclean

    out = tmp_path_factory.mktemp("full-disk-products")
    names = []
    for run, niter in (("run1", 0), ("run2", 10)):
        name = str(out / run / "cube")
        Path(name).parent.mkdir()
        tclean(vis=small_ms.ms, imagename=name, imsize=64, cell=small_ms.suggested_cell,
               phasecenter=small_ms.phasecenter, specmode="cube", nchan=2, width=8, niter=niter)
        names.append(name)
    return names


def test_atomic_write_keeps_the_old_file(tmp_path):
    from pclean_provider.atomic_files import write_text

    with small_fs(tmp_path / "fs", "2m") as fs:
        write_text(fs / "report.json", '{"old": true}')
        fill(fs, 16 * 1024)
        with pytest.raises(OSError, match="No space left"):
            write_text(fs / "report.json", "x" * (256 * 1024))
        assert (fs / "report.json").read_text() == '{"old": true}'
        assert sorted(p.name for p in fs.iterdir()) == ["filler", "report.json"]


def test_subcube_publish_keeps_the_earlier_subcube(small_ms, tmp_path):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.cube.plan import plan_subcubes

    with small_fs(tmp_path / "fs", "8m") as fs:
        cfg = PcleanConfig.from_flat(vis=small_ms.ms, imagename=str(fs / "cube"), specmode="cube", nchan=2, width=8,
                                     imsize=[64, 64], cell=small_ms.suggested_cell, niter=0,
                                     cube_engine="independent", cube_chunksize=1)
        spec = plan_subcubes(cfg, nworkers=1).specs[0]
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(spec.model_dump_json())
        code = "import sys; from pclean_provider.engine.cube.subcube import image_subcube; image_subcube(open(sys.argv[1]).read())"
        first = run_child(code, str(spec_file), cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        before = tree(Path(spec.subcube_dir))
        filler = fill(fs, 256 * 1024)
        second = run_child(code, str(spec_file), cwd=tmp_path)
        # Refused before CASA starts (casacore would abort the whole worker process on a full disk).
        assert second.returncode != 0 and "SubcubeError" in second.stderr, second.stderr[-2000:]
        assert "MiB are needed under" in second.stderr and "only" in second.stderr
        assert tree(Path(spec.subcube_dir)) == before
        parent = Path(spec.subcube_dir).parent
        assert [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name or ".claim" in p.name] == []
        filler.unlink()  # space freed: the retry succeeds and leaves nothing beside the folder
        third = run_child(code, str(spec_file), cwd=tmp_path)
        assert third.returncode == 0, third.stderr[-2000:]
        assert sorted(p.name for p in parent.iterdir()) == [Path(spec.subcube_dir).name]


def test_archive_publish_leaves_earlier_versions_and_no_staging(products, small_ms, tmp_path):
    from pclean_provider.pipeline.archive import publish, verify

    with small_fs(tmp_path / "fs", "2m") as fs:
        first = publish(products[0], fs / "archive", "cube_full", vis=small_ms.ms, dag_run_id="r1")
        before = tree(Path(first.path))
        fill(fs, 64 * 1024)
        proc = run_child("import sys; from pclean_provider.cli.main import main; sys.exit(main(sys.argv[1:]))",
                         "archive", "publish", "--image", products[1], "--archive-root", str(fs / "archive"),
                         "--product-id", "cube_full", "--vis", small_ms.ms, "--dag-run-id", "r2", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "no space left to publish" in proc.stderr and "earlier versions are untouched" in proc.stderr
        assert tree(Path(first.path)) == before and verify(first.path).ok
        assert sorted(p.name for p in (fs / "archive" / "cube_full").iterdir() if not p.name.startswith(".")) == ["v0001"]
        assert list((fs / "archive" / ".staging").iterdir()) == []


def test_ingest_quarantine_on_a_full_disk_leaves_the_ms_in_the_landing_area(small_ms, tmp_path):
    landing = tmp_path / "landing"
    broken = landing / "broken.ms"
    shutil.copytree(small_ms.ms, broken)
    shutil.rmtree(broken / "SPECTRAL_WINDOW")
    (landing / "broken.ms.complete").write_text("")
    before = tree(landing)
    with small_fs(tmp_path / "fs", "2m") as fs:
        fill(fs, 64 * 1024)  # the MS (about 1 MB) does not fit
        proc = run_child("import sys; from pclean_provider.cli.main import main; sys.exit(main(sys.argv[1:]))",
                         "ingest", str(landing), "--quarantine", str(fs / "quarantine"),
                         "--metadata-dir", str(tmp_path / "meta"), "--ledger", str(tmp_path / "ledger"), cwd=tmp_path)
        assert proc.returncode == 4, proc.stderr[-2000:]
        assert "could not be moved to quarantine" in proc.stderr and "stays in the landing area" in proc.stderr
        assert tree(landing) == before
        assert list((fs / "quarantine").iterdir()) == []


def test_qa_report_on_a_full_disk_keeps_the_earlier_report(products, tmp_path):
    with small_fs(tmp_path / "fs", "2m") as fs:
        code = ("import sys; from pclean_provider.pipeline.qa import run_qa; "
                "run_qa(sys.argv[1], kind='cube', out_dir=sys.argv[2], html=True)")
        first = run_child(code, products[0], str(fs / "qa"), cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        before = tree(fs / "qa")
        report = json.loads((fs / "qa" / "qa.json").read_text())
        fill(fs, 8 * 1024)
        second = run_child(code, products[1], str(fs / "qa"), cwd=tmp_path)
        assert second.returncode != 0 and "No space left" in second.stderr, second.stderr[-2000:]
        assert tree(fs / "qa") == before and json.loads((fs / "qa" / "qa.json").read_text()) == report
