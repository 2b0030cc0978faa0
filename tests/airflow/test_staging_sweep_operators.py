"""The exact-cube and continuum operators remove what killed or failed tries left beside their image
name, at the moment a new try's work is submitted, and never when a try is only looked at again
(issue 30, item 6); the nightly DAG's teardown sweeps the run folder once the cluster is down.

The Dask side is a recording stand-in here (tests/airflow/test_operators_dask_work.py runs the real
one); the folders and the killed writer are real."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("plaintext_dask_allowed")]

KILLED_WRITER = ("import os, sys; os.makedirs(sys.argv[1] + '/part1'); "
                 "open(sys.argv[1] + '/part1/table.f0', 'wb').write(b'x' * 4096); print('ready', flush=True); "
                 "sys.stdin.read()")


class RecordingConnection:
    """Stands in for the hook's DaskConnection: records what was on disk when the work was submitted."""

    def __init__(self, folder: Path, running: object | None = None):
        self.folder, self.running, self.seen_at_submit = folder, running, None

    def find_work(self, key):
        return self.running

    def cancel_older_tries(self, key):
        return []

    def submit_work(self, key, result_file, func, args):
        self.seen_at_submit = sorted(p.name for p in self.folder.iterdir())
        return "future"


def killed_writer_staging(staging: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(staging)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def product_dir(tmp_path):
    (tmp_path / "night.ms").mkdir()
    folder = tmp_path / "runs" / "r1" / "night"
    folder.mkdir(parents=True)
    return folder


def cube_operator(product_dir: Path):
    from pclean_provider.operators.cube import CubeImagingOperator

    op = CubeImagingOperator(task_id="cube", scheduler_address="tcp://127.0.0.1:1", overrides={
        "vis": str(product_dir.parents[2] / "night.ms"), "imagename": str(product_dir / "night.cube"),
        "specmode": "cube"})
    op._imagename = str(product_dir / "night.cube")  # as execute() sets it from the validated config
    return op


def continuum_operator(product_dir: Path, retry: bool):
    from pclean_provider.operators.continuum import ContinuumImagingOperator

    op = ContinuumImagingOperator(task_id="continuum", scheduler_address="tcp://127.0.0.1:1", overrides={
        "vis": str(product_dir.parents[2] / "night.ms"), "imagename": str(product_dir / "night.cont"),
        "specmode": "mfs"})
    op._cfg, op._retry = op.config(), retry  # as execute() sets them
    return op


def submit(op, dask) -> object:
    return op._find_or_submit(dask, "key", print, lambda dask: (), "/nonexistent/result.json", None)


def test_a_new_cube_try_starts_without_the_earlier_tries_leftovers(product_dir):
    for name in (".night.cube.image.tmp-0a1b2c3d", ".night.cube.tmp-restore-5e6f7a8b", "night.cube.image",
                 "night.cube.subcubes"):
        (product_dir / name).mkdir()
    dask = RecordingConnection(product_dir)
    assert submit(cube_operator(product_dir), dask) == "future"
    assert dask.seen_at_submit == []


def test_a_continuum_retry_starts_without_the_killed_tries_stagings(product_dir):
    for run_id in ("00000000a1", "00000000b2"):  # two tries, each coordinator killed mid-run
        killed_writer_staging(product_dir / f".night.cont.tmp-{socket.gethostname()}-999999999-{run_id}")
    (product_dir / "night.cont.image").mkdir()
    dask = RecordingConnection(product_dir)
    submit(continuum_operator(product_dir, retry=True), dask)
    assert dask.seen_at_submit == []


def test_a_try_that_is_found_running_again_keeps_what_it_is_writing(product_dir):
    # An Airflow worker restarted after submitting: the same try is adopted, its folders untouched.
    writing = [".night.cube.image.tmp-0a1b2c3d", "night.cube.subcubes"]
    for name in writing:
        (product_dir / name).mkdir()
    dask = RecordingConnection(product_dir, running="the running future")
    assert submit(cube_operator(product_dir), dask) == "the running future"
    assert dask.seen_at_submit is None and sorted(p.name for p in product_dir.iterdir()) == writing


def test_the_teardown_sweeps_the_run_folder_once_the_cluster_is_down(product_dir, tmp_path):
    from pclean_provider.operators.cluster import ClusterDownOperator

    (product_dir / "night.cube.subcubes" / "chan00000-00003").mkdir(parents=True)
    killed_writer_staging(product_dir / ".night.cube.image.tmp-0a1b2c3d")
    (product_dir / "night.cube.image").mkdir()
    down = ClusterDownOperator(task_id="cluster_down", address_file=str(tmp_path / "none.address"),
                               run_folder=str(product_dir.parent), image_suffix="cube", sweep_subcubes=True)
    assert down.execute({}) is False  # no host to stop; the sweep runs all the same
    assert sorted(p.name for p in product_dir.iterdir()) == ["night.cube.image"]


@pytest.mark.parametrize(("kind", "cube_mode", "swept"), [("cube", "exact", True), ("continuum", "exact", True),
                                                          ("cube", "fanout", False)])
def test_the_shipped_dags_teardown_sweeps_exact_and_continuum_runs_only(kind, cube_mode, swept):
    from pclean_provider.dags.builder import build_dag
    from pclean_provider.pipeline.pipeline_template import load_templates

    (t,) = [t for t in load_templates() if t.kind == kind]
    dag = build_dag(t.model_copy(update={"cube_mode": cube_mode}))
    down = dag.get_task("cluster_down")
    assert bool(down.run_folder) is swept
    assert down.image_suffix == ("cube" if kind == "cube" else "cont")
