"""A cluster host's lease: the Airflow side renews it while a run needs the cluster; the host ends
itself when nobody has for ``host_idle_timeout`` seconds.

A host whose run was abandoned (Airflow stopped, a run marked failed before its teardown) would
otherwise hold its workers (and SLURM allocations) for ever. The lease lives in the scheduler's
own metadata, so renewing needs nothing but a client of the scheduler, which every operator and
trigger already has, and works from any machine that reaches the scheduler (no shared clock: the
host only notices that the value changed). A client that stays connected (an inline wait, a person's
``pclean()`` session) counts as renewal too.

No module-level import of distributed: the Airflow layer imports this module.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

LEASE_KEY = "pclean-host-lease"
# The scheduler's own pseudo-client for fire_and_forget futures; never a sign of life.
_INTERNAL_CLIENTS = frozenset({"fire-and-forget"})
# The scheduler's publish extension holds each published name's keys under a pseudo-client of this
# prefix, and keeps that entry after the name is withdrawn and its publisher has left; counted as a
# client, every host that ever ran published work (all of the operators' work) would live for ever.
_PUBLICATION_PREFIX = "published-"


def renew_lease(client: Any) -> Any:
    """Renew the lease of the cluster behind ``client``; awaitable for an asynchronous client.

    Harmless on a scheduler that is not a cluster host's (a plain metadata entry nobody reads).
    """
    return client.set_metadata(LEASE_KEY, time.time())


async def async_renew_lease(client: Any) -> None:
    result = renew_lease(client)
    if inspect.isawaitable(result):
        await result


def _scheduler_activity(own_clients: list[str], dask_scheduler: Any = None) -> tuple[Any, list[str]]:
    """Run on the scheduler: the lease's value and the clients that are not the host's own."""
    lease = dask_scheduler.get_metadata(keys=[LEASE_KEY], default=None)
    others = [cid for cid in dask_scheduler.clients if cid not in own_clients and cid not in _INTERNAL_CLIENTS
              and not cid.startswith(_PUBLICATION_PREFIX)]
    return lease, others


class LeaseWatch:
    """Held by the host: ``expired()`` is True once nobody renewed the lease for ``timeout`` seconds.

    Counting starts when the host is up, so a host that nobody ever connects to also ends.
    """

    def __init__(self, client: Any, timeout: float | None, check_every: float | None = None) -> None:
        self.client = client
        self.timeout = float(timeout or 0.0)
        self.check_every = check_every if check_every is not None else max(0.5, min(10.0, self.timeout / 5))
        self._last_value: Any = None
        self._renewed = time.monotonic()
        self._checked = 0.0

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def idle_for(self) -> float:
        return time.monotonic() - self._renewed

    def expired(self) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            try:
                lease, others = self.client.run_on_scheduler(_scheduler_activity, [self.client.id])
            except Exception as exc:  # a scheduler that does not answer cannot be renewed either
                log.warning("could not read the lease from the scheduler: %s", exc)
            else:
                if others or (lease is not None and lease != self._last_value):
                    self._renewed = now
                self._last_value = lease
        return self.idle_for() > self.timeout
