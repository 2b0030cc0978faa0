"""The cube DAG (cluster up -> partition -> mapped sub-cubes -> concat -> cluster down) under dag.test().

Real CASA, a real local Dask cluster held by a cluster host, Airflow's own scheduling loop. The cube
must equal the one ``pclean()`` makes with the same partition (same sub-cubes, same tclean calls),
so the tolerance is tight: 1e-5 of the peak per pixel (measured: identical), beams to 1e-6.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.airflow import provider_env
from tests.image_compare import beams, frequencies, pixels

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

IMAGING = {"specmode": "cube", "nchan": 8, "imsize": [64, 64], "cell": "12arcsec", "weighting": "briggs",
           "robust": 0.5, "deconvolver": "hogbom", "gridder": "standard", "niter": 60, "cube_chunksize": 3}
PIXEL_TOL = 1e-5
BEAM_RTOL = 1e-6


@pytest.fixture(scope="module")
def airflow_db():
    other = provider_env.airflow_already_elsewhere()
    assert other is None, f"Airflow was imported with AIRFLOW_HOME={other} before the provider tests set theirs"
    provider_env.migrate_db()


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(provider_env.TEST_DAGS))


def task_instances(dag_run):
    from airflow import settings

    with settings.Session() as session:
        from airflow.models.taskinstance import TaskInstance

        return session.query(TaskInstance).filter(TaskInstance.dag_id == dag_run.dag_id,
                                                  TaskInstance.run_id == dag_run.run_id).all()


def test_dagbag_loads_test_dags_with_mapped_subcubes(airflow_db):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    bag = dagbag()
    assert bag.import_errors == {}
    dag = bag.get_dag("pclean_test_cube")
    subcube = dag.get_task("subcube")
    assert isinstance(subcube, MappedOperator)
    assert subcube.map_index_template == "{{ task.batch_label }}"
    assert subcube.pool == "default_pool", "a deferred batch holds no slot of a pool that counts deferred tasks"
    assert dag.get_task("cluster_up").is_setup and dag.get_task("cluster_down").is_teardown
    assert {t.task_id for t in dag.get_task("concat").upstream_list} >= {"subcube", "partition", "cluster_up"}
    assert bag.get_dag("pclean_test_continuum").get_task("continuum").deferrable is True


def test_cube_dag_equals_pclean(airflow_db, small_ms, tmp_path):
    from pclean_provider.engine.api import pclean

    work = tmp_path / "work"
    imagename = str(work / "products" / "cube")
    dag = dagbag().get_dag("pclean_test_cube")
    dag_run = dag.test(run_conf={"vis": str(small_ms.ms), "imagename": imagename, "work_dir": str(work),
                                 "nworkers": 2, "imaging": IMAGING})
    tis = {(ti.task_id, ti.map_index): ti for ti in task_instances(dag_run)}
    states = {key: ti.state for key, ti in tis.items()}
    assert dag_run.state == "success", states

    mapped = sorted(i for (task, i) in tis if task == "subcube")
    assert mapped == [0, 1], "one mapped task per batch of sub-cubes"
    labels = [tis[("subcube", i)].rendered_map_index for i in mapped]
    assert labels == ["ch 0-5 (2 sub-cubes)", "ch 6-7 (1 sub-cube)"], labels
    assert states[("cluster_down", -1)] == "success"
    host_logs = list((work / "cluster").glob("*.address.log"))
    assert host_logs, "the cluster host kept its log"
    assert not list((work / "cluster").glob("*.address")), "teardown stopped the cluster host"

    reference = str(tmp_path / "reference" / "cube")
    os.makedirs(os.path.dirname(reference))
    # The same three sub-cubes (cube_chunksize=3), imaged one after another in this process: no second
    # cluster to start for the reference.
    pclean(vis=str(small_ms.ms), imagename=reference, parallel=False, cube_engine="independent", **IMAGING)
    for suffix in (".image", ".residual", ".psf", ".model", ".pb"):
        got, want = pixels(imagename + suffix), pixels(reference + suffix)
        assert got.shape == want.shape, suffix
        peak = np.nanmax(np.abs(want)) or 1.0
        assert np.nanmax(np.abs(got - want)) <= PIXEL_TOL * peak, suffix
    np.testing.assert_allclose(frequencies(imagename + ".image"), frequencies(reference + ".image"), rtol=1e-12)
    np.testing.assert_allclose(np.array(beams(imagename + ".image")), np.array(beams(reference + ".image")),
                               rtol=BEAM_RTOL)
    assert len(beams(imagename + ".image")) == IMAGING["nchan"], "per-channel beams kept"


def test_bad_input_fails_once_and_teardown_still_stops_the_cluster(airflow_db, small_ms, tmp_path, capfd):
    work = tmp_path / "work"
    dag = dagbag().get_dag("pclean_test_cube")
    bad = {**IMAGING, "spw": "7"}  # the simulated MS has one spectral window (0)
    dag_run = dag.test(run_conf={"vis": str(small_ms.ms), "imagename": str(work / "products" / "cube"),
                                 "work_dir": str(work), "nworkers": 1, "imaging": bad})
    out = capfd.readouterr()
    tis = {(ti.task_id, ti.map_index): ti for ti in task_instances(dag_run)}
    assert dag_run.state == "failed"
    assert tis[("partition", -1)].state == "failed"
    assert tis[("partition", -1)].try_number == 1, "bad input is not retried"
    assert "spw" in out.out + out.err and "PreflightError" in out.out + out.err, "the worker's reason is logged"
    assert tis[("cluster_down", -1)].state == "success", "the teardown ran although imaging failed"
    assert not list((work / "cluster").glob("*.address")), "and it stopped the cluster host"
