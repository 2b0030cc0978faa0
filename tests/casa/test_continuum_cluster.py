"""The continuum coordinator as a cluster task, and what happens when a part is lost.

Own LocalCluster (2 workers): the last test kills a worker.
"""

from __future__ import annotations

import glob
import json
import os
import signal

import pytest

from tests.casa.continuum_helpers import CLEAN_TOL, assert_beams_match, assert_images_match, kwargs_for

pytestmark = pytest.mark.casa


def _config(ms, imagename, deconvolver="hogbom", weighting="briggs", niter=1):
    from pclean_provider.config import PcleanConfig

    return PcleanConfig.from_flat(imagename=str(imagename), **kwargs_for(ms, deconvolver, weighting, niter))


def _left_behind(tmp_path, name: str) -> list[str]:
    """Anything a failed run left: products, staging folders (the progress file may stay)."""
    left = [p for p in glob.glob(str(tmp_path / (name + ".*"))) if not p.endswith(".progress.jsonl")]
    return left + [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_coordinator_as_cluster_task_matches_tclean(two_spw_ms, cluster, tmp_path):
    from casatasks import tclean

    from pclean_provider.engine import worker_tasks
    from pclean_provider.engine.continuum.models import ContinuumResult

    ref = str(tmp_path / "tclean")
    tclean(imagename=ref, **kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1))
    ours = str(tmp_path / "remote")
    # ContinuumImagingOperator's task: the coordinator runs on the cluster, one part per worker (2).
    future = cluster.client.submit(worker_tasks.image_continuum, _config(two_spw_ms.ms, ours).model_dump_json(),
                                   pure=False)
    result = ContinuumResult.model_validate(future.result())

    assert result.nparts == 2 and result.iterations > 0
    assert result.imagename == ours and os.path.isdir(ours + ".image")
    assert_images_match(ours, ref, "hogbom", ["image"], CLEAN_TOL)
    assert_beams_match(ours + ".image", ref + ".image")
    # The progress file is there for a trigger to tail, one line per major cycle.
    with open(result.progress_file, encoding="utf-8") as fh:
        assert sum(1 for line in fh if '"cycle"' in line) == len(result.cycles) >= 2


def test_part_that_lost_its_imager_stops_the_run_and_is_named(two_spw_ms, cluster, tmp_path):
    """A part whose worker no longer holds its imager (a restarted worker) ends the run."""
    from pclean_provider.casa import session_registry
    from pclean_provider.engine.continuum.run import run_continuum
    from pclean_provider.engine.imaging_errors import ImagingPartError

    client = cluster.client
    second = sorted(client.nthreads())[1]  # part 2 of 2 lives on the second worker

    def drop_part_two(report):
        if report.cycle == 0:
            client.run(session_registry.close_run, report.run_id, workers=[second])

    with pytest.raises(ImagingPartError, match=r"continuum part 2/2 .*no imager") as err:
        run_continuum(_config(two_spw_ms.ms, tmp_path / "dropped"), client, drop_part_two, nparts=2)
    assert err.value.part == 1 and err.value.operation == "major_cycle"
    assert _left_behind(tmp_path, "dropped") == []
    # Whoever tails the progress file learns that the run failed, and why.
    with open(tmp_path / "dropped.progress.jsonl", encoding="utf-8") as fh:
        last = json.loads(fh.readlines()[-1])
    assert last["event"] == "failed" and "part 2/2" in last["error"]


def test_lost_worker_stops_the_run_and_names_the_part(two_spw_ms, cluster, tmp_path):
    from pclean_provider.engine.continuum.run import run_continuum
    from pclean_provider.engine.imaging_errors import ImagingPartError

    client = cluster.client
    second = sorted(client.nthreads())[1]
    pid = client.run(os.getpid, workers=[second])[second]

    def kill_worker_of_part_two(report):
        if report.cycle == 0:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(ImagingPartError, match=r"continuum part 2/2") as err:
        run_continuum(_config(two_spw_ms.ms, tmp_path / "killed"), client, kill_worker_of_part_two, nparts=2)
    assert err.value.part == 1
    assert _left_behind(tmp_path, "killed") == []
