"""Kill against the session's live ``airflow standalone`` (tests/airflow/standalone.py), real CASA, real Dask.

Kill (mark failed) one deferred sub-cube: the triggerer calls the trigger's on_kill, and that
sub-cube's Dask work is cancelled while its sibling's keeps waiting and later succeeds. Clearing one
sub-cube batch of a finished run (only it, its MS's tail and the cluster set-up/teardown pair run
again; the sibling's products are untouched; the cube is the same) is part of the live night,
tests/airflow/test_standalone_night.py.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

IMAGING = {"specmode": "cube", "nchan": 8, "imsize": [64, 64], "cell": "12arcsec", "weighting": "natural",
           "deconvolver": "hogbom", "gridder": "standard", "niter": 40, "cube_chunksize": 3}


@pytest.fixture
def airflow(airflow_standalone):
    return airflow_standalone


@pytest.fixture
def busy_cluster(tmp_path):
    """A one-worker cluster host (TLS, as every local host) whose worker is kept busy until the test
    releases it; the DAG reaches it through its address file, the test with its certificate."""
    from distributed import Client

    from pclean_provider.compute.host import start_host, stop_host
    from pclean_provider.compute.tls import security
    from pclean_provider.config.cluster import ClusterSpec

    afile = tmp_path / "cluster" / "cluster.json"
    address = start_host(ClusterSpec(nworkers=1, host_idle_timeout=0, local_directory=str(tmp_path / "dask")),
                         afile)
    client = Client(address, set_as_default=False, security=security(afile.with_name(afile.name + ".tls")))
    release = tmp_path / "release"

    def blocker(flag):
        import os as _os
        import time as _time

        while not _os.path.exists(flag):
            _time.sleep(0.2)
        return {}

    busy = client.submit(blocker, str(release), key="pclean-test-blocker", pure=False)
    try:
        yield str(afile), client, release
    finally:
        release.touch()
        busy.release()
        client.close()
        stop_host(afile)


def test_killing_a_deferred_subcube_cancels_its_dask_work(airflow, small_ms, tmp_path, busy_cluster):
    from pclean_provider.compute.dask_work import scheduler_task_state
    from pclean_provider.config import load_config
    from pclean_provider.engine.cube.plan import plan_subcubes

    address_file, client, release = busy_cluster
    imagename = str(tmp_path / "products" / "cube")
    os.makedirs(os.path.dirname(imagename))
    cfg = load_config(overrides={**IMAGING, "cube_chunksize": 4, "vis": str(small_ms.ms), "imagename": imagename})
    specs = [s.model_dump(mode="json") for s in plan_subcubes(cfg, 2).specs]
    assert len(specs) == 2

    dag_id = "pclean_test_subcubes"
    airflow.wait_for_dag(dag_id)
    airflow.unpause(dag_id)
    run_id = airflow.trigger(dag_id, {"address_file": address_file, "specs": specs})

    prefix = f"pclean-subcube-{dag_id}-"
    deadline = time.monotonic() + 240
    summary = {}
    while time.monotonic() < deadline:
        summary = airflow.task_summary(dag_id, run_id)
        keys = sorted(k for k in client.list_datasets() if str(k).startswith(prefix))
        if len(keys) == 2 and all(summary.get(("subcube", i), ("",))[0] == "deferred" for i in (0, 1)):
            break
        time.sleep(1)
    else:
        pytest.fail(f"sub-cubes never both deferred with published work: {summary}")
    killed = next(k for k in keys if "-m0-" in k)
    survivor = next(k for k in keys if "-m1-" in k)
    # Airflow calls on_kill only for a trigger the triggerer is running: wait until both triggers
    # have started (each writes its own log) before killing, or the kill races the pick-up.
    run_logs = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=subcube"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
            list((run_logs / f"map_index={i}").glob("attempt=1.log.trigger.*.log")) for i in (0, 1)):
        time.sleep(0.5)
    assert all(list((run_logs / f"map_index={i}").glob("attempt=1.log.trigger.*.log")) for i in (0, 1)), \
        "the triggerer never started both triggers"

    airflow.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/subcube/0", json={"new_state": "failed"})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and killed in client.list_datasets():
        time.sleep(0.5)
    assert killed not in client.list_datasets(), "on_kill did not withdraw the killed task's work"
    assert client.run_on_scheduler(scheduler_task_state, key=killed)["state"] == "forgotten"
    assert survivor in client.list_datasets(), "only the killed task's work is cancelled"

    release.touch()
    airflow.wait_for_run(dag_id, run_id)
    final = airflow.task_summary(dag_id, run_id)
    assert final[("subcube", 0)][0] == "failed" and final[("subcube", 1)][0] == "success", final
    assert not os.path.exists(specs[0]["subcube_dir"]), "the cancelled sub-cube never ran"
    assert os.path.isdir(specs[1]["subcube_dir"])
    assert survivor not in client.list_datasets(), "finished work is released after the task resumes"
