"""The one protocol for running a task's work on Dask so that a later process can find it again.

Each piece of work carries a deterministic Dask key made of (kind, DAG, run, task, map index, try
number; ``compute.dask_keys.work_key``) and is published under that key, so that a trigger started
later in another process (or after a triggerer restart) finds the same work by name instead of
starting it again. The work also writes its result to a small JSON file on the shared filesystem,
so that a finished result survives even a scheduler restart. The key format and the result-file
format are what restart-safety rests on: changing either strands work that is already running.

Nothing the cluster holds is unpickled on the Airflow side: a name published on a shared
scheduler may be anyone's, and unpickling a forged payload (or the result of a task someone else
submitted under a predictable key) would run their code in the Airflow worker or the triggerer.
So a publication is judged on the scheduler, by the keys it holds, never fetched (``get_dataset``);
adopted work is followed through a Future made here from its key; the result is read from the JSON
result file the work writes, never from the Dask result; and an error comes back as the
scheduler's text and the class lineage the scheduler works out. Work finished without its result
file is an error ("not this task's work"), and a publication under a task's key that is not a Dask
key of that name (a plain object someone published) is withdrawn and the work submitted anew.

Used by the Airflow hook with a synchronous client (operators) and an asynchronous one (triggers);
no Airflow import here, and ``distributed`` is only touched through the client handed in (and
imported where a Future is made from a key).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pclean_provider.atomic_files import write_json
from pclean_provider.compute.dask_keys import prefix_of_key, try_of_key
from pclean_provider.errors import error_lineage, is_input_error, unpickled_error

STATE_DIRNAME = ".pclean-airflow"

log = logging.getLogger(__name__)


# -- result files ---------------------------------------------------------------------------------


def result_path(state_dir: str, key: str) -> str:
    return os.path.join(state_dir, f"{key}.result.json")


def read_result(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def write_json_atomic(path: str, data: Any) -> None:
    """Readers (the trigger, a retried task) never see half a result file."""
    write_json(path, data)


def run_recorded(result_file: str, func: Callable[..., dict], *args: Any) -> dict:
    """Run ``func(*args)`` on a worker and keep its (small, JSON) result on the shared filesystem.

    The writer half of the result-file format, kept beside its reader so that the two cannot drift.
    """
    result = func(*args)
    write_json_atomic(result_file, result)
    return result


# -- progress files -------------------------------------------------------------------------------


class ProgressTail:
    """Reads the lines a piece of work appended to its JSON-lines progress file since the last call.

    :param format_line: turns one raw line into the text to log (the engine knows its records).
    """

    def __init__(self, path: str | None, format_line: Callable[[str], str] | None = None) -> None:
        self.path = path
        self.format_line = format_line or str.strip
        self.offset = 0
        self.inode: int | None = None

    def new_lines(self) -> list[str]:
        if not self.path:
            return []
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            # The writer replaced the file (a new run starts it afresh by rename): read from the top.
            self.inode, self.offset = stat.st_ino, 0
        lines = []
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self.offset)
            while True:
                line = handle.readline()
                # A line without its newline is still being written: read it next time.
                if not line or not line.endswith("\n"):
                    break
                self.offset = handle.tell()
                lines.append(self.format_line(line))
        return lines


# -- what the scheduler knows -------------------------------------------------------------------------


# Where cancel_with_reason keeps, per key, why work was cancelled (scheduler metadata path).
CANCEL_REASONS = ("pclean", "cancel_reasons")


def scheduler_task_state(key: str, dask_scheduler: Any = None) -> dict[str, Any]:
    """Run on the scheduler: the state of one key and, if it failed, the worker's error.

    Asked of the scheduler directly because a fresh client's Future only learns its state some
    time after it is created, which would make a single quick poll unreliable. The error's class is
    judged here, where unpickling it is harmless, and handed back as its lineage (plain names), so
    the caller (an Airflow triggerer) never imports the module that defines it.
    """
    task = dask_scheduler.tasks.get(key)
    reason = _cancel_reasons(dask_scheduler).get(key)
    if task is None:
        return {"state": "forgotten", "cancel_reason": reason}
    out: dict[str, Any] = {"state": task.state, "cancel_reason": reason}
    if task.state == "erred":
        blame = task.exception_blame or task
        error = _exception_on_scheduler(blame.exception)
        out["error"] = _error_text(error, blame.exception_text or repr(blame.exception))
        out["traceback"] = blame.traceback_text or ""
        out["error_lineage"] = error_lineage(error) if error is not None else None
    return out


def _error_text(error: BaseException | None, sent: str) -> str:
    """What the task's error says: ``Class: message``, in the worker's own words.

    What Dask sent (``sent``, its ``exception_text``) is the error's repr: wrapped in
    ``ImagingPartError("...")`` and escaped, which rewords a message quoting another program (a
    part that CASA ended quotes CASA's own lines; a repr turns their quotes into \\' as soon as the
    text holds both kinds). So the text is the error's own, when the scheduler could unpickle it
    and it is the error whose repr was sent (not Dask's stand-in for one it could not pickle);
    otherwise what Dask sent, as it is.
    """
    if error is None or not sent.startswith(f"{type(error).__name__}("):
        return sent
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def published_keys(name: str, dask_scheduler: Any = None) -> list[str] | None:
    """Run on the scheduler: the Dask keys a published name holds (None: nothing published), read
    without unpickling what was published."""
    extension = dask_scheduler.extensions.get("publish")
    dataset = extension.datasets.get(name) if extension is not None else None
    if dataset is None:
        return None
    return [str(key) for key in dataset.get("keys") or []]


def _cancel_reasons(dask_scheduler: Any) -> dict[str, str]:
    # Kept in the scheduler's own metadata store, so that it outlives the cancelled keys.
    return dask_scheduler.get_metadata(keys=list(CANCEL_REASONS), default=None) or {}


def cancel_with_reason(dask_scheduler: Any, keys: list[str], client: str, message: str) -> None:
    """Run on the scheduler: cancel `keys`, remembering why, so that whoever later asks for their
    state (an Airflow trigger polling its work, ``scheduler_task_state``) gets the reason, not a
    bare "cancelled"."""
    reasons = {**_cancel_reasons(dask_scheduler), **dict.fromkeys(keys, message)}
    dask_scheduler.set_metadata(keys=list(CANCEL_REASONS), value=reasons)
    dask_scheduler.stimulus_cancel(keys, client, force=True, reason="pclean", msg=message)


def _exception_on_scheduler(exception: Any) -> BaseException | None:
    """A failed task's exception, unpickled from what the scheduler keeps, or None if unreadable.

    The scheduler keeps the worker's pickled exception: as a ``Serialized`` (header and frames)
    when the worker is another process, wrapped in a ``Serialize`` when it is in-process.
    """
    if hasattr(exception, "header"):
        from distributed.protocol import deserialize

        try:
            data = deserialize(exception.header, exception.frames)
        except Exception:
            return None
    else:
        data = getattr(exception, "data", None)
    return unpickled_error(data) if isinstance(data, bytes) else None


def cluster_resources(client: Any) -> tuple[int, int | None]:
    """Worker count and the smallest per-worker memory limit (None when unlimited) of a cluster.

    Synchronous client only: an asynchronous one answers ``scheduler_info`` from a stale cache.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _accepts_n_workers(client) \
        else client.scheduler_info().get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    positive = [m for m in limits if m > 0]
    return max(len(workers), 1), (min(positive) if positive else None)


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


@dataclass(frozen=True)
class WorkStatus:
    """One look at published work.

    ``state`` is ``finished`` (the work's result is in its result file, read by the caller),
    ``error`` (``error`` and ``traceback`` from the worker; ``input_error`` when the error means the
    input is wrong, so retrying cannot help),
    ``cancelled`` (published but released: only a forced cancel does that),
    ``lost`` (not published: the scheduler restarted or the work was withdrawn), ``foreign`` (the
    name is published but holds no Dask task of that key: someone else's publication, never read),
    or the scheduler's own state of work still under way (``waiting``, ``processing``, ...).
    """

    state: str
    result: Any = None
    error: str | None = None
    input_error: bool = False
    traceback: str = ""


# -- operations on the published work ------------------------------------------------------------------


class PublishedWork:
    """The published work on one scheduler, through a synchronous or an asynchronous client.

    Every operation is written once, as a coroutine; ``Client.sync`` runs it on the client's event
    loop and returns its value for a synchronous client, or hands back the awaitable for an
    asynchronous one (the convention of distributed's own client methods). So an operator's
    ``PublishedWork(client).cancel(key, reason)`` returns a bool and a trigger's is awaited.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def find(self, key: str) -> Any:
        """The Future of the work published under ``key`` (adopt it), or None. A publication under
        that name that holds no Dask task of that key is someone else's: withdrawn, never read."""
        return self.client.sync(self._find, key)

    def cancel_older_tries(self, key: str) -> Any:
        """Cancel the work of earlier tries of the same task; the list of keys cancelled."""
        return self.client.sync(self._cancel_older_tries, key)

    def submit(self, key: str, result_file: str, func: Callable[..., dict], *args: Any) -> Any:
        """Run ``func(*args)`` under ``key``, recording its result; published so others find it."""
        return self.client.sync(self._submit, key, result_file, func, args)

    def cancel(self, key: str, reason: str) -> Any:
        """Cancel the work published under ``key``; False when nothing was there."""
        return self.client.sync(self._cancel, key, reason)

    def release(self, key: str) -> Any:
        """Forget finished work (its result is in the result file); False when nothing was there."""
        return self.client.sync(self._release, key)

    def status(self, key: str) -> Any:
        """A ``WorkStatus`` of the work published under ``key``."""
        return self.client.sync(self._status, key)

    # The coroutines run on the client's loop, where its methods return awaitables.

    async def _names(self) -> set[str]:
        return set(await self.client.list_datasets())

    async def _published_keys(self, key: str) -> list[str] | None:
        if key not in await self._names():
            return None
        return await self.client.run_on_scheduler(published_keys, name=key)

    async def _find(self, key: str) -> Any:
        keys = await self._published_keys(key)
        if keys is None:
            return None
        if keys != [key]:
            log.warning("the Dask name %s is published by someone else (it holds %s, not the task %s): "
                        "withdrawn unread, the work is submitted anew", key, keys or "no task", key)
            await self.client.unpublish_dataset(key)
            return None
        from distributed import Future

        # Made here from the key: the Future a get_dataset would unpickle is whatever was published.
        return Future(key, self.client)

    async def _cancel_older_tries(self, key: str) -> list[str]:
        prefix, this_try = prefix_of_key(key), try_of_key(key) or 0
        # An older try of this task still running would write the same products as this one.
        stale = sorted(n for n in await self._names()
                       if isinstance(n, str) and n.startswith(prefix) and (try_of_key(n) or 0) < this_try)
        for name in stale:
            await self._cancel(name, reason=f"superseded by {key}")
        return stale

    async def _submit(self, key: str, result_file: str, func: Callable[..., dict], args: tuple) -> Any:
        future = self.client.submit(run_recorded, result_file, func, *args, key=key, pure=False)
        await self.client.publish_dataset(future, name=key)
        return future

    async def _cancel(self, key: str, reason: str) -> bool:
        keys = await self._published_keys(key)
        if keys is None:
            return False
        # On the scheduler, by key (nothing published is fetched), forced: the publication itself
        # holds the key; the reason is kept for whoever asks for the key's state. Only this key: a
        # publication someone else put under the name may hold other people's tasks.
        if key in keys:
            await self.client.run_on_scheduler(cancel_with_reason, keys=[key], client=self.client.id,
                                               message=reason)
        await self.client.unpublish_dataset(key)
        return True

    async def _release(self, key: str) -> bool:
        if key not in await self._names():
            return False
        await self.client.unpublish_dataset(key)
        return True

    async def _status(self, key: str) -> WorkStatus:
        keys = await self._published_keys(key)
        if keys is None:
            return WorkStatus("lost")
        if keys != [key]:
            return WorkStatus("foreign", error=f"the Dask name {key} is published by someone else (it holds "
                              f"{keys or 'no task'}); it was not read")
        info = await self.client.run_on_scheduler(scheduler_task_state, key=key)
        state = info["state"]
        if state == "memory":
            # The result is the work's result file, which the caller reads: never the Dask result.
            return WorkStatus("finished")
        if state == "erred":
            return WorkStatus("error", error=info.get("error"), input_error=is_input_error(info.get("error_lineage")),
                              traceback=info.get("traceback") or "")
        if state in ("released", "forgotten"):
            return WorkStatus("cancelled", error=info.get("cancel_reason"))
        return WorkStatus(state)
