"""Clear and kill against the session's live ``airflow standalone`` (tests/airflow/standalone.py), real CASA, real Dask.

* Clear one mapped sub-cube of a finished run through the REST API: only it and what follows it
  (concat, and the cluster set-up/teardown pair that the cleared task needs) run again; the other
  sub-cubes and the partition keep their first try; the cube comes out the same as before.
* Kill (mark failed) one deferred sub-cube: the triggerer calls the trigger's on_kill, and that
  sub-cube's Dask work is cancelled while its sibling's keeps waiting and later succeeds.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.image_compare import pixels

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

IMAGING = {"specmode": "cube", "nchan": 8, "imsize": [64, 64], "cell": "12arcsec", "weighting": "natural",
           "deconvolver": "hogbom", "gridder": "standard", "niter": 40, "cube_chunksize": 3}


@pytest.fixture
def airflow(airflow_standalone):
    return airflow_standalone


def _try_numbers(server, dag_id, run_id):
    return {key: try_ for key, (state, try_) in server.task_summary(dag_id, run_id).items()}


def test_clearing_one_subcube_reruns_only_it_and_downstream(airflow, small_ms, tmp_path):
    dag_id = "pclean_test_cube"
    airflow.wait_for_dag(dag_id)
    airflow.unpause(dag_id)
    work = tmp_path / "work"
    imagename = str(work / "products" / "cube")
    # One sub-cube per batch task, so that clearing one mapped task re-runs exactly one sub-cube.
    run_id = airflow.trigger(dag_id, {"vis": str(small_ms.ms), "imagename": imagename, "work_dir": str(work),
                                      "nworkers": 2, "subcubes_per_task": 1, "imaging": IMAGING})
    assert airflow.wait_for_run(dag_id, run_id) == "success", airflow.task_summary(dag_id, run_id)
    first = airflow.task_summary(dag_id, run_id)
    subcubes = sorted(i for (task, i) in first if task == "subcube")
    assert subcubes == [0, 1, 2]
    assert all(try_ == 1 for _, try_ in first.values()), first
    labels = {t["map_index"]: t["rendered_map_index"] for t in airflow.task_instances(dag_id, run_id)
              if t["task_id"] == "subcube"}
    assert "ch 3-5 " in labels[1] and "(1 sub-cube)" in labels[1], labels
    links = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/subcube/links",
                        params={"map_index": 1})["extra_links"]
    # The task kept its dashboard's address, but the run's cluster is down: the link is not offered
    # (tests/unit/test_dask_dashboard_link.py shows it while a cluster lives).
    assert "Dask dashboard" in links and links["Dask dashboard"] is None, links
    before = pixels(imagename + ".image")
    subcube_dirs = sorted((work / "products" / "cube.subcubes").iterdir())
    assert len(subcube_dirs) == 3, "the sub-cubes are kept for a later clear"
    kept = {i: subcube_dirs[i].stat().st_ino for i in (0, 2)}

    airflow.clear(dag_id, run_id, [["subcube", 1]], include_downstream=True)
    time.sleep(2)
    assert airflow.wait_for_run(dag_id, run_id) == "success", airflow.task_summary(dag_id, run_id)
    tries = _try_numbers(airflow, dag_id, run_id)
    assert tries[("subcube", 1)] == 2
    assert tries[("concat", -1)] == 2
    assert tries[("subcube", 0)] == 1 and tries[("subcube", 2)] == 1, tries
    assert tries[("partition", -1)] == 1, tries
    # The sub-cube needs a cluster: Airflow clears the setup/teardown pair around a cleared task.
    assert tries[("cluster_up", -1)] == 2 and tries[("cluster_down", -1)] == 2, tries
    for i, inode in kept.items():
        assert subcube_dirs[i].stat().st_ino == inode, "the other sub-cubes' products are untouched"
    assert subcube_dirs[1].exists()

    after = pixels(imagename + ".image")
    peak = np.nanmax(np.abs(before))
    assert np.nanmax(np.abs(after - before)) <= 1e-6 * peak, "the cube is the same after the rerun"


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
