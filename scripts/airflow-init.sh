#!/usr/bin/env bash
# Prepare an Airflow home for the pclean pipelines: database, the heavy-task pools named in the
# pipeline templates (the packaged ones, or $PCLEAN_PIPELINES_DIR), and the settings the DAGs rely
# on. Idempotent, so tests, `make demo` and the container entrypoint all run it before starting Airflow.
#
#   AIRFLOW_HOME=/path scripts/airflow-init.sh
#
# Uses the python next to `airflow` on PATH (the project venv by default).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
: "${AIRFLOW_HOME:?set AIRFLOW_HOME to the Airflow home to prepare}"
if [ -x "$repo/.venv/bin/airflow" ] && ! command -v airflow >/dev/null 2>&1; then
  export PATH="$repo/.venv/bin:$PATH"
fi
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$repo/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
mkdir -p "$AIRFLOW_HOME"

airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || {
  echo "airflow db migrate failed; see $AIRFLOW_HOME/db-migrate.log" >&2
  tail -n 30 "$AIRFLOW_HOME/db-migrate.log" >&2
  exit 1
}

# One Python process for all pools: each `airflow pools set` would start Airflow again.
python_bin="$(dirname "$(command -v airflow)")/python"
"$python_bin" - <<'PY'
from airflow.models.pool import Pool

from pclean_provider.pipeline.pipeline_template import load_templates

pools = {}
for t in load_templates():
    pools[t.pool.name] = max(pools.get(t.pool.name, 0), t.pool.slots)
for name, slots in pools.items():
    # include_deferred: a deferred sub-cube still has its work running on Dask, so it keeps its slot.
    Pool.create_or_update_pool(name=name, slots=slots, include_deferred=True,
                               description="pclean heavy tasks (imaging, concatenation, QA, archive)")
    print(f"pool {name}: {slots} slots")
PY
echo "Airflow home ready: $AIRFLOW_HOME (dags from $AIRFLOW__CORE__DAGS_FOLDER)"
