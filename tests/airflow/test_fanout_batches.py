"""The fan-out pipeline DAG with more sub-cubes than Airflow's map limit, under dag.test().

Airflow's ``max_map_length`` is lowered to 8 and the cube has 10 one-channel sub-cubes: Airflow
sees a few batch tasks per MS (each a Dask task per sub-cube underneath), the cube equals serial
tclean at niter=0, and clearing one batch (with downstream, as the UI does) selects only its own
MS's tail. Real CASA, a real local Dask cluster, the shipped cube template with cube_mode fanout.
"""

from __future__ import annotations

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import
from tests.airflow.test_nightly_dags import (
    DATA_ROOT,
    SMALL_CUBE,
    dag_for_run,
    map_names,
    project_dags,
    run_dag,
    simulate_into,
    task_states,
    template_dag,
)

pytestmark = [pytest.mark.airflow, pytest.mark.casa]

NCHAN = 10
BATCH_TASKS = 5
MAP_LIMIT = 8
PIXEL_TOL = 1e-5  # of each product's peak; measured: identical


@pytest.fixture(scope="module")
def dags(casa_runtime):
    return project_dags()


def test_a_cube_past_the_map_limit_runs_in_batches_and_equals_tclean(dags, tmp_path, monkeypatch):
    import numpy as np
    from airflow.models.taskinstance import find_relevant_relatives
    from airflow.utils.session import create_session

    from tests.casa.cube_helpers import tclean_fresh
    from tests.image_compare import beams, frequencies, pixels

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", str(MAP_LIMIT))
    landing = DATA_ROOT / "landing-batches"
    wide = simulate_into(landing, "wide.ms", seed=51, nchan=NCHAN)
    simulate_into(landing, "narrow.ms", seed=52, nchan=4)
    # 4 sub-cubes per task: 3 batches for the wide cube; the fourth and fifth have nothing to image.
    dag = template_dag(tmp_path / "batch-dags", "nightly_cube_batches", cube_mode="fanout",
                       landing_dir="landing-batches",
                       cube={"subcubes_per_task": 4, "batch_tasks": BATCH_TASKS})
    batch_ids = [f"subcubes_{n}" for n in range(1, BATCH_TASKS + 1)]
    assert all(dag.get_task(t).pool == "default_pool" for t in batch_ids), "deferred batches hold no heavy slot"
    heavy = {t.task_id for t in dag.tasks if t.pool == "pclean_heavy"}
    assert {"concat", "qa", "archive"} <= heavy, heavy
    overrides = {**SMALL_CUBE, "niter": 0, "cube_chunksize": 1}
    run = run_dag(dag, {"overrides": overrides, "qa_min_score": 0.0})
    states = task_states(run)
    assert str(run.state) == "success", states

    ms_index = map_names(run, "partition")
    w, n = ms_index["wide.ms"], ms_index["narrow.ms"]
    names = {t: {ti.map_index: ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == t}
             for t in batch_ids}
    # The wide cube: 10 sub-cubes (more than the map limit) in 3 batches of 4/3/3.
    assert [names[t][w] for t in batch_ids[:3]] == [
        "wide.ms ch 0-3 (4 sub-cubes)", "wide.ms ch 4-6 (3 sub-cubes)", "wide.ms ch 7-9 (3 sub-cubes)"], names
    assert all(names[t][w] == "no batch" and states[(t, w)][0] == "success" for t in batch_ids[3:]), names
    # The narrow one: 4 sub-cubes in one batch.
    assert names["subcubes_1"][n] == "narrow.ms ch 0-3 (4 sub-cubes)"
    assert all(names[t][n] == "no batch" for t in batch_ids[1:])
    for task_id in ("gather_subcubes", "concat", "qa", "qa_gate", "archive"):
        assert states[(task_id, w)][0] == "success" and states[(task_id, n)][0] == "success", (task_id, states)

    # Equal to serial tclean at niter=0, with the parameters the DAG used.
    from airflow.models.xcom import XComModel

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run.run_id, key="plan", dag_ids=dag.dag_id,
                                                 task_ids="partition", map_indexes=w)).first()
        plan = XComModel.deserialize_value(row)
    assert plan["nchan"] == NCHAN and len(plan["specs"]) == NCHAN
    cube = plan["imagename"]
    kwargs = {k: v for k, v in plan["tclean_kwargs"].items() if k not in ("vis", "imagename")}
    reference = str(tmp_path / "reference" / "wide.cube")
    tclean_fresh(str(wide), reference, **{**kwargs, "parallel": False})
    for suffix in (".image", ".residual", ".psf", ".pb", ".sumwt"):
        got, want = pixels(cube + suffix), pixels(reference + suffix)
        assert got.shape == want.shape, suffix
        peak = float(np.nanmax(np.abs(want))) or 1.0
        assert float(np.nanmax(np.abs(got - want))) <= PIXEL_TOL * peak, suffix
    np.testing.assert_allclose(frequencies(cube + ".image"), frequencies(reference + ".image"), rtol=1e-9)
    np.testing.assert_allclose(np.array(beams(cube + ".image")), np.array(beams(reference + ".image")), rtol=1e-6)

    # Surgical rerun: clearing one batch of the wide MS with downstream (as the UI does) selects its
    # MS's gather, concat, QA, gate, archive, review and review decision, and the cluster's teardown; nothing of the
    # narrow MS, and no other batch.
    with create_session() as session:
        selected = find_relevant_relatives([], [("subcubes_2", w)], direction="downstream",
                                           dag=dag_for_run(run, session), run_id=run.run_id, session=session)
    assert set(selected) == {("gather_subcubes", w), ("concat", w), ("qa", w), ("qa_gate", w), ("archive", w),
                             ("review", w), ("review_decision", w), "cluster_down"}, selected
