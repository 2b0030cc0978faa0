"""The nightly cube DAG, run once with `dag.test()`: `python -m bench.airflow_case CASE.json RESULT.json`.

The parent gives this process an Airflow home of its own (AIRFLOW_HOME, SQLite, the project's
dags/ folder) through the environment, after `airflow db migrate`. Task-instance start/end times
come from Airflow's own records, so the split between imaging and the other pipeline steps is
Airflow's view, not ours.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.json_files import write_json

REPO = Path(__file__).resolve().parents[1]
# The DAG's tasks that make up the imaging, from cluster start to the finished cube: the exact
# loop's one `cube` task per MS (cube_mode exact, the default), or the fan-out's tasks ending in
# the concatenation (cube_mode fanout).
IMAGING_TASKS = ("cluster_up", "cube", "partition", "gather_subcubes", "concat")


def is_imaging_task(task_id: str) -> bool:
    """One of IMAGING_TASKS or a fan-out sub-cube batch task (subcubes_1 .. subcubes_K)."""
    return task_id in IMAGING_TASKS or task_id.startswith("subcubes_")


def _ti_rows(dr) -> list[dict]:
    from airflow import settings

    session = settings.Session()
    rows = []
    for ti in dr.get_task_instances(session=session):
        start, end = ti.start_date, ti.end_date
        rows.append({"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                     "start": start.timestamp() if start else None, "end": end.timestamp() if end else None,
                     "duration_s": (end - start).total_seconds() if start and end else None})
    return rows


def _latest_run(dag_id: str):
    from airflow import settings
    from airflow.models.dagrun import DagRun

    session = settings.Session()
    session.rollback()  # the failed statement left the session's transaction unusable
    return session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()


def spans(rows: list[dict]) -> dict[str, float]:
    """Wall-clock spans by group of tasks (first start to last end), from task-instance records."""
    def span(pred) -> float | None:
        sel = [r for r in rows if pred(r["task_id"]) and r["start"] is not None and r["end"] is not None]
        if not sel:
            return None
        return max(r["end"] for r in sel) - min(r["start"] for r in sel)

    out = {"imaging": span(is_imaging_task), "cube tasks": span(lambda t: t == "cube"),
           "sub-cube tasks": span(lambda t: t.startswith("subcubes_")),
           "ingest": span(lambda t: t == "ingest"), "prepare": span(lambda t: t == "prepare"),
           "qa": span(lambda t: t in ("qa", "qa_gate")), "archive": span(lambda t: t in ("archive", "review")),
           "cluster_down": span(lambda t: t == "cluster_down")}
    return {k: v for k, v in out.items() if v is not None}


def main(argv: list[str]) -> int:
    case = json.loads(Path(argv[1]).read_text())
    result_file = argv[2]
    os.chdir(case["case_dir"])
    t0 = time.perf_counter()
    data: dict = {}
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        dag = bag.get_dag(case["dag_id"])
        if dag is None:
            raise RuntimeError(f"no DAG {case['dag_id']!r} in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}")
        t = time.perf_counter()
        try:
            dr = dag.test(run_conf=case["run_conf"])
        except Exception as err:
            # Airflow 3.3.2's dag.test() can raise after the run has finished (it looks up the DAG's
            # DeadlineAlert with a bad parameter); the run and its task records are in the database,
            # so read them there and say what happened.
            dr = _latest_run(case["dag_id"])
            if dr is None:
                raise
            data["dag_test_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        data["engine_s"] = time.perf_counter() - t
        rows = _ti_rows(dr)
        data["dag_run_state"] = str(dr.state)
        data["task_instances"] = rows
        data["spans"] = spans(rows)
        data["stages"] = {f"DAG {k}": v for k, v in data["spans"].items() if k != "sub-cube tasks"}
        failed = [f"{r['task_id']}[{r['map_index']}]: {r['state']}" for r in rows
                  if r["state"] not in ("success", "skipped", "TaskInstanceState.SUCCESS", "TaskInstanceState.SKIPPED")]
        finished_ok = bool(rows) and all(r["state"].lower().rsplit(".", 1)[-1] in ("success", "skipped") for r in rows)
        # With dag.test()'s late error the run's own state may not have been committed; every task
        # having succeeded (or been skipped by the QA gate) is then what says the run succeeded.
        data["ok"] = "success" in str(dr.state).lower() or (bool(data.get("dag_test_error")) and finished_ok)
        if not data["ok"]:
            data["error"] = f"DAG run ended {dr.state}; not successful: {failed}"
    except BaseException as err:
        data.update(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
    data["wall_s"] = time.perf_counter() - t0
    write_json(result_file, data)
    return 0 if data.get("ok") else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv))
