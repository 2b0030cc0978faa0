"""Test DAG: sub-cube tasks mapped over specs given in the run conf, on the cluster host whose
address file the conf names (its tls:// scheduler and certificate).

Lets a test own the Dask cluster (and keep its worker busy) while Airflow defers the sub-cubes.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from pclean_provider.operators.cube import SubcubeImagingOperator

with DAG(
    dag_id="pclean_test_subcubes",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    params={"address_file": Param("", type="string"), "specs": Param([], type="array")},
    tags=["pclean-test"],
) as dag:

    @task
    def specs_from_conf(params=None) -> list[dict]:
        return list(params["specs"])

    SubcubeImagingOperator.partial(
        task_id="subcube", address_file="{{ params.address_file }}", poll_interval=1.0, retries=0,
        deferrable=True,  # the deferred path is what the kill test shows, whatever default_deferrable says
    ).expand(spec=specs_from_conf())
