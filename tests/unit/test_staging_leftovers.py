"""What a killed or failed imaging writer leaves beside its image name is found and removed, and nothing
else (issue 30, item 6): real folders named as the engine names them, real writer processes killed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pclean_provider.pipeline.staging_leftovers import (
    image_names_in,
    staging_leftovers,
    sweep_run_folder,
    sweep_staging_leftovers,
)

# A writer as the engine's continuum loop and concatenation are: it makes its staging folder beside the
# image name, writes into it, and would rename it into place at the end; here it stops half-way,
# waiting on stdin until the test kills it (SIGKILL: no cleanup of its own runs).
WRITER = textwrap.dedent("""
    import os, sys
    staging = sys.argv[1]
    os.makedirs(os.path.join(staging, "part1"))
    with open(os.path.join(staging, "part1", "table.f0"), "wb") as fh:
        fh.write(b"\\0" * 65536)
    print("ready", flush=True)
    sys.stdin.read()
""")


def start_writer(staging: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(staging)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def product_dir(tmp_path):
    folder = tmp_path / "runs" / "r1" / "night"
    folder.mkdir(parents=True)
    return folder


# The staging name of a continuum run whose coordinator process (no such pid) is gone.
DEAD = f"{socket.gethostname()}-999999999"


def test_a_killed_continuum_writers_stagings_are_removed_and_retries_add_none(product_dir):
    image = product_dir / "night.cont"
    writers = [start_writer(product_dir / f".night.cont.tmp-{DEAD}-{run:08x}") for run in (0xA1, 0xB2)]
    for proc in writers:  # two tries, each killed mid-run
        kill(proc)
    assert len(staging_leftovers(image)) == 2
    removed = sweep_staging_leftovers(image)
    assert sorted(p.name for p in removed) == [f".night.cont.tmp-{DEAD}-000000a1", f".night.cont.tmp-{DEAD}-000000b2"]
    assert staging_leftovers(image) == [] and sorted(p.name for p in product_dir.iterdir()) == []


def test_only_this_images_stagings_go(product_dir):
    image = product_dir / "night.cube"
    leftovers = [".night.cube.image.tmp-1a2b3c4d", ".night.cube.tmp-restore-5e6f7a8b",
                 ".night.cube.image.tt0.tmp-0badcafe", "night.cube.residual.old-deadbeef",
                 f".night.cube.tmp-{DEAD}-0123abcd"]
    kept = ["night.cube.image", "night.cube.subcubes", ".pclean-airflow", "night.cube.progress.jsonl",
            ".night.cube.v2.image.tmp-1a2b3c4d", f".night.cube_2.tmp-{DEAD}-0123abcd", "night.cube.ms",
            ".night.cubes.image.tmp-1a2b3c4d", "plan.json", "qa"]
    for name in leftovers + kept:
        (product_dir / name).mkdir()
    assert sorted(p.name for p in sweep_staging_leftovers(image)) == sorted(leftovers)
    assert sorted(p.name for p in product_dir.iterdir()) == sorted(kept)


def test_a_staging_whose_owner_is_alive_is_kept_until_it_dies(product_dir):
    image = product_dir / "night.cube"
    probe = start_writer(product_dir / "probe")
    owned = product_dir / f".night.cube.image.tmp-{socket.gethostname()}-{probe.pid}-abcd1234"
    owned.mkdir()
    try:
        assert sweep_staging_leftovers(image) == [] and owned.is_dir()
    finally:
        kill(probe)
    assert sweep_staging_leftovers(image) == [owned] and not owned.exists()


def test_a_run_folder_is_swept_at_its_end(tmp_path):
    run = tmp_path / "run"
    single, multi = run / "night", run / "dawn" / "target_b"
    for folder in (single, multi):
        folder.mkdir(parents=True)
    # A full disk: the exact cube's concatenation failed (movevirtual keeps its staging), its sessions'
    # sub-cube folder stayed; the other target's writer was killed before any product existed.
    (single / "night.cube.subcubes" / "chan00000-00003").mkdir(parents=True)
    (single / ".night.cube.image.tmp-0a1b2c3d").mkdir()
    (single / "night.cube.psf").mkdir()
    (single / ".pclean-airflow").mkdir()
    (multi / ".dawn.target_b.cube.image.tmp-0a1b2c3d").mkdir()
    assert image_names_in(run, "cube") == [str(multi / "dawn.target_b.cube"), str(single / "night.cube")]
    removed = sweep_run_folder(run, "cube", subcubes=True)
    assert sorted(p.name for p in removed) == [".dawn.target_b.cube.image.tmp-0a1b2c3d",
                                               ".night.cube.image.tmp-0a1b2c3d", "night.cube.subcubes"]
    assert sorted(p.name for p in single.iterdir()) == [".pclean-airflow", "night.cube.psf"]
    # A fan-out run's sub-cubes stay (a cleared batch reuses them): subcubes=False keeps them.
    (single / "night.cube.subcubes").mkdir()
    assert sweep_run_folder(run, "cube", subcubes=False) == []
