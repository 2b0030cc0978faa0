"""Nobody who merely reaches a Dask port runs code here: real schedulers, real clients.

- a plaintext (tcp://) scheduler address is refused unless the administrator allows it, and then
  every connection is logged;
- a TLS scheduler refuses a client that speaks TLS but presents no certificate of the cluster's
  authority (mutual TLS), and a tls:// address without a certificate folder is refused up front;
- a name published on the scheduler by someone else under a task's key is never unpickled: not
  when it is looked for, not when its state is asked, not when it is cancelled, and a task someone
  else ran under the key is reported finished without a result, never with theirs;
- the workers of a local cluster do not see the starting process's secrets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pclean_provider.compute import tls
from pclean_provider.compute.address import AddressBackend
from pclean_provider.compute.dask_work import PublishedWork
from pclean_provider.config.cluster import ClusterSpec


def _plain_cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                        host="127.0.0.1", dashboard_address=None)


# -- plaintext ------------------------------------------------------------------------------------


def test_a_plaintext_scheduler_is_refused_unless_the_site_allows_it(monkeypatch, caplog):
    monkeypatch.delenv(tls.ALLOW_PLAINTEXT_ENV, raising=False)
    with _plain_cluster() as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        spec = ClusterSpec(scheduler_address=address, worker_start_timeout=10)
        with pytest.raises(tls.PlaintextDaskRefused) as refused:
            AddressBackend(spec).start("c")
        text = str(refused.value)
        # It names the setting and the fix.
        assert "allow_plaintext_dask" in text and tls.ALLOW_PLAINTEXT_ENV in text
        assert "tls://" in text and "certificate folder" in text
        # No address without a scheme slips through as "not tcp".
        with pytest.raises(tls.PlaintextDaskRefused):
            tls.client_security(address.removeprefix("tcp://"), None)
        # A value that is not a yes is a no.
        monkeypatch.setenv(tls.ALLOW_PLAINTEXT_ENV, "False")
        with pytest.raises(tls.PlaintextDaskRefused):
            AddressBackend(spec).start("c")

        # Allowed by the administrator: it connects, and says so every time.
        monkeypatch.setenv(tls.ALLOW_PLAINTEXT_ENV, "1")
        caplog.set_level("WARNING", logger="pclean_provider.compute.tls")
        for _ in range(2):
            handle = AddressBackend(spec).start("c")
            try:
                assert len(handle.client.nthreads()) == 1
            finally:
                handle.close()
        warnings = [r for r in caplog.records if "plaintext" in r.getMessage() and address in r.getMessage()]
        assert len(warnings) == 2, "each plaintext connection is logged"


def test_allow_plaintext_is_an_administrators_setting_only():
    from pclean_provider.airflow_config import OPTIONS
    from pclean_provider.config.cluster import CONF_SETTABLE_FIELDS

    (option,) = [o for o in OPTIONS if o.name == "allow_plaintext_dask"]
    assert option.env == tls.ALLOW_PLAINTEXT_ENV and option.type == "boolean"
    # Not a cluster field: no connection, template or run conf can carry it.
    assert "allow_plaintext_dask" not in ClusterSpec.model_fields
    assert not [f for f in CONF_SETTABLE_FIELDS if "tls" in f or "plaintext" in f]


# -- mutual TLS -----------------------------------------------------------------------------------


@pytest.fixture
def tls_cluster(tmp_path):
    from distributed import LocalCluster

    folder = tls.create_certificates(tmp_path / "cluster.tls")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      dashboard_address=None, security=tls.security(folder)) as cluster:
        yield cluster.scheduler_address, folder


def _ask_identity(address: str, context) -> dict:
    """A real Dask comm over TLS with the given SSL context: asks the scheduler who it is."""
    import asyncio

    from distributed.comm import connect

    async def ask():
        comm = await connect(address, timeout=5, ssl_context=context, require_encryption=True)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    return asyncio.run(asyncio.wait_for(ask(), 15))


def test_a_tls_client_without_a_client_certificate_is_refused(tls_cluster):
    import ssl

    from distributed import Client, Security

    address, folder = tls_cluster
    cert, key = str(Path(folder) / tls.CERT_NAME), str(Path(folder) / tls.KEY_NAME)

    def context(with_certificate: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert)
        ctx.check_hostname = False
        if with_certificate:
            ctx.load_cert_chain(cert, key)
        return ctx

    # The check itself works: with the cluster's certificate the scheduler answers.
    assert _ask_identity(address, context(True))["type"] == "Scheduler"
    # Speaks TLS and trusts the cluster's authority, but presents no certificate of its own: refused.
    with pytest.raises((OSError, ssl.SSLError, TimeoutError)):
        _ask_identity(address, context(False))
    # A certificate of another authority (another cluster's) is refused too.
    with pytest.raises((OSError, TimeoutError, ssl.SSLError)):
        Client(address, timeout=5, set_as_default=False, security=Security.temporary()).close()
    # With the cluster's folder, through the one gate every address client uses: it works.
    with Client(address, timeout=20, set_as_default=False, **tls.client_security(address, folder)) as client:
        assert client.submit(sum, [1, 2], pure=False).result(timeout=20) == 3


def test_a_tls_address_without_a_certificate_folder_is_refused_before_connecting(tls_cluster):
    address, _ = tls_cluster
    with pytest.raises(tls.MissingClusterCertificate, match="tls_directory"):
        AddressBackend(ClusterSpec(scheduler_address=address, worker_start_timeout=5)).start("c")


def test_an_address_cluster_uses_the_given_certificate_folder(tls_cluster):
    address, folder = tls_cluster
    spec = ClusterSpec(scheduler_address=address, tls_directory=str(folder), worker_start_timeout=10)
    handle = AddressBackend(spec).start("c")
    try:
        assert len(handle.client.nthreads()) == 1
    finally:
        handle.close()


# -- forged publications ----------------------------------------------------------------------------


MARKS = "PCLEAN_TEST_UNPICKLED_MARKS"


class Payload:
    """Unpickling it leaves a file named after the process that did it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self):
        code = (f"import os; open(os.path.join({self.folder!r}, 'unpickled-%d' % os.getpid()), 'w').close()")
        return (exec, (code,))


def _forged_result(folder):
    """A task someone else runs under a task's key: its result is the payload."""
    return Payload(folder)


@pytest.fixture
def plain_scheduler(monkeypatch):
    # The forger is a client like any other: plaintext here so that it needs nothing (the worst case).
    monkeypatch.setenv(tls.ALLOW_PLAINTEXT_ENV, "1")
    with _plain_cluster() as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def forger_and_ours(plain_scheduler, tmp_path):
    """Two real clients of one scheduler, a folder the forged payload marks when it is unpickled, and
    the predictable key of a task's work."""
    from distributed import Client

    marks = tmp_path / "marks"
    marks.mkdir()
    with Client(plain_scheduler, set_as_default=False) as forger, \
            Client(plain_scheduler, set_as_default=False) as ours:
        yield forger, ours, marks, "pclean-echo-d-r-t-m0-try1"


def test_a_forged_publication_under_a_tasks_key_is_never_unpickled(forger_and_ours, tmp_path):
    forger, ours, marks, key = forger_and_ours
    forger.publish_dataset(Payload(str(marks)), name=key)
    work = PublishedWork(ours)
    assert work.status(key).state == "foreign"
    assert work.find(key) is None, "not adopted"
    assert key not in ours.list_datasets(), "withdrawn unread"
    # Our work then goes under its own key as usual.
    result_file = tmp_path / "r.json"
    work.submit(key, str(result_file), dict, {"ok": 1})
    # A second forged publication of the same name is refused by the scheduler (the name is ours).
    with pytest.raises(KeyError):
        forger.publish_dataset(Payload(str(marks)), name=key)
    assert work.cancel(key, reason="test over") is True
    assert list(marks.iterdir()) == [], "the payload was unpickled"


def test_a_task_someone_else_ran_under_the_key_finishes_without_a_result(forger_and_ours):
    forger, ours, marks, key = forger_and_ours
    future = forger.submit(_forged_result, str(marks), key=key, pure=False)
    forger.publish_dataset(future, name=key)
    work = PublishedWork(ours)
    adopted = work.find(key)
    assert adopted is not None and adopted.key == key
    deadline = time.monotonic() + 20
    while (status := work.status(key)).state != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    # Finished, but what it returned is not read: the result is only ever the result file.
    assert status.state == "finished" and status.result is None
    assert work.cancel(key, reason="not ours") is True
    del adopted
    assert list(marks.iterdir()) == [], "the payload was unpickled"


# -- the workers' environment -------------------------------------------------------------------------


def _environment_of_this_process():
    with open(f"/proc/{os.getpid()}/environ", "rb") as handle:
        spawned = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
    return {"pid": os.getpid(), "now": dict(os.environ),
            "spawned": {k.decode(): v.decode(errors="replace") for k, v in spawned.items()}}


def test_local_cluster_workers_do_not_inherit_the_starters_secrets(monkeypatch, tmp_path):
    from pclean_provider.compute.local import LocalBackend

    planted = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:planted-db@db/airflow",
               "AIRFLOW__API_AUTH__JWT_SECRET": "planted-jwt",
               "SITE_DB_PASSWORD": "planted-password"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PCLEAN_TEST_KEPT", "kept")  # an ordinary variable passes
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = LocalBackend(ClusterSpec(nworkers=1, worker_start_timeout=60, local_directory=str(tmp_path))).start("e")
    try:
        handle.backend.wait_for_workers(handle)
        (seen,) = handle.client.run(_environment_of_this_process).values()
    finally:
        handle.close()
    assert seen["pid"] != os.getpid(), "a worker process of its own"
    for where in ("now", "spawned"):  # os.environ, and what the process was started with (/proc)
        env = seen[where]
        assert not set(planted) & set(env), (where, set(planted) & set(env))
        assert not [v for v in env.values() if "planted" in v], where
    # What CASA and Dask need is still there.
    for needed in ("PATH", "HOME", "PCLEAN_TEST_KEPT", "OMP_NUM_THREADS"):
        assert seen["now"].get(needed) == os.environ[needed], needed
    # The starting process gets its environment back.
    assert all(os.environ[name] == value for name, value in planted.items())


def test_a_cluster_hosts_workers_do_not_inherit_the_starters_secrets(monkeypatch, tmp_path):
    """The path the DAGs take: cluster_up starts a host process (which holds the scheduler), whose
    workers run the imaging."""
    from distributed import Client

    from pclean_provider.compute.host import start_host, stop_host

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "planted-fernet")
    monkeypatch.setenv("AIRFLOW_CONN_ARCHIVE_DB", "postgresql://u:planted@db/x")
    afile = tmp_path / "cluster" / "address.json"
    address = start_host(ClusterSpec(nworkers=1, host_idle_timeout=0, local_directory=str(tmp_path / "dask")),
                         afile)
    try:
        folder = afile.with_name(afile.name + ".tls")

        def environment(dask_scheduler=None):  # by value: the host cannot import this test module
            import os as _os

            return dict(_os.environ)

        with Client(address, timeout=20, set_as_default=False, **tls.client_security(address, folder)) as client:
            (worker,) = client.run(environment).values()
            host = client.run_on_scheduler(environment)
    finally:
        stop_host(afile)
    for where, env in (("host", host), ("worker", worker)):
        assert not [name for name, value in env.items() if "planted" in value], where
        assert env.get("PATH") == os.environ["PATH"], where
