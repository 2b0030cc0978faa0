#!/usr/bin/env bash
# Entrypoint of the SLURM image. The node set-up is the project's own start-local-slurm.sh, the
# script the tests run natively, told its role through the environment:
#   PCLEAN_SLURM_ROLE=controller|node|client, PCLEAN_SLURM_CONTROLLER, PCLEAN_SLURM_NODES, ...
# With a command (the dask-host service), run it once the node is up; otherwise keep the daemons.
set -euo pipefail
/opt/pclean/bin/start-local-slurm.sh
if [ "$#" -gt 0 ]; then
  exec "$@"
fi
exec tail -F "${PCLEAN_SLURM_DIR:-/var/lib/pclean-slurm}/log/"*.log
