"""Test DAG: cluster up -> partition -> mapped sub-cube batches -> concat, cluster down as teardown.

The run conf gives the MeasurementSet, the image name and the work folder; the cluster is a local
Dask cluster held by a cluster host for the length of the run.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from pclean_provider.operators.cluster import ClusterDownOperator, ClusterUpOperator
from pclean_provider.operators.cube import CubeConcatOperator, CubePartitionOperator, SubcubeBatchOperator

ADDRESS_FILE = "{{ params.work_dir }}/cluster/{{ run_id | replace(':', '_') | replace('+', '_') }}.address"

with DAG(
    dag_id="pclean_test_cube",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "vis": Param("", type="string"),
        "imagename": Param("", type="string"),
        "work_dir": Param("", type="string"),
        "nworkers": Param(2, type="integer"),
        "subcubes_per_task": Param(2, type="integer"),
        "imaging": Param({}, type="object"),
    },
    render_template_as_native_obj=True,
    tags=["pclean-test"],
) as dag:
    up = ClusterUpOperator(task_id="cluster_up", address_file=ADDRESS_FILE,
                           cluster_overrides={"nworkers": "{{ params.nworkers }}",
                                              "local_directory": "{{ params.work_dir }}/dask"})
    partition = CubePartitionOperator(
        task_id="partition",
        scheduler_address=up.output,
        overrides="{{ dict(params.imaging, vis=params.vis, imagename=params.imagename) }}",
        poll_interval=1.0,
        deferrable=True,  # the deferred path is what these tests show, whatever default_deferrable says
        # The test cleans a little to show the fan-out equals the independent engine it runs.
        allow_cleaned=True,
        # One mapped task per batch of sub-cubes; each sub-cube is still a Dask task of its own.
        batched=True,
        subcubes_per_task="{{ params.subcubes_per_task }}",
        # Retries are allowed, so a test can show that bad input fails at once instead of retrying.
        retries=1,
        retry_delay=dt.timedelta(seconds=1),
    )
    subcubes = SubcubeBatchOperator.partial(
        task_id="subcube", scheduler_address=up.output, poll_interval=1.0, retries=0, deferrable=True,
    ).expand(specs=partition.output)
    concat = CubeConcatOperator(task_id="concat", scheduler_address=up.output, plan=partition.output["plan"],
                                concat_options=partition.output["concat_options"], results=subcubes.output,
                                poll_interval=1.0, deferrable=True)
    down = ClusterDownOperator(task_id="cluster_down", address_file=ADDRESS_FILE)
    concat >> down.as_teardown(setups=up)
