#!/usr/bin/env bash
# Debian packages the project needs at run and test time: SLURM (controller, node daemon,
# client) with munge for the local test cluster, and Chromium with its driver for the UI tests.
# Idempotent: installs only what is missing, and does nothing at all when everything is there.
set -euo pipefail
packages=(munge slurmctld slurmd slurm-client chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
