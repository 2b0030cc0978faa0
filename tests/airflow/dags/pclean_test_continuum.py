"""Test DAG: cluster up -> continuum imaging -> cluster down (teardown)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from pclean_provider.operators.cluster import ClusterDownOperator, ClusterUpOperator
from pclean_provider.operators.continuum import ContinuumImagingOperator

ADDRESS_FILE = "{{ params.work_dir }}/cluster/{{ run_id | replace(':', '_') | replace('+', '_') }}.address"

with DAG(
    dag_id="pclean_test_continuum",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    params={
        "vis": Param("", type="string"),
        "imagename": Param("", type="string"),
        "work_dir": Param("", type="string"),
        "nworkers": Param(2, type="integer"),
        "imaging": Param({}, type="object"),
    },
    render_template_as_native_obj=True,
    tags=["pclean-test"],
) as dag:
    up = ClusterUpOperator(task_id="cluster_up", address_file=ADDRESS_FILE,
                           cluster_overrides={"nworkers": "{{ params.nworkers }}",
                                              "local_directory": "{{ params.work_dir }}/dask"})
    continuum = ContinuumImagingOperator(
        task_id="continuum",
        scheduler_address=up.output,
        overrides="{{ dict(params.imaging, vis=params.vis, imagename=params.imagename) }}",
        poll_interval=1.0,
        deferrable=True,  # the deferred path is what these tests show, whatever default_deferrable says
    )
    down = ClusterDownOperator(task_id="cluster_down", address_file=ADDRESS_FILE)
    continuum >> down.as_teardown(setups=up)
