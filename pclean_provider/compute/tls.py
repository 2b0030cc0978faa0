"""TLS for one cluster: a self-signed certificate made by the cluster host, kept owner-only beside its
address file, and the ``distributed.Security`` every party builds from it.

Without it anyone who reaches the scheduler's port can submit code to the workers (and the Airflow
side would unpickle results from whatever answers at the address). With it the scheduler, the
workers and every client present the cluster's certificate and accept only peers that present it
too, so a client without the files is refused. The files are private to the owner (0600, in a 0700
folder): reading them is being allowed to use the cluster.

No module-level import of distributed: the Airflow layer imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pclean_provider.atomic_files import write_text

CERT_NAME = "cluster.pem"
KEY_NAME = "cluster.key"
PRIVATE_MODE = 0o600


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
    """``security=...`` for a ``distributed.Client`` of the cluster, or nothing without TLS."""
    return {"security": security(directory)} if directory else {}
