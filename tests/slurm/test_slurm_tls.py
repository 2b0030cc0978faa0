"""TLS on SLURM clusters: the scheduler and the worker jobs speak it with a certificate made for the
cluster (or supplied by the site); a client without the certificate is refused."""

from __future__ import annotations

import gc
import os
import stat

import pytest
from distributed import Client

from pclean_provider.compute import open_cluster, slurm
from pclean_provider.compute import tls as cluster_tls
from tests.conftest import casa_available, require
from tests.slurm.conftest import live_jobs, slurm_spec

pytestmark = [pytest.mark.slurm, pytest.mark.casa]


@pytest.fixture(autouse=True)
def _needs(local_slurm):
    require("casatools", casa_available(), "run `make setup`")


def _refusal(address: str, **kwargs) -> str:
    """The error a Client gets at ``address``; fails the test if it connects."""
    try:
        Client(address, timeout=5, set_as_default=False, **kwargs).close()
    except (OSError, TimeoutError, TypeError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    else:
        pytest.fail(f"a client without the cluster's certificate connected to {address}")
    # The failed Client must be finalised now: its __del__, run later by the garbage collector
    # inside another Client's start, deadlocks on distributed's loop-runner lock.
    gc.collect()
    return message


def _plain_clients_are_refused(address: str, tmp_path) -> None:
    # Without a certificate over TLS, over plain TCP, and with another cluster's certificate.
    assert "TLS expects a `ssl_context`" in _refusal(address)
    assert "Connection reset" in _refusal(address.replace("tls://", "tcp://"))
    stranger = cluster_tls.security(cluster_tls.create_certificates(tmp_path / "stranger-tls"))
    assert "TLS certificate does not match" in _refusal(address, security=stranger)


def test_slurm_cluster_speaks_tls_by_default_and_refuses_plain_clients(tmp_path, job_name):
    spec = slurm_spec(tmp_path, nworkers=1, slurm_job_name=job_name)
    with open_cluster(spec) as cluster:
        address = cluster.address
        folder = tmp_path / "slurm-logs" / f"tls-{cluster.cluster_id}"
        assert address.startswith("tls://")
        assert cluster.spec.tls_directory == str(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / cluster_tls.KEY_NAME).stat().st_mode) == 0o600
        _plain_clients_are_refused(address, tmp_path)
        # The project's client: the cluster's certificate, and work runs on the SLURM worker.
        with Client(address, timeout=20, set_as_default=False, security=cluster_tls.security(folder)) as client:
            assert client.submit(lambda: os.environ.get("SLURM_JOB_NAME"), pure=False).result(timeout=60) == job_name
            # The worker's own subprocesses get the cluster's Dask security from the job's exports.
            env = client.run(lambda: dict(os.environ))
        (worker_env,) = env.values()
        assert worker_env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert worker_env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == str(folder / cluster_tls.CERT_NAME)
    assert not folder.exists()  # a certificate made for one run goes with its cluster
    assert live_jobs(job_name) == []


def test_site_certificate_is_used_and_kept(tmp_path, job_name):
    site = cluster_tls.create_certificates(tmp_path / "site-tls")
    spec = slurm_spec(tmp_path, nworkers=1, slurm_job_name=job_name, tls=True, tls_directory=str(site))
    script = slurm.job_script(spec, "x")
    assert f"--tls-ca-file {site / cluster_tls.CERT_NAME}" in script and "cannot read the cluster's TLS" in script
    with open_cluster(spec) as cluster:
        assert cluster.address.startswith("tls://")
        assert "Connection reset" in _refusal(cluster.address.replace("tls://", "tcp://"))
        with Client(cluster.address, timeout=20, set_as_default=False,
                    security=cluster_tls.security(site)) as client:
            assert client.submit(lambda x: x * 2, 21).result(timeout=60) == 42
    assert (site / cluster_tls.CERT_NAME).is_file()  # the site's files are the site's


def test_tls_false_keeps_plain_tcp(tmp_path, job_name):
    with open_cluster(slurm_spec(tmp_path, nworkers=1, slurm_job_name=job_name, tls=False)) as cluster:
        assert cluster.address.startswith("tcp://")
        assert not list((tmp_path / "slurm-logs").glob("tls-*"))
