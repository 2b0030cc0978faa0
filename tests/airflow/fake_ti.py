"""What the operators use of a task instance, for operator tests run outside a DAG run.

Tests whose tasks read each other's XComs (tests/airflow/test_faults_cluster.py) keep a richer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeTI:
    try_number: int = 1
    dag_id: str = "d"
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    task_id: str = "echo"
    map_index: int = -1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key, value):
        self.xcoms[key] = value

    def xcom_pull(self, task_ids=None, key="return_value"):
        return None
