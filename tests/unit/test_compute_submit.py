"""`pclean submit`: the coordinator's sbatch script, built without SLURM."""

from __future__ import annotations

import pytest

from pclean_provider.cli import submit as submit_cli
from pclean_provider.compute.errors import SlurmError
from pclean_provider.compute.submit import plan_submission, template_path
from pclean_provider.compute.worker_setup import export_lines, worker_environment
from pclean_provider.config import PcleanConfig


def _cfg(**extra):
    flat = dict(vis="/data/target.ms", imagename="/out/target cube", specmode="cube", slurm_queue="debug",
                slurm_account="radio", slurm_walltime="02:00:00", slurm_job_mem="8GB")
    flat.update(extra)
    return PcleanConfig.from_flat(flat, check_paths=False)


def test_coordinator_script_runs_pclean_with_the_frozen_config_and_casa_env(tmp_path):
    plan = plan_submission(_cfg(slurm_log_directory="jobs", slurm_job_script_prologue=["module load casa"]),
                           sbatch_args=["--qos=high"], workdir=tmp_path, python="/py/bin/python",
                           created="20260101T000000Z")
    lines = plan.script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert plan.job_name == "pclean-target_cube"
    for line in ("#SBATCH --job-name=pclean-target_cube", "#SBATCH --partition=debug", "#SBATCH --account=radio",
                 "#SBATCH --time=02:00:00", "#SBATCH --mem=8G", "#SBATCH --cpus-per-task=1",
                 f"#SBATCH --output={tmp_path}/jobs/%x-%j.out", f"cd {tmp_path}", "module load casa"):
        assert line in lines, line
    for line in export_lines(worker_environment()):
        assert line in lines
    assert lines[-1] == f"exec /py/bin/python -m pclean_provider.cli.main --config {plan.config_path}"
    assert plan.config_path == f"{tmp_path}/jobs/pclean-target_cube-20260101T000000Z.config.yaml"
    assert plan.sbatch_command == ["sbatch", "--parsable", "--qos=high", plan.script_path]
    assert "${" not in plan.script.replace("${SLURM_JOB_ID", "")  # every placeholder filled


def test_local_parallel_coordinator_books_a_cpu_per_worker(tmp_path):
    plan = plan_submission(_cfg(parallel=True, nworkers=3), workdir=tmp_path)
    assert "#SBATCH --cpus-per-task=3" in plan.script.splitlines()
    slurm_workers = plan_submission(_cfg(parallel=True, nworkers=3, cluster_type="slurm"), workdir=tmp_path)
    assert "#SBATCH --cpus-per-task=1" in slurm_workers.script.splitlines()


def test_dry_run_prints_the_script_and_writes_nothing(tmp_path, monkeypatch, capsys):
    ms = tmp_path / "t.ms"
    ms.mkdir()  # the config checks that vis exists before anything else happens
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"vis: {ms}\nimagename: {tmp_path}/img\nslurm_log_directory: jobs\n")
    monkeypatch.chdir(tmp_path)
    assert submit_cli.main([str(cfg), "--dry-run", "--time=00:05:00"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("#!/bin/bash") and "pclean_provider.cli.main --config" in out
    assert "sbatch --parsable --time=00:05:00" in err
    assert not (tmp_path / "jobs").exists()


def test_bad_config_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("vis: /nowhere/x.ms\nimagename: out\n")
    monkeypatch.chdir(tmp_path)
    assert submit_cli.main([str(cfg), "--dry-run"]) == 2
    assert "vis" in capsys.readouterr().err


def test_a_site_template_replaces_the_packaged_one(tmp_path, monkeypatch):
    packaged = template_path()
    site = tmp_path / "site.sbatch"
    site.write_text(packaged.read_text().replace("#SBATCH --ntasks=1", "#SBATCH --ntasks=1\n#SBATCH --qos=site"))
    monkeypatch.setenv("PCLEAN_SBATCH_TEMPLATE", str(site))
    assert "#SBATCH --qos=site" in plan_submission(_cfg(), workdir=tmp_path).script.splitlines()
    monkeypatch.setenv("PCLEAN_SBATCH_TEMPLATE", str(tmp_path / "missing.sbatch"))
    with pytest.raises(SlurmError, match="PCLEAN_SBATCH_TEMPLATE.*not a file"):
        template_path()
