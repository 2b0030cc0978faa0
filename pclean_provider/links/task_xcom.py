"""Read what a task instance pushed to XCom, wherever a link is being worked out.

Airflow 3 asks an operator's links for their URLs in two places: in the task's own process when
the task ends (the Task SDK stores each URL as an XCom), and in the API server for links a plugin
registers, every time the UI shows the task (so a link can change after the task ended: the Dask
dashboard goes away with its cluster, a QA report appears after the imaging task). The task's
process reads XCom through its supervisor; the API server has the metadata database.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

RETURN_KEY = "return_value"


def _in_task_process() -> bool:
    # Set by the Task SDK's runner (and by dag.test()) for the task it runs; absent in the API server.
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def task_xcom(ti_key: Any, key: str = RETURN_KEY) -> tuple[Any, datetime | None]:
    """The value ``ti_key``'s task instance pushed under ``key`` and when it did (the time is known
    only in the API server); ``(None, None)`` when it pushed nothing."""
    if _in_task_process():
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=key), None
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(key=key, run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                                   task_ids=ti_key.task_id, map_indexes=ti_key.map_index)
        row = session.execute(query.with_only_columns(XComModel.value, XComModel.timestamp)).first()
    if row is None:
        return None, None
    value = row.value
    if isinstance(value, str):
        # Plain JSON, as the task pushed it: never Airflow's deserializer, which would build whatever
        # classes an XCom names, in the API server.
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return value, row.timestamp
