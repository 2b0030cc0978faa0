"""A cluster kept for repeated pclean() calls in one process (`keep_cluster=True`).

Starting a local cluster and loading CASA in its workers costs seconds, which dominates a small
image. An astronomer looping over many small images in a notebook or script asks for the cluster
to be kept: the first call starts it, later calls with the same cluster settings reuse it (its
workers still have CASA loaded), and it is stopped when the interpreter exits or when
`close_kept_clusters()` is called. A kept cluster that died (its workers gone, its scheduler
unreachable) is replaced on the next call rather than handed out.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_kept: dict[str, Any] = {}  # cluster settings (JSON) -> ClusterHandle


def _usable(handle: Any) -> bool:
    try:
        return handle.client.status == "running" and len(handle.client.nthreads()) > 0
    except Exception:  # a scheduler that cannot answer is not usable
        return False


def kept_client(spec: Any) -> Any:
    """The client of the kept cluster for `spec` (a ClusterSpec), started on first use."""
    # Here, not at the top: it loads `distributed` (compute/__init__ loads the cluster functions on
    # first use), which a run that keeps no cluster never needs.
    from pclean_provider.compute import start_cluster

    key = spec.model_dump_json()
    with _lock:
        handle = _kept.get(key)
        if handle is not None and _usable(handle):
            log.info("pclean: reusing the kept cluster %s", handle.address)
            return handle.client
        if handle is not None:
            log.warning("pclean: the kept cluster %s is gone; starting a new one", handle.address)
            _close(handle)
        handle = start_cluster(spec)
        _kept[key] = handle
        log.info("pclean: started cluster %s and keeping it for later calls (keep_cluster=True)", handle.address)
        return handle.client


def live_kept_client(spec: Any) -> Any | None:
    """The client of a live kept cluster for `spec`, or None; never starts one."""
    with _lock:
        handle = _kept.get(spec.model_dump_json())
        return handle.client if handle is not None and _usable(handle) else None


def kept_clusters() -> list[str]:
    """Scheduler addresses of the clusters kept in this process."""
    with _lock:
        return [h.address for h in _kept.values()]


def _close(handle: Any) -> None:
    try:
        handle.close()
    except Exception as exc:  # stopping a dead cluster must not hide the caller's work
        log.warning("pclean: stopping a kept cluster: %s", exc)


def close_kept_clusters() -> int:
    """Stop every cluster kept in this process; returns how many were stopped."""
    with _lock:
        handles = list(_kept.values())
        _kept.clear()
    for handle in handles:
        _close(handle)
    return len(handles)


atexit.register(close_kept_clusters)
