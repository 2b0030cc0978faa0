"""TLS for one cluster: a self-signed certificate made by the cluster host, kept owner-only beside its
address file, and the ``distributed.Security`` every party builds from it; and the one gate every
client of a scheduler reached by address goes through (``client_security``).

Without it anyone who reaches the scheduler's port can submit code to the workers (and the Airflow
side would unpickle results from whatever answers at the address). With it the scheduler, the
workers and every client present the cluster's certificate and accept only peers that present it
too, so a client without the files is refused. The TLS is mutual: the scheduler requires every peer
to present a certificate signed by the cluster's authority (``distributed`` sets CERT_REQUIRED when a
CA file is given), so reaching the port is not enough, and encryption is required, so a plaintext
peer is refused too. The files are private to the owner (0600, in a 0700 folder): reading them is
being allowed to use the cluster.

A plaintext scheduler (``tcp://``) lets anyone who reaches its port run code on its workers, and on
whatever unpickles what it sends. A client of one is refused unless the site's administrator allows
it with ``[pclean] allow_plaintext_dask`` (``$PCLEAN_ALLOW_PLAINTEXT_DASK``), a setting of the Airflow
configuration or the process environment, never of a connection, a template or a run's conf; each
connection made under it is logged as a warning.

No module-level import of distributed: the Airflow layer imports this module.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pclean_provider.atomic_files import write_text
from pclean_provider.compute.errors import ClusterError

log = logging.getLogger(__name__)

CERT_NAME = "cluster.pem"
KEY_NAME = "cluster.key"
PRIVATE_MODE = 0o600
#: The administrator's setting that lets clients talk to a plaintext scheduler ([pclean] allow_plaintext_dask).
ALLOW_PLAINTEXT_ENV = "PCLEAN_ALLOW_PLAINTEXT_DASK"
_TRUE = ("1", "true", "yes", "on")
# Schemes whose traffic never leaves this process: nothing on the network to authenticate.
_IN_PROCESS = ("inproc",)


class PlaintextDaskRefused(ClusterError):
    """A scheduler address without TLS, and the site has not allowed plaintext Dask."""


class MissingClusterCertificate(ClusterError):
    """A ``tls://`` scheduler address, and no certificate folder to present to it."""


def create_certificates(directory: str | os.PathLike) -> Path:
    """A new self-signed key and certificate for one cluster in ``directory`` (owner-only)."""
    from distributed import Security

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    # Security.temporary makes one key pair that serves every role (scheduler, worker, client)
    # and is its own certificate authority: exactly "this cluster and nobody else".
    temporary = Security.temporary()
    config = temporary.get_tls_config_for_role("scheduler")
    write_text(folder / KEY_NAME, config["key"], mode=PRIVATE_MODE)
    write_text(folder / CERT_NAME, config["cert"], mode=PRIVATE_MODE)
    return folder


def _files(directory: str | os.PathLike) -> tuple[str, str]:
    folder = Path(directory)
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    if not (cert.is_file() and key.is_file()):
        raise FileNotFoundError(f"tls_directory={str(folder)!r} holds no cluster certificate ({CERT_NAME}, "
                                f"{KEY_NAME}); it is written by the cluster host (`pclean cluster up`)")
    return str(cert), str(key)


def security(directory: str | os.PathLike) -> Any:
    """The ``distributed.Security`` of the cluster whose certificate is in ``directory``."""
    from distributed import Security

    cert, key = _files(directory)
    return Security(
        require_encryption=True,
        tls_ca_file=cert,
        tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key,
        tls_client_cert=cert, tls_client_key=key,
    )


def environment(directory: str | os.PathLike) -> dict[str, str]:
    """Dask configuration, as environment variables, for processes a worker starts (a coordinator
    subprocess opening its own ``Client``): their default Security is then the cluster's."""
    cert, key = _files(directory)
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": cert}
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = cert
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = key
    return env


def client_kwargs(directory: str | os.PathLike | None) -> dict[str, Any]:
    """``security=...`` for a ``distributed.Client`` of the cluster, or nothing without TLS.

    For a cluster this process knows it started (a host's own record); a scheduler reached by an
    address someone gave goes through ``client_security``."""
    return {"security": security(directory)} if directory else {}


def plaintext_allowed() -> bool:
    """Whether the site's administrator allows plaintext Dask ($PCLEAN_ALLOW_PLAINTEXT_DASK)."""
    return os.environ.get(ALLOW_PLAINTEXT_ENV, "").strip().lower() in _TRUE


def scheme_of(address: str) -> str:
    """The protocol of a scheduler address; distributed reads an address without one as tcp."""
    address = (address or "").strip()
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def client_security(address: str, directory: str | os.PathLike | None) -> dict[str, Any]:
    """Keyword arguments for a ``distributed.Client`` of the scheduler at ``address``, or an error.

    ``tls://`` needs the cluster's certificate folder (the client presents its certificate: mutual
    TLS). Anything else travels in plaintext and is refused unless the administrator allows it
    (``[pclean] allow_plaintext_dask``); every connection made that way is logged as a warning.
    """
    scheme = scheme_of(address)
    if scheme == "tls":
        if not directory:
            raise MissingClusterCertificate(
                f"the Dask scheduler at {address} speaks TLS and requires a client certificate, but no "
                "certificate folder is known: give the connection (or the operator) the cluster host's "
                "address_file, or set tls_directory to the folder holding the cluster's cluster.pem and "
                "cluster.key")
        return {"security": security(directory)}
    if scheme in _IN_PROCESS:
        return {}
    if not plaintext_allowed():
        raise PlaintextDaskRefused(
            f"refusing the plaintext Dask scheduler address {address!r}: without TLS anyone who reaches its "
            "port can run code on the cluster and in this process. Use the cluster's tls:// address with its "
            "certificate folder (the cluster host's address_file, or tls_directory on the connection; "
            "`pclean cluster up` makes both), or, on a network only trusted machines reach, have the "
            f"administrator set [pclean] allow_plaintext_dask = True (${ALLOW_PLAINTEXT_ENV}=1)")
    log.warning("connecting to the Dask scheduler at %s in plaintext, unauthenticated: allowed by [pclean] "
                "allow_plaintext_dask ($%s); anyone who reaches that port can run code on the cluster and in "
                "this process", address, ALLOW_PLAINTEXT_ENV)
    return {}
