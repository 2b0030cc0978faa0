"""Spec logic of the compute layer: address switch, SLURM job script, spec files, sbatch script.

No SLURM and no CASA needed: dask-jobqueue renders a worker's job script without a scheduler, and
the CASA environment is computed without importing casatools.
"""

from __future__ import annotations

import json
import sys

import pytest
from dask.utils import parse_bytes

from pclean_provider.compute import slurm
from pclean_provider.compute.errors import ClusterError
from pclean_provider.compute.spec_file import load_spec_file, with_absolute_paths
from pclean_provider.compute.worker_setup import export_lines, worker_environment
from pclean_provider.config.cluster import ClusterSpec


def test_scheduler_address_alone_switches_to_address():
    spec = ClusterSpec(scheduler_address="tcp://10.0.0.1:8786")
    assert spec.cluster_type == "address"
    # An explicit slurm type is kept: the address is then ignored, not silently obeyed.
    assert ClusterSpec(cluster_type="slurm", scheduler_address="tcp://x:1").cluster_type == "slurm"


def test_address_type_without_address_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="scheduler_address"):
        ClusterSpec(cluster_type="address")


@pytest.mark.parametrize("text, expected", [
    ("20GB", "20G"), ("20 GiB", "20G"), ("500MB", "500M"), ("2G", "2G"), ("1.5GB", "1536M"), ("4096", "4096M"),
])
def test_slurm_memory_is_written_the_way_sbatch_reads_it(text, expected):
    assert slurm.slurm_mem(text) == expected


def test_slurm_memory_garbage_names_the_parameter():
    with pytest.raises(ClusterError, match="slurm_job_mem='lots'"):
        slurm.slurm_mem("lots")


def test_default_job_name_carries_the_cluster_id():
    spec = ClusterSpec(cluster_type="slurm")
    assert slurm.job_name_for(spec, "abc12345") == "pclean-worker-abc12345"
    named = ClusterSpec(cluster_type="slurm", slurm_job_name="nightly")
    assert slurm.job_name_for(named, "abc12345") == "nightly"


def _full_spec(tmp_path) -> ClusterSpec:
    return ClusterSpec(
        cluster_type="slurm", nworkers=3, slurm_queue="debug", slurm_account="radio", slurm_walltime="01:30:00",
        slurm_job_mem="6GB", slurm_cores_per_job=2, slurm_job_extra_directives=["--qos=low", "--exclusive"],
        slurm_python="/opt/py/bin/python", slurm_local_directory="/scratch/dask",
        slurm_log_directory=str(tmp_path / "joblogs"),
        slurm_job_script_prologue=["module load casa", "source /opt/env.sh"])


def test_job_script_has_every_knob_and_the_casa_runtime(tmp_path):
    env = {"CASASITECONFIG": "/site/casasiteconfig.py", "OMP_NUM_THREADS": "1", "PCLEAN_CASA_HOME": "/h o/me"}
    script = slurm.job_script(_full_spec(tmp_path), "c0ffee00", "tcp://10.1.2.3:8786", env=env)
    lines = script.splitlines()
    for directive in ("#SBATCH -J pclean-worker-c0ffee00", "#SBATCH -p debug", "#SBATCH -A radio",
                      "#SBATCH --cpus-per-task=2", "#SBATCH --mem=6G", "#SBATCH -t 01:30:00",
                      "#SBATCH --qos=low", "#SBATCH --exclusive",
                      f"#SBATCH -o {tmp_path / 'joblogs'}/pclean-worker-c0ffee00-%J.out"):
        assert directive in lines, directive
    command = lines[-1]
    assert command.startswith("/opt/py/bin/python -m distributed.cli.dask_worker tcp://10.1.2.3:8786")
    # One thread per worker and Dask's memory manager off: CASA tools are not thread-safe and their
    # C++ memory is invisible to Dask.
    assert "--nthreads 1" in command
    limit = command.split("--memory-limit ", 1)[1].split()[0]
    assert parse_bytes(limit) == 0, limit
    assert "--local-directory /scratch/dask" in command
    assert f"--death-timeout {slurm.WORKER_DEATH_TIMEOUT_S}" in command
    # The user's prologue runs first, the CASA runtime after it, both before the worker starts.
    order = [lines.index(x) for x in ("module load casa", "source /opt/env.sh",
                                       "export CASASITECONFIG=/site/casasiteconfig.py",
                                       "export OMP_NUM_THREADS=1", "export PCLEAN_CASA_HOME='/h o/me'")]
    assert order == sorted(order) and order[-1] < len(lines) - 1
    assert (tmp_path / "joblogs").is_dir()


def test_job_script_without_user_prologue_still_sets_up_casa(tmp_path):
    spec = ClusterSpec(cluster_type="slurm", slurm_log_directory=str(tmp_path))
    script = slurm.job_script(spec, "00000000")
    env = worker_environment()
    assert env["OMP_NUM_THREADS"] == "1" and env["CASASITECONFIG"].endswith(".py")
    for line in export_lines(env):
        assert line in script.splitlines()
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "#SBATCH --mem=20G" in script  # the seed's default 20GB, written as sbatch reads it
    # The worker's nanny drops Dask's MALLOC_TRIM_THRESHOLD_ (it slows CASA's C++ allocations).
    assert "--preload-nanny pclean_provider.compute.worker_setup" in script


def test_job_kwargs_map_spec_to_dask_jobqueue(tmp_path):
    kw = slurm.job_kwargs(_full_spec(tmp_path), "id", env={})
    assert kw["queue"] == "debug" and kw["account"] == "radio" and kw["job_cpu"] == 2
    assert kw["cores"] == 1 and kw["processes"] == 1 and kw["memory"] == "0"
    assert kw["python"] == "/opt/py/bin/python" and kw["local_directory"] == "/scratch/dask"


def test_relative_log_directory_is_resolved_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = ClusterSpec(cluster_type="slurm", slurm_log_directory="logs")
    assert slurm.log_directory(spec) == tmp_path / "logs"
    moved = with_absolute_paths(ClusterSpec(local_directory="scratch", slurm_log_directory="logs"))
    assert moved.local_directory == str(tmp_path / "scratch")
    assert moved.slurm_log_directory == str(tmp_path / "logs")


def test_spec_file_yaml_json_and_nested(tmp_path):
    (tmp_path / "a.yaml").write_text("cluster_type: slurm\nnworkers: 4\nslurm_queue: debug\n")
    (tmp_path / "b.json").write_text(json.dumps({"nworkers": 2}))
    (tmp_path / "c.yaml").write_text("vis: x.ms\ncluster:\n  scheduler_address: tcp://h:1\n")
    a = load_spec_file(tmp_path / "a.yaml")
    assert (a.cluster_type, a.nworkers, a.slurm_queue) == ("slurm", 4, "debug")
    assert load_spec_file(tmp_path / "b.json").nworkers == 2
    assert load_spec_file(tmp_path / "c.yaml").cluster_type == "address"


def test_spec_file_errors_name_the_field_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_type: slurm\nslurm_queu: debug\n")
    with pytest.raises(ClusterError, match=r"bad.yaml.*slurm_queu"):
        load_spec_file(bad)
    with pytest.raises(ClusterError, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")


def test_shipped_cluster_specs_are_valid():
    from pclean_provider.data import SLURM, packaged_dir
    from tests.conftest import REPO

    shipped = [*packaged_dir(SLURM).glob("*.yaml"), REPO / "docker" / "compose-cluster.yaml"]
    specs = {path.name: load_spec_file(path) for path in shipped}
    example = specs["cluster.example.yaml"]
    assert example.cluster_type == "slurm" and example.slurm_queue == "debug" and example.threads_per_worker == 1
    assert all(spec.threads_per_worker == 1 for spec in specs.values())


class _Job:
    def __init__(self, job_id):
        self.job_id = job_id


class _Handle:
    def __init__(self, job_ids):
        self.job_name = "pclean-x"
        self.cluster = type("Cluster", (), {"workers": {f"w{i}": _Job(j) for i, j in enumerate(job_ids)}})()


def test_worker_jobs_that_ended_before_the_first_look_fail_the_start(monkeypatch, tmp_path):
    # Jobs that die within a second (a wrong python) may never be seen PENDING or RUNNING: slurmctld
    # still lists them, ended, and this cluster's own ids say they were its jobs.
    backend = slurm.SlurmBackend(ClusterSpec(cluster_type="slurm", slurm_log_directory=str(tmp_path)))
    listed = [{"id": "105", "state": "FAILED", "reason": "NonZeroExitCode"}]
    monkeypatch.setattr(slurm, "list_jobs", lambda name, ended_too=False: listed if ended_too else [])
    with pytest.raises(ClusterError, match="ended before any Dask worker joined"):
        backend.check_start(_Handle(["105", "106"]), workers_seen=0)


def test_ended_jobs_of_an_earlier_cluster_with_the_same_name_do_not_fail_the_start(monkeypatch, tmp_path):
    backend = slurm.SlurmBackend(ClusterSpec(cluster_type="slurm", slurm_log_directory=str(tmp_path)))
    listed = [{"id": "99", "state": "COMPLETED", "reason": "None"}]
    monkeypatch.setattr(slurm, "list_jobs", lambda name, ended_too=False: listed if ended_too else [])
    backend.check_start(_Handle(["105", None]), workers_seen=0)  # not ours, ours not submitted yet: wait on
