"""A cluster host left alone ends itself after its lease; its files are private; it listens on loopback.

Real host processes with a real LocalCluster (one worker) on this machine.
"""

from __future__ import annotations

import json
import stat
import time

import psutil
import pytest
from distributed import Client

from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.host import host_status, recover_host, start_host, stop_host
from pclean_provider.config.cluster import ClusterSpec
from tests.conftest import casa_available, require
from tests.unit.host_helpers import session_members

pytestmark = pytest.mark.casa


@pytest.fixture(autouse=True)
def _casa():
    require("casatools", casa_available(), "run `make setup`")


def _listening(pids: list[int]) -> set[str]:
    hosts = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                hosts.add(conn.laddr.ip)
    return hosts


def _renew_for(address: str, seconds: float, tmp_path) -> None:
    """Act as the Airflow side: run one piece of published work as the operators do, then renew the
    lease the way the trigger does, with a fresh client each time."""
    from pclean_provider.compute.dask_work import PublishedWork
    from pclean_provider.compute.lease import renew_lease

    with Client(address, timeout=10, set_as_default=False) as client:
        work = PublishedWork(client)
        # `dict`: work the worker can unpickle without this test module (it returns {}).
        work.submit("pclean-lease-k-try1", str(tmp_path / "result.json"), dict).result(timeout=60)
        work.release("pclean-lease-k-try1")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with Client(address, timeout=10, set_as_default=False) as client:
            renew_lease(client)
            # Holds the connection for a moment like a poll does; a short-lived client is not a lease.
            client.nthreads()


def test_abandoned_host_stops_itself_and_its_workers_after_its_lease(tmp_path):
    afile = tmp_path / "run" / "cluster.json"
    spec = ClusterSpec(nworkers=1, host_idle_timeout=4, tls=False)
    address = start_host(spec, afile)
    info = json.loads(afile.read_text())
    pid = info["host_pid"]
    try:
        # Private files: whoever reads the address can submit work to the cluster.
        for path in (afile, afile.with_name(afile.name + ".spec.json"), afile.with_name(afile.name + ".log")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # Loopback only: the scheduler and its dashboard (the host process), and the worker. (The
        # worker process also holds casatools' own gRPC listener, which is CASA's, not Dask's.)
        assert address.startswith("tcp://127.0.0.1:")
        assert len(session_members(pid)) >= 2, "the host and its worker process"
        assert _listening([pid]) == {"127.0.0.1"}
        assert info["dashboard_link"].startswith("http://127.0.0.1:")
        with Client(address, timeout=10, set_as_default=False) as client:
            assert [w.startswith("tcp://127.0.0.1:") for w in client.nthreads()] == [True]

        # Renewed for twice its lease, the host stays. The work it ran was published: the name the
        # scheduler keeps for it after its release is no sign of life.
        _renew_for(address, 8, tmp_path)
        assert host_status(afile).state == "running"

        # Left alone (nobody renews, nobody stops it), it ends itself and its worker.
        psutil.Process(pid).wait(timeout=60)
        deadline = time.monotonic() + 15
        while session_members(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session_members(pid)
        assert host_status(afile).state == "stopped"
        assert "nobody renewed its lease" in afile.with_name(afile.name + ".log").read_text()

        # The spec stays, so a retried task can bring the cluster back.
        again = recover_host(afile)
        assert again != address and host_status(afile).workers == 1
    finally:
        stop_host(afile)
    # Stopped on purpose: no restart from a spec that is no longer there.
    with pytest.raises(ClusterError, match="stopped on purpose"):
        recover_host(afile)


def test_tls_cluster_refuses_a_client_without_its_certificate(tmp_path):
    from distributed import Security

    from pclean_provider.compute.tls import security

    def subprocess_client_count(address):
        """On a worker: a child process opening a default Client, as the cube coordinator does."""
        import subprocess
        import sys

        code = ("import sys; from distributed import Client\n"
                "with Client(sys.argv[1], timeout=20) as c: print(len(c.nthreads()))")
        return subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                              check=True).stdout.strip()

    afile = tmp_path / "cluster.json"
    # TLS is the default for a local cluster host.
    address = start_host(ClusterSpec(nworkers=1, host_idle_timeout=0), afile)
    tls_dir = afile.with_name(afile.name + ".tls")
    try:
        assert address.startswith("tls://127.0.0.1:")
        assert json.loads(afile.read_text())["tls_directory"] == str(tls_dir)
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tls_dir.iterdir()} == {
            "cluster.pem": 0o600, "cluster.key": 0o600}
        # A plain client without TLS, or one with another cluster's certificate: both refused.
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout=5, set_as_default=False).close()
        with pytest.raises((OSError, TimeoutError)):
            Client(address, timeout=5, set_as_default=False, security=Security.temporary()).close()
        # With the cluster's certificate: the work runs, and a worker's own subprocess connects too.
        with Client(address, timeout=20, set_as_default=False, security=security(tls_dir)) as client:
            assert client.submit(sum, [1, 2], pure=False).result() == 3
            assert client.submit(subprocess_client_count, address, pure=False).result() == "1"
        assert host_status(afile).workers == 1
    finally:
        stop_host(afile)
    assert not tls_dir.exists()
