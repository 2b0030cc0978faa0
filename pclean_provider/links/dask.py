"""The "Dask dashboard" button on the provider's tasks in the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

DASHBOARD_XCOM_KEY = "dask_dashboard"


class DaskDashboardLink(BaseOperatorLink):
    """Links a task to the dashboard of the Dask cluster its work ran on.

    The operator stores the URL in XCom when it connects, because only then is the cluster known
    (an address from a cluster-up task, a SLURM scheduler on some login node).
    """

    name = "Dask dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=DASHBOARD_XCOM_KEY) or ""
