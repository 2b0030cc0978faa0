"""The continuum DAG (cluster up -> continuum imaging -> cluster down) under dag.test().

Real CASA and a real local Dask cluster. Checks the run succeeds, the products are written where the
config asked, and the deferred task logged one line per major cycle while it waited (the trigger
tails the run's progress file).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.airflow import provider_env
from tests.airflow.test_dag_test_cube import airflow_db, dagbag, task_instances  # noqa: F401

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

IMAGING = {"specmode": "mfs", "imsize": [64, 64], "cell": "12arcsec", "weighting": "briggs", "robust": 0.5,
           "deconvolver": "hogbom", "gridder": "standard", "niter": 200, "cycleniter": 50}


def test_continuum_dag_images_and_logs_each_major_cycle(airflow_db, small_ms, tmp_path, capfd):  # noqa: F811
    work = tmp_path / "work"
    imagename = str(work / "products" / "continuum")
    os.makedirs(os.path.dirname(imagename))
    dag = dagbag().get_dag("pclean_test_continuum")
    dag_run = dag.test(run_conf={"vis": str(small_ms.ms), "imagename": imagename, "work_dir": str(work),
                                 "nworkers": 2, "imaging": IMAGING})
    out = capfd.readouterr()
    states = {(ti.task_id, ti.map_index): ti.state for ti in task_instances(dag_run)}
    assert dag_run.state == "success", states
    assert states[("cluster_down", -1)] == "success"

    for suffix in (".image", ".residual", ".psf", ".model", ".sumwt"):
        assert os.path.isdir(imagename + suffix), suffix
    from tests.image_compare import pixels

    assert abs(pixels(imagename + ".model")).sum() > 0, "the minor cycle cleaned something"

    cycles = sorted({int(n) for n in re.findall(r"continuum major cycle (\d+):", out.out + out.err)})
    assert len(cycles) >= 2, "cycle 0 (dirty image) and at least one major cycle were logged"
    assert cycles == list(range(len(cycles))), cycles
    assert provider_env.HOME.exists()
