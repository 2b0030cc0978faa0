#!/usr/bin/env bash
# Browse the pipelines in a local Airflow UI: `airflow standalone` (scheduler, dag-processor,
# api-server, triggerer on SQLite) over the demo's Airflow home and data areas by default.
#
#   scripts/airflow-standalone.sh            # then open http://localhost:8080 (user admin;
#                                            # password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
#
# AIRFLOW_HOME and PCLEAN_DATA_ROOT may be set to use other places. Stop it with Ctrl-C.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$repo/work/demo/airflow-home}"
export PCLEAN_DATA_ROOT="${PCLEAN_DATA_ROOT:-$repo/work/demo/data}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$repo/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export PATH="$repo/.venv/bin:$PATH"
bash "$repo/scripts/airflow-init.sh"
# standalone's children outlive a plain SIGTERM to it; exec keeps Ctrl-C going to the whole group.
exec airflow standalone
