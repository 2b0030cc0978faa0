"""The one way the engine waits on Dask futures.

`Future.result(timeout)` on one future at a time: it returns the moment that task ends (no polling
delay, which matters when every wait is on the critical path of a major cycle), and a timeout
bounds how long the caller goes without a look at the others. `distributed.wait` and
`as_completed` would need a default client, which the cluster's client need not be (several
clusters can live in one process: tests, Airflow workers).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


def wait_done(futures: Iterable[Any], timeout: float | None = None) -> bool:
    """Block until every future is done (finished, erred or cancelled), or until `timeout` seconds
    have passed; True when all are done. As with `distributed.wait`, a task whose result was lost
    is not done: the scheduler computes it again. A task's error is not raised here: the caller
    reads each future's status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for fut in futures:
        while not fut.done():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                fut.result(timeout=remaining)
            except Exception:  # noqa: S110 - a timeout or the task's error: the status says which
                pass
    return True
