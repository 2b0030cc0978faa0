"""Where the part sessions of a run live: in this process, or resident on Dask workers.

A continuum run's parts are row partitions (`imager_session.open_part`); a cube's parts are
sub-cube sessions (`cube_session.open_cube_session`). The backends take the function that builds
a part and the kind of imaging it serves, and send every later step through the session registry
of the process holding the part (`casa/session_registry.py`), by operation name
(`casa/session_protocol.py`). Both backends give the coordinator the same calls (open, run,
close) and the same failure: `ImagingPartError`, which names the part and the step.
A continuum run never continues with a missing part, because the gathered image would silently
lack that part's rows; a cube rebuilds a lost sub-cube session from its images on disk
(`PartsLost` says which parts were lost and what the others returned, so that no step runs twice
on a part).

On Dask every task of a part is pinned to the worker that holds its session
(`workers=[addr], allow_other_workers=False`). If that worker disappears, a pinned task would
wait forever for a worker that will not come back, so waiting also watches the workers.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pclean_provider.casa import session_registry
from pclean_provider.casa.session_protocol import PartReply
from pclean_provider.compute.dask_keys import engine_key
from pclean_provider.compute.futures import wait_done
from pclean_provider.engine.imaging_errors import ImagingPartError

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if "\n" in text else text


class PartsLost(ImagingPartError):
    """Workers holding some parts left the cluster during a step; the other parts finished it."""

    def __init__(self, lost: dict[int, str], done: dict[int, PartReply], nparts: int, operation: str,
                 imaging: str) -> None:
        self.lost = lost
        self.done = done
        first = min(lost)
        super().__init__(first, nparts, operation, lost[first], imaging)


class SerialParts:
    """All parts in the calling process, one after the other (client=None)."""

    kind = "serial"

    def __init__(self, run_id: str, nparts: int, *, imaging: str, opener: Callable[..., str]) -> None:
        self.run_id = run_id
        self.imaging = imaging
        self.nparts = nparts
        self.opener = opener
        self.workers: list[str] = ["in-process"]

    def open(self, specs: Sequence[Any], **kwargs: Any) -> list[PartReply]:
        out = []
        for spec in specs:
            try:
                out.append(PartReply.model_validate_json(self.opener(spec.model_dump_json(), **kwargs)))
            except Exception as exc:
                raise ImagingPartError(spec.part, self.nparts, "open", _first_line(exc), self.imaging) from exc
        return out

    def run(self, operation: str, parts: Sequence[int] | None = None, **kwargs: Any) -> list[PartReply]:
        out = []
        for part in (range(self.nparts) if parts is None else parts):
            try:
                out.append(PartReply.model_validate_json(
                    session_registry.run_part(self.run_id, part, operation, **kwargs)))
            except Exception as exc:
                raise ImagingPartError(part, self.nparts, operation, _first_line(exc), self.imaging) from exc
        return out

    def close(self) -> None:
        session_registry.close_run(self.run_id)


class DaskParts:
    """One imager per part, each resident on one Dask worker for the whole run."""

    kind = "dask"

    def __init__(self, client: Any, run_id: str, nparts: int, *, imaging: str, opener: Callable[..., str],
                 poll_s: float = 1.0) -> None:
        self.client = client
        self.imaging = imaging
        self.run_id = run_id
        self.nparts = nparts
        self.poll_s = poll_s
        self.opener = opener
        workers = sorted(client.nthreads())
        if not workers:
            raise RuntimeError("the Dask cluster has no workers; start some (nworkers) and retry")
        # Round-robin: with more parts than workers a worker holds several imagers and runs their
        # steps one after the other (one thread per worker).
        self.assignment = {k: workers[k % len(workers)] for k in range(nparts)}
        self.workers = workers
        self._seq = itertools.count()
        # Each part's spec and how far its process's output file went when its current step began:
        # a part whose worker vanishes is told apart from one that CASA ended by what came after.
        self._specs: dict[int, Any] = {}
        self._output_at: dict[int, int] = {}

    def _submit(self, part: int, fn, *args: Any, label: str, **kwargs: Any):
        key = engine_key(self.imaging, label, self.run_id, f"p{part + 1}", next(self._seq))
        return self.client.submit(fn, *args, key=key, workers=[self.assignment[part]],
                                  allow_other_workers=False, pure=False, **kwargs)

    def reassign(self, part: int) -> str:
        """Move a part whose worker is gone to the live worker holding the fewest parts."""
        alive = sorted(self.client.nthreads())
        if not alive:
            raise ImagingPartError(part, self.nparts, "reassign", "no worker left in the cluster", self.imaging)
        load = {w: sum(1 for a in self.assignment.values() if a == w) for w in alive}
        self.assignment[part] = min(alive, key=lambda w: (load[w], w))
        return self.assignment[part]

    def _gather(self, futures: dict[int, Any], operation: str) -> list[PartReply]:
        pending = dict(futures)
        results: dict[int, PartReply] = {}
        lost: dict[int, str] = {}
        # Waiting on the first pending part only, for at most poll_s: poll_s bounds how long a lost
        # worker or a failed other part goes unnoticed. Unlike other waits this one also watches
        # the workers: a task pinned to a worker that left would stay pending forever.
        next_worker_check = time.monotonic() + self.poll_s
        try:
            while pending:
                wait_done([pending[min(pending)]], timeout=self.poll_s)
                for part, fut in list(pending.items()):
                    if fut.status == "finished":
                        results[part] = PartReply.model_validate_json(fut.result())
                        del pending[part]
                    elif fut.status in ("error", "cancelled", "lost"):
                        try:
                            exc = fut.exception()
                        except Exception as inner:  # cancelled futures raise here
                            exc = inner
                        raise ImagingPartError(part, self.nparts, operation,
                                               _first_line(exc) if exc else fut.status, self.imaging)
                if pending and time.monotonic() >= next_worker_check:
                    next_worker_check = time.monotonic() + self.poll_s
                    alive = set(self.client.nthreads())
                    for part in list(pending):
                        addr = self.assignment[part]
                        if addr not in alive:
                            self._raise_if_casa_ended(part, operation)
                            # The other parts go on: cancelling them would leave their step half
                            # done on their workers, and the step cannot safely run twice.
                            lost[part] = f"worker {addr} holding this part left the cluster (lost or killed)"
                            pending.pop(part).cancel()
        except BaseException:
            for fut in pending.values():
                fut.cancel()
            raise
        if lost:
            raise PartsLost(lost, results, self.nparts, operation, self.imaging)
        return [results[k] for k in sorted(results)]

    def _raise_if_casa_ended(self, part: int, operation: str) -> None:
        """A part whose process CASA itself ended (an uncaught C++ error) is not a lost worker: doing
        the step again elsewhere would end the same way, so the user gets CASA's own words."""
        spec = self._specs.get(part)
        reason = session_registry.abort_reason(spec, self._output_at.get(part, 0)) if spec is not None else ""
        if reason:
            raise ImagingPartError(part, self.nparts, operation, reason, self.imaging)

    def _mark_outputs(self, parts: Sequence[int]) -> None:
        for part in parts:
            if part in self._specs:
                self._output_at[part] = session_registry.output_size(self._specs[part])

    def warm_up(self, log_paths: dict[int, str]) -> None:
        """Start each part's worker on its one-time set-up (its log switch) without waiting.

        Its tasks run ahead of the part's open on the same one-thread worker; a failure here is
        left to show itself in the open, which names the part.
        """
        self._warming = [self._submit(k, session_registry.warm_up, path, label="warm")
                         for k, path in sorted(log_paths.items())]

    def open(self, specs: Sequence[Any], **kwargs: Any) -> list[PartReply]:
        self._specs.update({spec.part: spec for spec in specs})
        self._mark_outputs([spec.part for spec in specs])
        futures = {spec.part: self._submit(spec.part, self.opener, spec.model_dump_json(),
                                           label="open", **kwargs) for spec in specs}
        try:
            return self._gather(futures, "open")
        finally:
            for fut in getattr(self, "_warming", []):
                fut.release()
            self._warming = []

    def run(self, operation: str, parts: Sequence[int] | None = None, **kwargs: Any) -> list[PartReply]:
        todo = range(self.nparts) if parts is None else parts
        self._mark_outputs(todo)
        futures = {k: self._submit(k, session_registry.run_part, self.run_id, k, operation,
                                   label=operation, **kwargs) for k in todo}
        return self._gather(futures, operation)

    def close(self) -> None:
        """Release the imagers (best effort: a lost worker has nothing left to release)."""
        alive = set()
        try:
            alive = set(self.client.nthreads())
        except Exception:
            pass
        futures = [self._submit(k, session_registry.close_part, self.run_id, k, label="close")
                   for k in range(self.nparts) if self.assignment[k] in alive]
        if not futures:
            return
        # Not wait_done: these tasks are pinned, so one whose worker died while closing is lost
        # for good and never done; the wait ends once none is pending.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(f.status == "pending" for f in futures):
            time.sleep(0.01)
        for fut in futures:
            if fut.status == "error":
                log.warning("%s run %s: closing part imagers: %s", self.imaging, self.run_id,
                            _first_line(fut.exception()))
            fut.release()
