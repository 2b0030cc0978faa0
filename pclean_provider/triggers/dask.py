"""Wait, without holding an Airflow worker slot, for one task's work on a Dask cluster.

The trigger finds the work by name (the deterministic key the operator published it under), so a
trigger rebuilt after a triggerer restart watches the same work instead of starting it again. Each
poll goes over a fresh asynchronous connection from the hook: nothing long-lived to go stale when the
scheduler or the triggerer restarts, and nothing that blocks the triggerer's event loop.

Cancellation: Airflow 3.3 calls ``BaseTrigger.on_kill()`` only when a user acted on the deferred
task (mark failed / success, clear), never on a triggerer shutdown, redistribution or timeout;
``cleanup()`` runs on every exit. So the Dask work is cancelled in ``on_kill()`` and only there.

No wait is unbounded: a scheduler unreachable for ``unreachable_timeout`` or without a single worker
for ``no_workers_timeout`` ends the wait with an error event that says what happened and how to
recover (the task's retry then finds or restarts the cluster); work still unfinished at ``deadline``
(a coordinator hung on a lock, a scheduler that accepts connections and never answers) ends it too,
and is withdrawn from the scheduler when it can still be reached. Each poll renews the cluster host's
lease (``compute.lease``), so a host outlives its run's waits and only its abandoned runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from pclean_provider.compute.dask_work import read_result
from pclean_provider.compute.tls import MissingClusterCertificate, PlaintextDaskRefused
from pclean_provider.hooks.dask import PcleanDaskHook

# How often a waiting trigger looks for the work's result file between its polls of the scheduler.
RESULT_CHECK_S = 0.5
# How long a trigger past its deadline tries to withdraw the work before it reports anyway.
WITHDRAW_S = 5.0
# How long finished work may take to show its result file (a shared filesystem's attribute cache)
# before the trigger concludes it was not this task's work.
RESULT_FILE_GRACE_S = 10.0


class DaskWorkTrigger(BaseTrigger):
    """Yield one event when the Dask work published under ``key`` finishes, fails or is lost.

    :param scheduler_address: the Dask scheduler that holds the work.
    :param key: the published name (and Dask key) of the work.
    :param result_file: JSON file the work writes on success; present means done, even when the
        scheduler has since forgotten the key.
    :param progress_file: optional JSON-lines file the work appends to; each new line is logged.
    :param poll_interval: seconds between polls.
    :param unreachable_timeout: seconds the scheduler may stay unreachable before the task fails.
    :param no_workers_timeout: seconds the scheduler may have no worker at all (SLURM jobs ended by
        their walltime, killed, still pending) before the task fails; 0 waits for workers for ever.
    :param tls_directory: the cluster's certificate folder when its scheduler uses TLS.
    :param label: a human-readable name for the work in log lines.
    :param deadline: wall-clock time (seconds since the epoch) after which the wait ends with an error
        (``deadline_message``) and the work is withdrawn; 0: none. A poll never outlasts it.
    :param deadline_message: what that error says (the bound, where it comes from, what to do).
    :param not_before: wall-clock time (seconds since the epoch) before which no event is yielded.
        Airflow 3.3 can fail a deferred task whose trigger fires before the scheduler has processed
        the executor's "success" report of the deferring attempt (apache/airflow#66374, #72716); the
        operator sets this a few seconds after its deferral so quick work does not hit that window.
    """

    def __init__(
        self,
        scheduler_address: str,
        key: str,
        result_file: str,
        progress_file: str | None = None,
        poll_interval: float = 5.0,
        unreachable_timeout: float = 120.0,
        no_workers_timeout: float = 900.0,
        label: str = "",
        not_before: float = 0.0,
        tls_directory: str | None = None,
        deadline: float = 0.0,
        deadline_message: str = "",
    ) -> None:
        super().__init__()
        self.deadline = float(deadline or 0.0)
        self.deadline_message = deadline_message
        self.scheduler_address = scheduler_address
        self.key = key
        self.result_file = result_file
        self.progress_file = progress_file
        self.poll_interval = float(poll_interval)
        self.unreachable_timeout = float(unreachable_timeout)
        self.no_workers_timeout = float(no_workers_timeout or 0.0)
        self._no_workers_since: float | None = None
        self.label = label or key
        self.not_before = float(not_before or 0.0)
        self.tls_directory = tls_directory or None
        self._hook = PcleanDaskHook(None, scheduler_address=scheduler_address, tls_directory=self.tls_directory)
        self._progress = self._hook.progress_tail(progress_file)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "scheduler_address": self.scheduler_address,
                "key": self.key,
                "result_file": self.result_file,
                "progress_file": self.progress_file,
                "poll_interval": self.poll_interval,
                "unreachable_timeout": self.unreachable_timeout,
                "no_workers_timeout": self.no_workers_timeout,
                "label": self.label,
                "not_before": self.not_before,
                "tls_directory": self.tls_directory,
                "deadline": self.deadline,
                "deadline_message": self.deadline_message,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Waiting for %s (Dask key %s on %s)", self.label, self.key, self.scheduler_address)
        unreachable_since: float | None = None
        last_state = None
        while True:
            self._log_new_progress()
            result = read_result(self.result_file)
            if result is not None:
                self._log_new_progress()
                await self._hold_until_safe()
                yield self._success(result)
                return
            if self.deadline and time.time() >= self.deadline:
                await self._withdraw()
                await self._hold_until_safe()
                yield TriggerEvent(self._event("error", self.deadline_message or (
                    f"{self.label} did not finish by its deadline; its Dask work was withdrawn")))
                return
            try:
                # A scheduler that accepts connections but never answers (stopped, overloaded) must not
                # carry the poll past the deadline.
                left = self.deadline - time.time() if self.deadline else None
                state, payload = await asyncio.wait_for(_uncancellable_inside(self._poll_once()),
                                                        timeout=None if left is None else max(left, 0.05))
                unreachable_since = None
            except (PlaintextDaskRefused, MissingClusterCertificate) as exc:
                # Not a passing fault: the address needs TLS (or the administrator's leave for plaintext).
                await self._hold_until_safe()
                yield TriggerEvent({**self._event("error", f"{self.label}: {exc}"), "input_error": True})
                return
            except (OSError, TimeoutError) as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self.unreachable_timeout:
                    await self._hold_until_safe()
                    yield TriggerEvent(self._event(
                        "error",
                        f"the Dask scheduler at {self.scheduler_address} stayed unreachable for "
                        f"{self.unreachable_timeout:g} s while waiting for {self.label} ({exc}): the "
                        "cluster host or scheduler is gone and the work with it. A retry of the task "
                        "restarts the cluster host from its spec; if the cluster was stopped on purpose, "
                        "clear the cluster_up task (with downstream) to start a new one."))
                    return
                self.log.warning("Dask scheduler %s unreachable (%s); will retry", self.scheduler_address, exc)
                await asyncio.sleep(self.poll_interval)
                continue

            if state == "finished":
                # The result file is the result (the work writes it before returning); what the Dask
                # task returned is never unpickled here. Finished without one: not this task's work.
                result = await self._result_after_finish()
                self._log_new_progress()
                await self._hold_until_safe()
                if result is None:
                    yield TriggerEvent(self._event("error", (
                        f"the Dask task {self.key} finished without writing {self.label}'s result file "
                        f"{self.result_file}: it was not this task's work (something else ran under its key "
                        "on a shared scheduler) or the file was removed; its result was not read. Retry the "
                        "task to submit the work anew, and check who else uses the cluster.")))
                else:
                    yield self._success(result)
                return
            if state == "no_workers":
                await self._hold_until_safe()
                yield TriggerEvent(self._event("error", payload))
                return
            if state in ("error", "cancelled", "lost", "foreign"):
                # A finished result may have landed between the two reads; prefer it.
                if (result := read_result(self.result_file)) is not None:
                    await self._hold_until_safe()
                    yield self._success(result)
                    return
                event = self._event("error", payload["message"] if isinstance(payload, dict) else payload)
                if isinstance(payload, dict):
                    event["input_error"] = bool(payload.get("input_error"))
                await self._hold_until_safe()
                yield TriggerEvent(event)
                return
            if state != last_state:
                self.log.info("%s: Dask state %s", self.label, state)
                last_state = state

    async def _poll_once(self) -> tuple[str, Any]:
        """Ask the scheduler about the key: (state, result or error message)."""
        # A dead scheduler refuses at once but a client retries until its timeout: keep that within
        # the unreachable budget so the give-up comes when promised.
        connect_timeout = max(3.0, min(30.0, self.unreachable_timeout / 2))
        async with self._hook.async_connect(self.scheduler_address, timeout=connect_timeout) as dask:
            status = await dask.work_status(self.key)
            await dask.renew_lease()
            workers = await dask.worker_count() if status.state != "finished" else 1
        if status.state == "finished":
            return "finished", None
        if status.state == "foreign":
            return "foreign", (
                f"{status.error}: {self.label}'s work is not what is published under its key, so it was not "
                "adopted. Retry the task to submit the work anew, and check who else uses the cluster.")
        if status.state == "lost":
            return "lost", (
                f"the Dask scheduler at {self.scheduler_address} does not know {self.label} (key "
                f"{self.key}) and it left no result file {self.result_file}: the scheduler was "
                "restarted or the work was cancelled; retry the task to resubmit it.")
        if status.state == "error":
            message = f"{self.label} failed on the Dask worker: {status.error}"
            if tb := status.traceback.strip():
                message += "\nWorker traceback (last lines):\n" + "\n".join(tb.splitlines()[-6:])
            return "error", {"message": message, "input_error": status.input_error}
        if status.state == "cancelled":
            why = f": {status.error}" if status.error else "."
            return "cancelled", f"{self.label} was cancelled on the Dask cluster (key {self.key}){why}"
        if (message := self._check_workers(workers)) is not None:
            return "no_workers", message
        await self._sleep_until_result(self.poll_interval)
        return status.state, None

    async def _result_after_finish(self) -> Any:
        deadline = time.monotonic() + RESULT_FILE_GRACE_S
        while (result := read_result(self.result_file)) is None and time.monotonic() < deadline:
            await asyncio.sleep(RESULT_CHECK_S)
        return result

    async def _sleep_until_result(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking as soon as the work's result file appears.

        The work writes that file (atomically) before its Dask task returns, so a stat every
        RESULT_CHECK_S lets the event follow the end of the work within half a second rather than
        up to a whole poll interval later, without any extra round trip to the scheduler.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if os.path.exists(self.result_file):
                return
            await asyncio.sleep(min(RESULT_CHECK_S, left))

    def _check_workers(self, workers: int) -> str | None:
        """An error message once the cluster has had no worker for longer than no_workers_timeout."""
        if workers > 0 or self.no_workers_timeout <= 0:
            self._no_workers_since = None
            return None
        now = time.monotonic()
        if self._no_workers_since is None:
            self.log.warning("The Dask scheduler %s has no workers; %s waits for them up to %g s",
                             self.scheduler_address, self.label, self.no_workers_timeout)
            self._no_workers_since = now
        if now - self._no_workers_since <= self.no_workers_timeout:
            return None
        return (f"the Dask scheduler at {self.scheduler_address} has had no worker for more than "
                f"{self.no_workers_timeout:g} s while {self.label} waited (key {self.key}): the workers ended "
                "(a SLURM walltime or a kill) or never started (jobs pending, see `pclean cluster status`). "
                "Retry the task once the cluster has workers again, or clear the cluster_up task (with "
                "downstream) to start a new cluster; the wait is set by no_workers_timeout.")

    async def _withdraw(self) -> None:
        """Cancel the work past its deadline, if the scheduler answers in a few seconds (a retry's new
        try cancels it otherwise)."""
        async def cancel() -> None:
            async with self._hook.async_connect(self.scheduler_address, timeout=5) as dask:
                await dask.cancel_work(self.key, reason="its deadline passed (work_timeout)")

        try:
            # Bounded as a whole: a stopped scheduler takes the connection and never answers it.
            await asyncio.wait_for(_uncancellable_inside(cancel()), timeout=WITHDRAW_S)
        except Exception as exc:  # noqa: BLE001 - a hung or gone scheduler: the error event matters more
            self.log.warning("could not withdraw %s from %s (%s); a retry's new try cancels it", self.key,
                             self.scheduler_address, f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def on_kill(self) -> None:
        """A user killed or cleared the deferred task: stop its Dask work too."""
        self.log.info("Task killed by a user: cancelling Dask work %s", self.key)
        async with self._hook.async_connect(self.scheduler_address, timeout=20) as dask:
            await dask.cancel_work(self.key, reason="Airflow task killed or cleared by a user")

    def _success(self, result: Any) -> TriggerEvent:
        return TriggerEvent({**self._event("success", None), "result": result})

    def _event(self, status: str, message: str | None) -> dict[str, Any]:
        return {"status": status, "key": self.key, "message": message, "label": self.label}

    async def _hold_until_safe(self) -> None:
        if (wait := self.not_before - time.time()) > 0:
            await asyncio.sleep(wait)

    def _log_new_progress(self) -> None:
        for line in self._progress.new_lines():
            self.log.info("%s: %s", self.label, line)


async def _uncancellable_inside(coro: Any) -> Any:
    """Await ``coro`` so that a cancellation of the caller always propagates.

    distributed's client swallows a CancelledError that lands inside its connection handshake; a
    trigger that ignored the triggerer's cancel would outlive its task. The poll runs as its own
    task; when we are cancelled we stop waiting for it (it closes its client on its own).
    """
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise

