"""What every pclean operator that runs work on Dask shares: find the cluster, submit, defer, report.

The Airflow worker only validates input and talks to the scheduler; the work itself (even
planning, which reads the MeasurementSet) runs on a Dask worker. Work is submitted under a key
made of (DAG, run, task, map index, try number) and published under that name, so:

* a triggerer or Airflow-worker restart finds the running work again instead of starting it twice;
* a retry or a UI clear (a new try number) starts fresh work for this one task only;
* a finished try leaves a result file, so asking again for the same try costs nothing;
* a retry whose scheduler address is dead (the cluster host was killed, or ended its lease) does not
  reuse it: it restarts the cluster host from the spec the cluster-up task recorded, or fails at
  once naming the task to clear.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from pclean_provider.compute.dask_keys import work_key
from pclean_provider.compute.dask_work import (
    STATE_DIRNAME,
    ProgressTail,
    read_result,
    result_path,
)
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.tls import MissingClusterCertificate, PlaintextDaskRefused
from pclean_provider.hooks.dask import DaskConnection, PcleanDaskHook
from pclean_provider.links.dask import DASHBOARD_XCOM_KEY, DaskDashboardLink
from pclean_provider.operators.cluster import ADDRESS_FILE_XCOM_KEY, ClusterUpOperator
from pclean_provider.triggers import dask as dask_triggers
from pclean_provider.triggers.dask import DaskWorkTrigger

#: Pool name the shipped DAGs and docs use to cap concurrent heavy tasks. Create it with
#: ``airflow pools set pclean_heavy <slots> "pclean imaging" --include-deferred``: without
#: include-deferred a deferred task gives its slot back and the pool caps nothing.
HEAVY_POOL = "pclean_heavy"
# Airflow's deferral timeout is the work's bound plus this: the trigger, which says what happened and
# withdraws the work, reports first; Airflow's own timeout is only the backstop.
DEFERRAL_MARGIN_S = 300.0


class WorkDeadlinePassed(AirflowException):
    """The work outlived the operator's work_timeout (a retry may succeed: not bad input)."""


class PcleanDaskOperator(BaseOperator):
    """Base of the operators whose work runs on a Dask cluster.

    :param pclean_conn_id: connection of type ``pclean_dask`` describing the cluster.
    :param scheduler_address: address of a running scheduler (e.g. the XCom of ``ClusterUpOperator``);
        wins over the connection.
    :param address_file: address file of a cluster host; used when ``scheduler_address`` is empty.
    :param cluster_overrides: ClusterSpec fields that win over the connection's.
    :param deferrable: wait in the triggerer instead of holding a worker slot. Needs a cluster that
        outlives the task (an address or a cluster host); ``False`` waits in the worker and also
        allows a per-task local/SLURM cluster. Defaults to Airflow's ``[operators] default_deferrable``
        (False unless a site sets it), like Airflow's own operators; the shipped DAGs pass ``True``.
    :param poll_interval: seconds between the trigger's polls of the scheduler.
    :param state_dir: where result files of the Dask work are kept (shared filesystem); defaults to
        ``.pclean-airflow`` beside the products.
    :param resume_grace_seconds: the trigger reports no sooner than this after the deferral, so that
        quick work does not meet Airflow 3.3's race between a fast trigger and the executor's report
        of the deferring attempt (apache/airflow#66374, #72716), which fails the task.
    :param unreachable_timeout: seconds the deferred wait tolerates an unreachable scheduler.
    :param no_workers_timeout: seconds the deferred wait tolerates a scheduler without workers
        (0: for ever). The whole deferral is also bounded by ``execution_timeout`` when set.
    :param work_timeout: seconds the work may take once submitted (None: no bound of its own). Then the
        wait ends with an error naming the bound and ``work_timeout_hint`` (where the bound comes from, so
        the message says what to raise), the Dask work is withdrawn and the task fails (and retries): a
        coordinator hung on a lock, a dead mount or a stopped scheduler no longer holds the task, and the
        cluster's lease, for ever. Without ``execution_timeout`` the deferral gets this bound plus a margin.
    :param work_timeout_hint: what sets ``work_timeout``, for the message.
    """

    template_fields: Sequence[str] = ("scheduler_address", "address_file", "cluster_overrides", "state_dir",
                                      "work_timeout")
    operator_extra_links = (DaskDashboardLink(),)
    ui_color = "#d8e8f5"
    #: Short name of the work, part of its Dask key.
    work_kind = "work"

    def __init__(
        self,
        *,
        pclean_conn_id: str | None = PcleanDaskHook.default_conn_name,
        scheduler_address: str | None = None,
        address_file: str | None = None,
        cluster_overrides: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        poll_interval: float = 5.0,
        state_dir: str | None = None,
        resume_grace_seconds: float = 8.0,
        unreachable_timeout: float = 120.0,
        no_workers_timeout: float = 900.0,
        work_timeout: float | None = None,
        work_timeout_hint: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pclean_conn_id = pclean_conn_id
        self.scheduler_address = scheduler_address
        self.address_file = address_file
        self.cluster_overrides = cluster_overrides
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.state_dir = state_dir
        self.resume_grace_seconds = resume_grace_seconds
        self.unreachable_timeout = unreachable_timeout
        self.no_workers_timeout = no_workers_timeout
        self.work_timeout = work_timeout
        self.work_timeout_hint = work_timeout_hint
        self._running: tuple[str, str] | None = None  # (scheduler address, key) while waiting inline
        self._tls_directory: str | None = None  # the cluster's certificate folder, when it uses TLS

    # -- helpers for subclasses -------------------------------------------------------------------

    def hook(self, scheduler_address: str | None = None) -> PcleanDaskHook:
        return PcleanDaskHook(
            self.pclean_conn_id,
            scheduler_address=scheduler_address or self.scheduler_address or None,
            address_file=self.address_file or None,
            cluster_overrides=self.cluster_overrides or None,
            tls_directory=self._tls_directory,
        )

    def label(self) -> str:
        """How log lines and errors name this task's work."""
        return self.task_id

    def run_on_cluster(
        self,
        context: Any,
        func: Callable[..., dict],
        make_args: Callable[[Any], tuple],
        state_dir: str,
        progress_file: str | None = None,
    ) -> Any:
        """Run ``func(*make_args(dask))`` on the cluster under this try's key; defer or wait for it.

        ``make_args`` receives the hook's connection to the cluster so that arguments depending on the
        cluster (its worker count, for a plan) are taken from the cluster the work will really run on.
        """
        ti = context["ti"]
        key = work_key(self.work_kind, ti.dag_id, ti.run_id, ti.task_id, _map_index(ti), ti.try_number)
        result_file = result_path(state_dir, key)

        if (done := read_result(result_file)) is not None:
            self.log.info("%s already finished in this try (result %s); not running it again.",
                          self.label(), result_file)
            return self.on_result(context, done)

        live = self._live_scheduler_address(context)
        if (live or "").startswith("tls://") and not self._tls_directory:
            self._tls_directory = self._cluster_tls_directory(context)
        hook = self.hook(live)
        spec = hook.get_cluster_spec()
        if self.deferrable and spec.cluster_type != "address":
            raise AirflowException(
                f"{self.task_id}: deferrable=True needs a Dask cluster that outlives this task, but the "
                f"cluster is cluster_type={spec.cluster_type!r}. Pass scheduler_address= (e.g. the XCom "
                "of a ClusterUpOperator) or address_file=, give the connection a scheduler host, or set "
                "deferrable=False to start a cluster for this task alone.")

        try:
            hook.check_transport(spec)
        except (PlaintextDaskRefused, MissingClusterCertificate) as exc:
            # For good, no retries: a retry meets the same setting.
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc
        with hook.open_cluster(spec) as dask:
            if dask.dashboard_link:
                context["ti"].xcom_push(key=DASHBOARD_XCOM_KEY, value=dask.dashboard_link)
            address = dask.address
            dask.renew_lease()
            # The publication keeps the work wanted; its result is only ever read from the result file.
            self._find_or_submit(dask, key, func, make_args, result_file, progress_file)
            bound = float(self.work_timeout) if self.work_timeout else None
            deadline = time.time() + bound if bound else 0.0
            if not self.deferrable:
                self._running = (address, key)
                try:
                    result = self._wait_inline(dask, key, result_file, hook.progress_tail(progress_file), deadline)
                except WorkDeadlinePassed:
                    dask.cancel_work(key, reason="its deadline passed (work_timeout)")
                    raise
                finally:
                    self._running = None
                    dask.release_work(key)
                return self.on_result(context, result)

        tls_directory = hook.resolve_tls_directory()
        tls_kwargs = {"tls_directory": tls_directory} if tls_directory else {}
        self.defer(
            trigger=DaskWorkTrigger(
                scheduler_address=address,
                key=key,
                result_file=result_file,
                progress_file=progress_file,
                poll_interval=self.poll_interval,
                unreachable_timeout=self.unreachable_timeout,
                no_workers_timeout=self.no_workers_timeout,
                label=self.label(),
                not_before=time.time() + float(self.resume_grace_seconds),
                tls_directory=tls_directory,
                deadline=deadline,
                deadline_message=self.deadline_message(),
            ),
            method_name="execute_complete",
            kwargs={"scheduler_address": address, **tls_kwargs},
            timeout=self._deferral_timeout(bound),
        )

    def _deferral_timeout(self, bound: float | None) -> timedelta | None:
        """Airflow's own bound of the deferral: execution_timeout, else the work's bound plus a margin for
        the trigger to report first (it is Airflow's backstop, for a triggerer that cannot)."""
        if isinstance(self.execution_timeout, timedelta):
            return self.execution_timeout
        return timedelta(seconds=bound + DEFERRAL_MARGIN_S) if bound else None

    def deadline_message(self) -> str:
        """What the task's error says when the work outlives ``work_timeout``."""
        bound = float(self.work_timeout or 0)
        where = self.work_timeout_hint or "the operator's work_timeout"
        return (f"{self.label()} did not finish within {bound / 60:.0f} min ({where}); its Dask work was "
                "withdrawn. Its progress lines above show where it stopped: a coordinator that stopped "
                "logging waits on a lock, a dead mount or a stopped scheduler (see `pclean cluster status`); "
                f"one still cleaning needs a longer bound: raise {where} and clear the task.")

    # -- a cluster that went away ---------------------------------------------------------------------

    def _live_scheduler_address(self, context: Any) -> str | None:
        """The scheduler address this try should use: the given one while it answers, else the
        address of the cluster host found (or restarted) through its address file."""
        address = (self.scheduler_address or "").strip()
        if address and _answers(address):
            return address
        if not address and not self.address_file:
            return None  # the connection decides (a fixed address, or a cluster per task)
        address_file, up_tasks = self._cluster_address_file(context)
        clear_hint = (f"clear the {' / '.join(up_tasks)} task (with downstream) to start a new cluster"
                      if up_tasks else "start a cluster (`pclean cluster up`) and clear this task")
        if not address_file:
            raise AirflowFailException(
                f"{self.task_id}: the Dask scheduler at {address} does not answer and no cluster host "
                f"address file is known to restart it from; {clear_hint}.")

        try:
            found = PcleanDaskHook.recover_host(address_file)
        except ClusterError as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}; {clear_hint}.") from exc
        if address:
            self.log.warning("The Dask scheduler at %s is gone; using the cluster host behind %s at %s.",
                             address, address_file, found)
        return found

    def _cluster_tls_directory(self, context: Any) -> str | None:
        """The certificate folder of the cluster host this task's cluster-up task started."""
        address_file, _ = self._cluster_address_file(context)
        if not address_file or not os.path.exists(address_file):
            return None
        return PcleanDaskHook.host_tls_directory(address_file)

    def _cluster_address_file(self, context: Any) -> tuple[str | None, list[str]]:
        """This operator's address file, or the one an upstream cluster-up task recorded (XCom)."""
        try:
            upstream = self.get_flat_relatives(upstream=True)
        except Exception:  # an operator outside a DAG (tests, ad-hoc use) has no upstream
            upstream = []
        up_tasks = sorted(task.task_id for task in upstream if isinstance(task, ClusterUpOperator))
        if self.address_file:
            return self.address_file, up_tasks
        for task_id in up_tasks:
            recorded = context["ti"].xcom_pull(task_ids=task_id, key=ADDRESS_FILE_XCOM_KEY)
            if recorded:
                return str(recorded), up_tasks
        return None, up_tasks

    def _wait_inline(self, dask: DaskConnection, key: str, result_file: str, progress: ProgressTail,
                     deadline: float = 0.0) -> Any:
        """Wait in this worker for the work under ``key``, as the trigger does: its state from the
        scheduler, its result from its result file; nothing the cluster sends is unpickled here."""
        while True:
            if deadline and time.time() > deadline:
                self._log_progress(progress)
                raise WorkDeadlinePassed(self.deadline_message())
            status = dask.work_status(key)
            self._log_progress(progress)
            if status.state == "finished":
                result = _result_after_finish(result_file)
                if result is None:
                    raise AirflowException(
                        f"the Dask task {key} finished without writing {self.label()}'s result file {result_file}: "
                        "it was not this task's work (something else ran under its key on a shared scheduler) "
                        "or the file was removed; its result was not read. Retry the task to submit it anew.")
                return result
            if status.state == "error":
                message = f"{self.label()} failed on the Dask worker: {status.error}"
                if tb := status.traceback.strip():
                    message += "\nWorker traceback (last lines):\n" + "\n".join(tb.splitlines()[-6:])
                raise (AirflowFailException if status.input_error else AirflowException)(message)
            if status.state in ("cancelled", "lost", "foreign"):
                why = f": {status.error}" if status.error else ""
                raise AirflowException(f"{self.label()}'s Dask work {key} is {status.state}{why}; retry the task "
                                       "to submit it anew")
            _sleep_until(result_file, self.poll_interval)

    def _log_progress(self, progress: ProgressTail) -> None:
        for line in progress.new_lines():
            self.log.info("%s: %s", self.label(), line)

    def _find_or_submit(self, dask: DaskConnection, key: str, func: Callable[..., dict],
                        make_args: Callable[[DaskConnection], tuple], result_file: str,
                        progress_file: str | None) -> Any:
        if (future := dask.find_work(key)) is not None:
            # Same try seen again (an Airflow worker restarted after submitting): adopt, do not resubmit.
            self.log.info("Dask work %s is already on the cluster; waiting for it instead of resubmitting.", key)
            return future
        for stale in dask.cancel_older_tries(key):
            self.log.info("Cancelled Dask work of an earlier try: %s", stale)
        # Only here, never before the result file and the running work were looked for: a restarted
        # worker that executes a try again must not clear what that try made or is making.
        self.before_submit()
        if progress_file and os.path.exists(progress_file):
            os.unlink(progress_file)
        future = dask.submit_work(key, result_file, func, make_args(dask))
        self.log.info("Submitted %s to the Dask cluster as %s", self.label(), key)
        return future

    def execute_complete(self, context: Any, event: dict[str, Any], scheduler_address: str | None = None,
                         tls_directory: str | None = None) -> Any:
        """Resume after the trigger: fail with the worker's message, or hand the result on."""
        self._tls_directory = tls_directory or self._tls_directory
        if event.get("status") != "success":
            message = event.get("message") or f"{self.label()} failed on the Dask cluster"
            if event.get("input_error"):
                raise AirflowFailException(message)
            raise AirflowException(message)
        if scheduler_address:
            self._at_scheduler(scheduler_address, event["key"], "release")
        return self.on_result(context, event.get("result"))

    def before_submit(self) -> None:
        """Called once a new try's work is about to be submitted (none of this try is running or done,
        the earlier tries' work withdrawn): subclasses clear what earlier tries of their outputs left."""

    def on_result(self, context: Any, result: Any) -> Any:
        """What the task returns (its XCom) for the work's result; subclasses log a summary."""
        return result

    def on_kill(self) -> None:
        # Only reached while waiting inline (deferrable=False); a deferred task is cancelled by the
        # trigger's on_kill.
        if self._running:
            address, key = self._running
            self._at_scheduler(address, key, "cancel")

    def _at_scheduler(self, address: str, key: str, action: str) -> None:
        """Release or cancel the work by address, over a connection of its own; a failure only warns.

        The result is safe either way, and a scheduler that went away has forgotten the work anyway.
        """
        try:
            with self.hook().connect(address) as dask:
                if action == "cancel":
                    dask.cancel_work(key, reason="Airflow task killed")
                else:
                    dask.release_work(key)
        except Exception as exc:
            self.log.warning("Could not %s Dask work %s on %s: %s", action, key, address, exc)

    def default_state_dir(self, imagename: str) -> str:
        return self.state_dir or os.path.join(os.path.dirname(os.path.abspath(imagename)), STATE_DIRNAME)


def _answers(address: str, timeout: float = 5.0) -> bool:
    """Whether something listens at a scheduler address: a quick TCP probe, because a Dask client
    retries a refused connection until its whole timeout runs out."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname or not parts.port:
        return True  # not a host:port address; let the Dask client judge it
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def _sleep_until(result_file: str, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early once the work's result file appears."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not os.path.exists(result_file):
        time.sleep(min(0.2, left))


def _result_after_finish(result_file: str) -> Any:
    """The result file of finished work, allowing a shared filesystem a moment to show it (as the
    trigger does)."""
    deadline = time.monotonic() + dask_triggers.RESULT_FILE_GRACE_S
    while (result := read_result(result_file)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", -1)
    return -1 if index is None else int(index)
