"""A Dask cluster for the length of a DAG run: Airflow setup and teardown tasks around the imaging.

    up = ClusterUpOperator(task_id="cluster_up", address_file="/work/night/cluster.address")
    down = ClusterDownOperator(task_id="cluster_down", address_file="/work/night/cluster.address")
    up >> imaging >> down.as_teardown(setups=up)

The cluster lives in a host process of its own (``pclean_provider.compute.host``), so it outlives
the task that started it and the deferred tasks can reach it; as a teardown, ``cluster_down`` runs
even when imaging failed, and stopping a cluster that is already gone is not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from pclean_provider.hooks.dask import PcleanDaskHook
from pclean_provider.links.dask import DASHBOARD_XCOM_KEY, DaskDashboardLink
from pclean_provider.pipeline.staging_leftovers import sweep_run_folder

#: XCom key under which the cluster-up task records its address file: a later task whose scheduler
#: died finds (or restarts) the cluster host through it (``PcleanDaskOperator``).
ADDRESS_FILE_XCOM_KEY = "pclean_address_file"


class ClusterUpOperator(BaseOperator):
    """Start a cluster host for the connection's cluster (local or SLURM); return its scheduler address.

    :param address_file: where the host writes its address (shared filesystem); later tasks and
        ``ClusterDownOperator`` find the cluster through it.
    :param pclean_conn_id: ``pclean_dask`` connection with the cluster type and SLURM knobs.
    :param cluster_overrides: ClusterSpec fields that win over the connection's (e.g. ``nworkers``).
    """

    template_fields: Sequence[str] = ("address_file", "cluster_overrides")
    operator_extra_links = (DaskDashboardLink(),)
    ui_color = "#c9e7c9"

    def __init__(self, *, address_file: str, pclean_conn_id: str | None = PcleanDaskHook.default_conn_name,
                 cluster_overrides: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.address_file = address_file
        self.pclean_conn_id = pclean_conn_id
        self.cluster_overrides = cluster_overrides

    def execute(self, context: Any) -> str:
        hook = PcleanDaskHook(self.pclean_conn_id, cluster_overrides=self.cluster_overrides)
        spec = hook.get_cluster_spec()
        if spec.cluster_type == "address":
            # Nothing to host: the connection already names a running scheduler.
            self.log.info("Connection names a running scheduler %s; no cluster host started.",
                          spec.scheduler_address)
            return str(spec.scheduler_address)
        self.log.info("Starting a %s Dask cluster host (address file %s)", spec.cluster_type, self.address_file)
        # start_host reuses a host already running for this file (a retry of this task).
        address = hook.start_host(spec, self.address_file)
        context["ti"].xcom_push(key=ADDRESS_FILE_XCOM_KEY, value=str(self.address_file))
        status = hook.host_status(self.address_file)
        if status.dashboard_link:
            context["ti"].xcom_push(key=DASHBOARD_XCOM_KEY, value=status.dashboard_link)
        self.log.info("Dask scheduler at %s with %s workers (dashboard %s)", address, status.workers,
                      status.dashboard_link or "-")
        return address


class ClusterDownOperator(BaseOperator):
    """Stop the cluster host behind ``address_file``; a host that is already gone is fine.

    Use it as a teardown (``down.as_teardown(setups=up)``) so it runs whatever happened upstream.

    :param run_folder: a folder of image products (the nightly DAGs' run folder) whose staging leftovers
        are removed once the cluster is down, when no writer of the run is left: those of images named
        ``<...>.<image_suffix>`` (pipeline.staging_leftovers) and, with ``sweep_subcubes``, the exact
        cubes' ``.subcubes`` folders. Never for a fan-out run, whose sub-cubes a cleared batch reuses.
    """

    template_fields: Sequence[str] = ("address_file", "run_folder")
    ui_color = "#e7c9c9"

    def __init__(self, *, address_file: str, trigger_rule: str = "all_done", run_folder: str | None = None,
                 image_suffix: str = "cube", sweep_subcubes: bool = False, **kwargs: Any) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.address_file = address_file
        self.run_folder = run_folder
        self.image_suffix = image_suffix
        self.sweep_subcubes = sweep_subcubes

    def execute(self, context: Any) -> bool:
        before = PcleanDaskHook.stop_host(self.address_file)
        if before.state == "stopped":
            self.log.info("No cluster host behind %s: nothing to stop.", self.address_file)
        else:
            self.log.info("Cluster host behind %s (was %s, pid %s) stopped.", self.address_file, before.state,
                          before.host_pid)
        if self.run_folder:
            for path in sweep_run_folder(self.run_folder, self.image_suffix, subcubes=self.sweep_subcubes):
                self.log.info("Removed %s, left by a writer that did not finish", path)
        return before.state != "stopped"
