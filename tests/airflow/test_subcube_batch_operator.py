"""SubcubeBatchOperator and the partition's batch settings: names, skips and bad input (logic only,
no cluster: every case here ends before anything is submitted)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.airflow import provider_env  # noqa: F401  (sets AIRFLOW_HOME before Airflow is imported)

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("plaintext_dask_allowed")]

NOWHERE = "tcp://127.0.0.1:1"


@dataclass
class FakeTI:
    try_number: int = 1


def spec(first: int, last: int) -> dict:
    return {"index": first, "chan_start": first, "chan_stop": last + 1, "imagename": "/x/night1.cube",
            "vis": "/data/landing/night1.ms"}


def test_batch_names_say_the_channels_and_how_many_sub_cubes():
    from pclean_provider.operators.cube import SubcubeBatchOperator

    op = SubcubeBatchOperator(task_id="b", specs=[spec(0, 0), spec(1, 1), spec(2, 2)])
    assert op.batch_label == "ch 0-2 (3 sub-cubes)" and op.vis_name == "night1.ms"
    # A failure notification finds the MS in `vis` (pipeline.notify.ms_of).
    assert op.vis == "/data/landing/night1.ms"
    assert "specs" not in op.template_fields and "batch_specs" in op.template_fields
    one = SubcubeBatchOperator(task_id="b", batch_specs=[spec(4, 7)])
    assert one.batch_label == "ch 4-7 (1 sub-cube)"


def test_a_batch_task_the_cube_does_not_need_has_nothing_to_image():
    from pclean_provider.operators.cube import SubcubeBatchOperator

    op = SubcubeBatchOperator(task_id="subcubes_3", scheduler_address=NOWHERE, batch_specs=[])
    assert op.batch_label == "no batch"
    # Nothing submitted (the scheduler address is unreachable): an empty result at once.
    assert op.execute({"ti": FakeTI()}) == {"results": [], "timings": [], "seconds": 0.0}


def test_the_partition_hands_each_fixed_batch_task_its_own_batch():
    from pclean_provider.operators.cube import CubePartitionOperator

    pushed: dict = {}

    class RecordingTI(FakeTI):
        def xcom_push(self, key, value):
            pushed[key] = value

    specs = [spec(i, i) for i in range(5)]
    op = CubePartitionOperator(task_id="partition", subcubes_per_task=2, batch_tasks=4)
    ranges = op.on_result({"ti": RecordingTI()}, {"plan": {"nchan": 5, "nworkers": 2}, "specs": specs})
    assert ranges == [[0, 2], [2, 4], [4, 5]] == pushed["batch_ranges"]
    assert pushed["batch_1"] == specs[0:2] and pushed["batch_3"] == specs[4:5] and pushed["batch_4"] == []
    flat = CubePartitionOperator(task_id="partition", subcubes_per_task=2, batched=True, max_batches=2)
    # The map limit wins over the requested size: 5 sub-cubes in 2 batches, not 3.
    assert flat.on_result({"ti": RecordingTI()}, {"plan": {"nchan": 5, "nworkers": 2}, "specs": specs}) == [
        specs[0:3], specs[3:5]]


def test_specs_that_are_not_a_batch_fail_naming_what_to_pass():
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.operators.cube import SubcubeBatchOperator

    with pytest.raises(AirflowFailException, match="must be one batch of sub-cube specs"):
        SubcubeBatchOperator(task_id="b", scheduler_address=NOWHERE, specs=[{"index": 0}]).execute({"ti": FakeTI()})


@pytest.mark.parametrize("kwargs, word", [({"subcubes_per_task": 0}, "subcubes_per_task"),
                                          ({"max_batches": 0}, "max_batches"),
                                          ({"target_task_seconds": -1}, "target_task_seconds")])
def test_bad_batch_settings_fail_the_partition_before_any_work(kwargs, word):
    from airflow.sdk.exceptions import AirflowFailException

    from pclean_provider.operators.cube import CubePartitionOperator

    op = CubePartitionOperator(task_id="partition", scheduler_address=NOWHERE,
                               overrides={"vis": "/nowhere.ms", "imagename": "/x/c", "specmode": "cube"}, **kwargs)
    with pytest.raises(AirflowFailException, match=word):
        op.execute({"ti": FakeTI()})


def test_concat_takes_the_results_of_batches_and_of_single_sub_cubes():
    from pclean_provider.operators.cube import subcube_results

    batch = {"results": [{"index": 0}, {"index": 1}], "timings": []}
    assert subcube_results([batch, {"index": 2}, None]) == [{"index": 0}, {"index": 1}, {"index": 2}]
