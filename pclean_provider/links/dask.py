"""The "Dask dashboard" button on the provider's tasks in the Airflow UI, shown only while its cluster lives.

The operator stores the dashboard's URL in XCom when it connects, because only then is the cluster
known (an address from a cluster-up task, a SLURM scheduler on some login node). A URL stored once
would outlive the cluster (a dead loopback port, or worse, a later cluster's dashboard on a reused
port), so the link asks the dashboard who it is before it shows: Dask's scheduler answers
``json/identity.json`` with its start time, and only a scheduler that was already running when the
task stored the URL is the task's cluster (a scheduler started since then is another one on the
same port). The provider's plugin registers this link for the provider's operators so that the API
server works it out each time the UI shows the task; without the plugin, Airflow shows the URL the
task stored when it ended.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from airflow.sdk import BaseOperatorLink

from pclean_provider.links.task_xcom import task_xcom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

DASHBOARD_XCOM_KEY = "dask_dashboard"
#: How long the API server waits for a dashboard's answer; a silent host counts as a dead cluster.
PROBE_TIMEOUT_S = 1.0
#: Allowed difference between the scheduler host's clock and the database's when telling a
#: scheduler that started after the task stored its URL (another cluster) from the task's own.
CLOCK_SLACK_S = 60.0
#: The UI asks again every few seconds while a task page is open; one probe answers for this long.
_CACHE_S = 5.0
_answers: dict[tuple[str, float | None], tuple[float, bool]] = {}


def _identity(url: str, timeout: float) -> dict[str, Any] | None:
    """The scheduler's identity from the dashboard at ``url``, or None when nothing Dask-like answers."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    context = None
    if parts.scheme == "https":
        # A liveness probe of a public page with nothing sent: a cluster's self-signed certificate
        # must not hide a live dashboard.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # The dashboard may live under a prefix (".../dask/status"): its JSON routes sit beside "status".
    probe = urljoin(url if url.endswith("/") else url.rsplit("/", 1)[0] + "/", "json/identity.json")
    try:
        # http(s) only: the scheme was checked above.
        with urllib.request.urlopen(probe, timeout=timeout, context=context) as answer:  # noqa: S310
            data = json.loads(answer.read(65536))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dashboard_alive(url: str, stored_at: datetime | None = None, timeout: float = PROBE_TIMEOUT_S,
                    cache_s: float = _CACHE_S) -> bool:
    """Whether the cluster whose dashboard the task stored at ``stored_at`` still serves ``url``
    (an answer up to ``cache_s`` old is reused)."""
    key = (url, stored_at.timestamp() if stored_at else None)
    now = time.monotonic()
    cached = _answers.get(key)
    if cached and now - cached[0] < cache_s:
        return cached[1]
    identity = _identity(url, timeout)
    alive = bool(identity) and identity.get("type") == "Scheduler"
    started = identity.get("started") if identity else None
    if alive and stored_at is not None and isinstance(started, int | float):
        alive = started <= stored_at.timestamp() + CLOCK_SLACK_S
    if len(_answers) > 512:
        _answers.clear()
    _answers[key] = (now, alive)
    return alive


class DaskDashboardLink(BaseOperatorLink):
    """Links a task to the dashboard of the Dask cluster its work ran on, while that cluster lives."""

    name = "Dask dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url, stored_at = task_xcom(ti_key, DASHBOARD_XCOM_KEY)
        if not isinstance(url, str) or not url:
            return ""
        return url if dashboard_alive(url, stored_at) else ""
