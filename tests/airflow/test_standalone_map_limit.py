"""A live `airflow standalone` whose `max_map_length` is 8 images a cube of 12 one-channel sub-cubes
(the smallest sizes that prove the point: more sub-cubes than Airflow may map).

The fan-out pipeline maps its per-MS task group over the night's MSs, and each batch task runs many
sub-cubes as Dask tasks of their own, so the number of sub-cubes is not bounded by Airflow's map
limit (the design before it mapped one task per sub-cube and could not run this cube at all). The
cube equals serial tclean's at niter=0. The dag.test() counterpart is test_fanout_batches.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.airflow import standalone
from tests.airflow.test_standalone_e2e import airflow_standalone  # noqa: F401 - the shared fixture

pytestmark = [pytest.mark.airflow, pytest.mark.casa]
DAG_ID = standalone.FANOUT_DAG_ID
NCHAN = 12
PIXEL_TOL = 1e-5  # of each product's peak


def test_more_subcubes_than_the_live_map_limit(airflow_standalone, casa_runtime, tmp_path):  # noqa: F811
    from pclean_provider.casa.simulator import simulate_ms
    from tests.casa.cube_helpers import tclean_fresh
    from tests.image_compare import frequencies, pixels

    server = airflow_standalone
    assert NCHAN > standalone.LIVE_MAX_MAP_LENGTH
    ms = simulate_ms(server.data_root / "incoming" / "maplimit.ms", nchan=NCHAN, hours=0.25, seed=61).ms
    server.wait_for_dag(DAG_ID)
    server.unpause(DAG_ID)
    overrides = {**standalone.SMALL_DIRTY_CUBE, "cube_chunksize": 1}
    run_id = server.trigger(DAG_ID, {"vis": ms, "overrides": overrides, "qa_min_score": 0.0})
    state = server.wait_for_run(DAG_ID, run_id, timeout=900)
    summary = server.task_summary(DAG_ID, run_id)
    assert state == "success", (summary, server.tail())

    # 12 sub-cubes in the template's two batch tasks, one mapped task instance each (one MS).
    labels = sorted(t.get("rendered_map_index") for t in server.task_instances(DAG_ID, run_id)
                    if t["task_id"] in ("subcubes_1", "subcubes_2"))
    assert labels == ["maplimit.ms ch 0-5 (6 sub-cubes)", "maplimit.ms ch 6-11 (6 sub-cubes)"], labels
    for key in [("partition", 0), ("subcubes_1", 0), ("subcubes_2", 0), ("gather_subcubes", 0), ("concat", 0),
                ("archive", 0)]:
        assert summary[key][0] == "success", (key, summary)

    plan = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/partition/xcomEntries/plan",
                      params={"map_index": 0, "deserialize": True, "stringify": False})["value"]
    assert len(plan["specs"]) == NCHAN
    cube = plan["imagename"]
    kwargs = {k: v for k, v in plan["tclean_kwargs"].items() if k not in ("vis", "imagename")}
    reference = str(tmp_path / "reference" / "maplimit.cube")
    tclean_fresh(str(ms), reference, **{**kwargs, "parallel": False})
    for suffix in (".image", ".psf", ".pb", ".sumwt"):
        got, want = pixels(cube + suffix), pixels(reference + suffix)
        assert got.shape == want.shape, suffix
        peak = float(np.nanmax(np.abs(want))) or 1.0
        assert float(np.nanmax(np.abs(got - want))) <= PIXEL_TOL * peak, suffix
    np.testing.assert_allclose(frequencies(cube + ".image"), frequencies(reference + ".image"), rtol=1e-9)
    assert Path(cube + ".image").is_dir()
