"""One Airflow home for the provider's tests, set before anything imports Airflow.

Airflow reads AIRFLOW_HOME and its database URL once, at import; the provider's test modules import
this first so that they all share one temporary home whose DAG folder is tests/airflow/dags.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.airflow.standalone import TEST_DAGS, VENV_BIN

if "PCLEAN_TEST_AIRFLOW_HOME" not in os.environ:
    os.environ["PCLEAN_TEST_AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="pclean-airflow-home-")
HOME = Path(os.environ["PCLEAN_TEST_AIRFLOW_HOME"])

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS),
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(HOME / "logs"),
}
os.environ.update(AIRFLOW_ENV)


def airflow_already_elsewhere() -> str | None:
    """The other home, if Airflow was imported before this module could point it here."""
    if "airflow.configuration" in sys.modules:
        from airflow.configuration import AIRFLOW_HOME

        if Path(AIRFLOW_HOME).resolve() != HOME.resolve():
            return str(AIRFLOW_HOME)
    return None


_migrated = False


def migrate_db() -> None:
    """`airflow db migrate` once per test session (SQLite under the temporary home)."""
    global _migrated
    if _migrated:
        return
    env = {**os.environ, **AIRFLOW_ENV, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
                   text=True, timeout=600, cwd=str(HOME))
    _migrated = True
