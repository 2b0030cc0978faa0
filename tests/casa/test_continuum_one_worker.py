"""Continuum on a cluster with ONE worker: one part, imaged in a process other than the coordinator's.

The regression: with one part on a worker, the part imager and the coordinator's deconvolver
shared the product images across two processes; the deconvolver keeps a read lock on the model
after a minor cycle, so the part's second major cycle waited for its write lock forever. A SLURM
cluster where only one job started, or nworkers=1, hit it. Each test cleans through several major
cycles and is guarded by a timeout, so a regression fails instead of hanging the suite.

Own LocalCluster with one worker. Tolerances: see tests/casa/continuum_helpers.py.
"""

from __future__ import annotations

import os

import pytest

from tests.casa.continuum_helpers import (
    CLEAN_TOL,
    assert_beams_match,
    assert_images_match,
    kwargs_for,
    product_suffixes,
)

pytestmark = pytest.mark.casa

# Small minor cycles so that the run needs several major cycles: the hang was in the second.
CYCLES = dict(cycleniter=40)


@pytest.fixture(scope="module")
def one_worker(casa_runtime, tmp_path_factory):
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import ClusterSpec

    scratch = tmp_path_factory.mktemp("continuum-one-worker-dask")
    with open_cluster(ClusterSpec(nworkers=1, local_directory=str(scratch))) as handle:
        assert handle.worker_count == 1
        yield handle


def _tclean(ms, imagename, deconvolver, weighting):
    from casatasks import tclean

    imagename.parent.mkdir(parents=True, exist_ok=True)
    return tclean(imagename=str(imagename), **kwargs_for(ms, deconvolver, weighting, 1), **CYCLES) or {}


def _config(ms, imagename, deconvolver, weighting, **extra):
    from pclean_provider.config import PcleanConfig

    return PcleanConfig.from_flat(imagename=str(imagename), **kwargs_for(ms, deconvolver, weighting, 1),
                                  **CYCLES, **extra)


def _assert_matches_tclean(ours, ref, summary, deconvolver, stopcode, iterations, major_cycles,
                           parts_kept=False):
    assert major_cycles >= 3, f"only {major_cycles} major cycles: the test would not reach the old hang"
    assert product_suffixes(ours) == product_suffixes(ref)
    assert_images_match(ours, ref, deconvolver, ["image", "residual", "model"], CLEAN_TOL)
    tt0 = ".image.tt0" if deconvolver == "mtmfs" else ".image"
    assert_beams_match(ours + tt0, ref + tt0)
    assert stopcode == summary["stopcode"]
    assert abs(iterations - summary["iterdone"]) <= max(2, 0.02 * summary["iterdone"])
    # The part images are working files: gone with the staging folder unless asked to be kept.
    assert os.path.isdir(ours + ".workdirectory") == parts_kept
    assert [p for p in os.listdir(os.path.dirname(ours)) if p.startswith(".")] == []


@pytest.mark.timeout(300)
def test_pclean_parallel_with_one_worker_finishes_and_matches_tclean(two_spw_ms, tmp_path):
    """The reported call: pclean(parallel=True, nworkers=1) on its own LocalCluster."""
    from pclean_provider.engine.api import pclean

    ref = tmp_path / "tclean" / "ref"
    summary = _tclean(two_spw_ms.ms, ref, "hogbom", "briggs")
    ours = str(tmp_path / "ours" / "one")
    result = pclean(imagename=ours, **kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1), **CYCLES,
                    parallel=True, nworkers=1, local_directory=str(tmp_path / "dask"))

    assert result.parallel and result.nworkers == 1 and result.continuum["workers"] != ["in-process"]
    assert len(result.continuum["workers"]) == 1
    _assert_matches_tclean(ours, str(ref), summary, "hogbom", result.continuum["stopcode"], result.iterations,
                           result.continuum["major_cycles"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("deconvolver", "weighting"), [("mtmfs", "briggs"), ("multiscale", "natural")])
def test_one_remote_part_other_deconvolvers_match_tclean(two_spw_ms, one_worker, tmp_path, deconvolver,
                                                         weighting):
    from pclean_provider.engine.continuum.run import run_continuum

    ref = tmp_path / "tclean" / "ref"
    summary = _tclean(two_spw_ms.ms, ref, deconvolver, weighting)
    ours = str(tmp_path / "ours" / "one")
    result = run_continuum(_config(two_spw_ms.ms, ours, deconvolver, weighting), one_worker.client)

    assert result.nparts == 1 and result.workers == sorted(one_worker.client.nthreads())
    _assert_matches_tclean(ours, str(ref), summary, deconvolver, result.stopcode, result.iterations,
                           result.major_cycles)


@pytest.mark.timeout(300)
def test_coordinator_task_on_a_one_worker_cluster(two_spw_ms, one_worker, tmp_path):
    """The Airflow path on a SLURM cluster where only one job started: coordinator task and part share a node."""
    from pclean_provider.engine import worker_tasks
    from pclean_provider.engine.continuum.models import ContinuumResult

    ref = tmp_path / "tclean" / "ref"
    summary = _tclean(two_spw_ms.ms, ref, "hogbom", "natural")
    ours = str(tmp_path / "ours" / "task")
    # ContinuumImagingOperator's task: the coordinator's task and the part share the one worker.
    cfg = _config(two_spw_ms.ms, ours, "hogbom", "natural", keep_partimages=True)
    future = one_worker.client.submit(worker_tasks.image_continuum, cfg.model_dump_json(), pure=False)
    result = ContinuumResult.model_validate(future.result(timeout=280))

    assert result.nparts == 1 and result.part_images_kept
    # keep_partimages keeps the one part's own images, as it does for several parts.
    parts = sorted(os.listdir(ours + ".workdirectory"))
    assert "task.n1.model" in parts and "task.n1.residual" in parts, parts
    _assert_matches_tclean(ours, str(ref), summary, "hogbom", result.stopcode, result.iterations,
                           result.major_cycles, parts_kept=True)
