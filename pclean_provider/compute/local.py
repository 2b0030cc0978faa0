"""Dask workers as processes on this machine (a LocalCluster), with the CASA runtime set up.

The workers run code on MeasurementSets that arrive from outside, so they start with the stripped
environment of ``child_env`` (no Airflow database URL, Fernet key, JWT secret, connections,
credential-named variables), not the whole environment of the process that starts them.
"""

from __future__ import annotations

import os
from typing import ClassVar

from pclean_provider.child_env import child_env
from pclean_provider.compute import tls as cluster_tls
from pclean_provider.compute.backend import ClusterBackend, ClusterHandle
from pclean_provider.compute.worker_setup import NANNY_ENV_DROPPED, nanny_config, worker_environment


class LocalBackend(ClusterBackend):
    cluster_type: ClassVar[str] = "local"

    def start(self, cluster_id: str) -> ClusterHandle:
        import dask

        # A worker process inherits os.environ as it is when its nanny spawns it (Nanny(env=...) only
        # adds): hide, while the workers spawn, this process's secrets and the variables a plain Dask
        # nanny started earlier in this process (another library, a test) leaves behind.
        kept = child_env()
        leaked = {name: os.environ.pop(name) for name in list(os.environ)
                  if name in NANNY_ENV_DROPPED or name not in kept}
        try:
            with dask.config.set(nanny_config()):
                cluster = self._local_cluster(cluster_id)
        finally:
            os.environ.update(leaked)
        return ClusterHandle(spec=self.spec, client=self.connect(cluster), cluster=cluster, cluster_id=cluster_id,
                             backend=self)

    def _local_cluster(self, cluster_id: str):
        from distributed import LocalCluster

        spec = self.spec
        bind = self.scheduler_bind("127.0.0.1")
        # The dashboards (scheduler's and workers') listen where the scheduler does, not everywhere.
        dashboard_host = bind.get("host", "")
        env = worker_environment()
        tls: dict = {}
        if spec.tls_directory:
            tls = {"security": cluster_tls.security(spec.tls_directory), "protocol": "tls://"}
            # A worker's own subprocesses (the cube coordinator) connect with the same certificate.
            env.update(cluster_tls.environment(spec.tls_directory))
        return LocalCluster(
            name=f"pclean-{cluster_id}",
            n_workers=spec.resolved_nworkers(),
            threads_per_worker=spec.threads_per_worker,
            processes=True,
            memory_limit=spec.memory_limit,
            local_directory=spec.local_directory,
            # A random port: several clusters (tests, DAG runs) share one machine.
            dashboard_address=f"{dashboard_host}:0",
            worker_dashboard_address=f"{dashboard_host}:0",
            env=env,
            **tls,
            # Loopback unless the spec names an interface: the workers are on this machine, and a
            # scheduler on every interface would take work from anyone on the network.
            **bind,
        )
