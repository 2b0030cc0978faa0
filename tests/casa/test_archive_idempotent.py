"""Publishing is idempotent: a retry or a rerun of an unchanged product adds no archive version.

Real products: serial tclean cubes of the simulator's MS, imaged twice with the same parameters
into two run folders (as two DAG runs would; CASA writes run-time facts into the table files, so
the two differ byte-wise but not in content), and once with a deeper clean (a changed product).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.casa.test_archive_publish import _kill, _publish_cli, _wait_for_pause

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def runs(small_ms, tmp_path_factory):
    from casatasks import tclean

    out = tmp_path_factory.mktemp("idempotent-products")
    made = {}
    for run, niter in (("run1", 20), ("run2", 20), ("run3", 60)):
        name = str(out / run / "cube")
        Path(name).parent.mkdir()
        tclean(vis=small_ms.ms, imagename=name, imsize=small_ms.suggested_imsize, cell=small_ms.suggested_cell,
               phasecenter=small_ms.phasecenter, specmode="cube", nchan=2, width=8, niter=niter, pbcor=True)
        made[run] = name
    return made


def test_retry_and_unchanged_rerun_return_the_published_version(runs, small_ms, tmp_path):
    from pclean_provider.pipeline.archive import list_versions, publish, verify

    root = tmp_path / "archive"

    def pub(run: str, dag_run_id: str):
        return publish(runs[run], root, "night_cube", vis=small_ms.ms, dag_run_id=dag_run_id,
                       config={"imagename": runs[run], "niter": 60 if run == "run3" else 20})

    first = pub("run1", "scheduled__1")
    assert (first.version, first.already_published, first.dag_run_id) == (1, False, "scheduled__1")
    inputs = json.loads(Path(first.manifest).read_text())["provenance"]["inputs"]
    assert inputs["key"] == first.inputs_key and "cube.image" in inputs["images"] and "small.ms" in inputs["ms"]
    v1_manifest = Path(first.manifest).read_bytes()

    # The task retried after its publish committed: the same version comes back, nothing written.
    retry = pub("run1", "scheduled__1")
    assert (retry.version, retry.already_published, retry.path) == (1, True, first.path)
    assert retry.dag_run_id == "scheduled__1" and retry.nfiles == first.nfiles

    # The next night re-images the same MS with the same parameters into its own folder: the
    # images equal version 1 in content, so nothing new is published.
    rerun = pub("run2", "scheduled__2")
    assert (rerun.version, rerun.already_published, rerun.dag_run_id) == (1, True, "scheduled__1")
    assert list_versions(root / "night_cube") == [1]

    # A deeper clean changes the product: a new version.
    changed = pub("run3", "manual__3")
    assert (changed.version, changed.already_published) == (2, False)
    assert changed.inputs_key != first.inputs_key

    # The first run's publish retried late (after version 2 appeared) still finds its own version.
    late = pub("run1", "scheduled__1")
    assert (late.version, late.already_published) == (1, True)

    # Another run going back to the first product's content is a change against the newest version.
    back = pub("run2", "manual__4")
    assert (back.version, back.already_published) == (3, False)
    assert list_versions(root / "night_cube") == [1, 2, 3]
    assert Path(first.manifest).read_bytes() == v1_manifest
    assert all(verify(root / "night_cube" / f"v{v:04d}").ok for v in (1, 2, 3))
    # The product's lock file sits beside the versions and is not a version.
    assert (root / "night_cube" / ".publish.lock").exists()


def test_publisher_killed_after_the_rename_is_retried_without_a_duplicate(runs, small_ms, tmp_path):
    from pclean_provider.pipeline.archive import list_versions, publish, verify

    root = tmp_path / "archive"
    args = ["--image", runs["run1"], "--archive-root", str(root), "--product-id", "crash_cube",
            "--vis", small_ms.ms, "--dag-run-id", "scheduled__9"]
    # Killed after the rename committed version 1, before it could print its result: to Airflow
    # that try failed, and the retry must not publish the product a second time.
    proc = _publish_cli(args, "committed", tmp_path)
    _wait_for_pause(proc, "committed")
    _kill(proc)
    assert list_versions(root / "crash_cube") == [1]

    retry = publish(runs["run1"], root, "crash_cube", vis=small_ms.ms, dag_run_id="scheduled__9")
    assert (retry.version, retry.already_published, retry.dag_run_id) == (1, True, "scheduled__9")
    assert list_versions(root / "crash_cube") == [1]
    assert verify(retry.path).ok
    assert not [p for p in (root / ".staging").iterdir() if not p.name.endswith(".lock")]
