"""The environment a child process that reads untrusted data gets: the parent's, without its secrets.

CASA subprocesses and `pclean` steps read MeasurementSets that arrive from outside. A process whose
parent is an Airflow worker would otherwise inherit the metadata database's connection string, the
Fernet key, the API server's JWT secret, connections and variables passed as environment variables:
none of which imaging needs, and all of which a crafted input that gets code running there could read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Airflow's own secrets, whole families of them, and the usual names of credentials.
_AIRFLOW_SECRET = re.compile(
    r"^AIRFLOW(__DATABASE__SQL_ALCHEMY_CONN|__CORE__SQL_ALCHEMY_CONN|__CORE__FERNET_KEY|__CELERY__RESULT_BACKEND"
    r"|__CELERY__BROKER_URL|__API_AUTH__JWT_SECRET|__API__SECRET_KEY|__WEBSERVER__SECRET_KEY|_CONN_|_VAR_)"
    r"|_CMD$|_SECRET$")
_CREDENTIAL = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether an environment variable of this name holds a secret a child must not see."""
    return bool(_AIRFLOW_SECRET.search(name) or _CREDENTIAL.search(name))


def child_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without secrets, plus `extra`."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_secret(k)}
    env.update(extra or {})
    return env
