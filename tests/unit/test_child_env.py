"""Children that read untrusted MSs get the environment without its secrets."""

from __future__ import annotations

import subprocess
import sys

from pclean_provider.child_env import child_env, is_secret

SECRETS = ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
           "AIRFLOW__API__SECRET_KEY", "AIRFLOW_CONN_PCLEAN_DASK", "AIRFLOW_VAR_TOKEN",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "AIRFLOW__CORE__FERNET_KEY_SECRET", "POSTGRES_PASSWORD",
           "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_API_KEY", "db_password"]
KEPT = ["PATH", "HOME", "CASASITECONFIG", "PCLEAN_DATA_ROOT", "AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER",
        "OMP_NUM_THREADS", "PYTHONPATH", "KEYBOARD_LAYOUT"]


def test_secrets_are_named_as_such_and_the_rest_is_not():
    assert [n for n in SECRETS if not is_secret(n)] == []
    assert [n for n in KEPT if is_secret(n)] == []


def test_a_child_started_with_it_sees_no_secret_but_everything_else():
    base = {**{n: "s3cret" for n in SECRETS}, **{n: "kept" for n in KEPT}, "PATH": "/usr/bin:/bin"}
    env = child_env({"CASASITECONFIG": "/site/config.py"}, base=base)
    seen = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                          env=env, capture_output=True, text=True, check=True).stdout
    assert "s3cret" not in seen
    assert '"CASASITECONFIG": "/site/config.py"' in seen and '"PCLEAN_DATA_ROOT": "kept"' in seen
