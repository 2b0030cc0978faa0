"""`pclean submit`: run a pclean coordinator (a whole `pclean --config ...` run) as a SLURM job.

The job script is filled from the packaged data/slurm/coordinator.sbatch with the CASA runtime environment
and the config's cluster knobs (partition, account, wall time, memory). The config is validated
before anything is written, and the merged config is frozen next to the script, so that editing
the original file after submitting does not change a job that is still queued.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

from pydantic import BaseModel

from pclean_provider.atomic_files import write_text
from pclean_provider.compute.errors import SlurmError
from pclean_provider.compute.slurm import log_directory, slurm_mem
from pclean_provider.compute.worker_setup import export_lines, worker_environment
from pclean_provider.data import SLURM, packaged_dir

TEMPLATE_NAME = "coordinator.sbatch"
TEMPLATE_ENV = "PCLEAN_SBATCH_TEMPLATE"


class SubmitPlan(BaseModel):
    """What `pclean submit` writes and runs (JSON-able, also printed by --dry-run)."""

    job_name: str
    script_path: str
    config_path: str
    log_dir: str
    script: str
    sbatch_command: list[str]
    job_id: str | None = None


def template_path() -> Path:
    """The coordinator job template: a site's own ($PCLEAN_SBATCH_TEMPLATE), else the packaged one."""
    site = os.environ.get(TEMPLATE_ENV)
    if site:
        if not Path(site).is_file():
            raise SlurmError(f"{TEMPLATE_ENV}={site} is not a file; point it at a copy of the packaged "
                             f"{packaged_dir(SLURM) / TEMPLATE_NAME}, or unset it to use that one")
        return Path(site)
    return packaged_dir(SLURM) / TEMPLATE_NAME


def _job_name(cfg) -> str:
    stem = Path(str(cfg.image.imagename or "image")).name
    return "pclean-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "image")


def plan_submission(cfg, *, sbatch_args: list[str] | None = None, workdir: str | os.PathLike | None = None,
                    python: str | None = None, created: str | None = None) -> SubmitPlan:
    """Build the script and the sbatch command without touching the disk or SLURM."""
    spec = cfg.cluster
    workdir = Path(workdir or Path.cwd()).resolve()
    logdir = Path(spec.slurm_log_directory).expanduser()
    logdir = logdir if logdir.is_absolute() else workdir / logdir
    logdir = log_directory(spec.model_copy(update={"slurm_log_directory": str(logdir)}))
    job_name = _job_name(cfg)
    stamp = created or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    script_path = logdir / f"{job_name}-{stamp}.sbatch"
    config_path = logdir / f"{job_name}-{stamp}.config.yaml"

    # A LocalCluster inside the job needs a CPU per worker; SLURM workers bring their own CPUs.
    cpus = 1
    if cfg.extras.parallel and spec.cluster_type == "local":
        cpus = spec.nworkers or spec.slurm_cores_per_job
    directives = []
    if spec.slurm_queue:
        directives.append(f"#SBATCH --partition={spec.slurm_queue}")
    if spec.slurm_account:
        directives.append(f"#SBATCH --account={spec.slurm_account}")
    directives += [f"#SBATCH {d}" for d in (spec.slurm_job_extra_directives or [])]
    values = {
        "created": stamp,
        "job_name": job_name,
        "log_dir": str(logdir),
        "cpus": str(cpus),
        "mem": slurm_mem(spec.slurm_job_mem),
        "walltime": spec.slurm_walltime,
        "directives": "\n".join(directives),
        "workdir": shlex.quote(str(workdir)),
        "prologue": "\n".join(spec.slurm_job_script_prologue or []),
        "casa_exports": "\n".join(export_lines(worker_environment())),
        "python": shlex.quote(python or spec.slurm_python or sys.executable),
        "config": shlex.quote(str(config_path)),
    }
    script = Template(template_path().read_text()).substitute(values)
    script = re.sub(r"\n{3,}", "\n\n", script)  # empty optional blocks leave blank lines
    command = ["sbatch", "--parsable", *(sbatch_args or []), str(script_path)]
    return SubmitPlan(job_name=job_name, script_path=str(script_path), config_path=str(config_path),
                      log_dir=str(logdir), script=script, sbatch_command=command)


def submit(cfg, plan: SubmitPlan) -> SubmitPlan:
    """Write the frozen config and the script (temporary name, then rename) and run sbatch."""
    if shutil.which("sbatch") is None:
        raise SlurmError("`pclean submit` needs sbatch (slurm-client) on this machine; or run "
                         "`pclean --config FILE` directly")
    Path(plan.log_dir).mkdir(parents=True, exist_ok=True)
    write_text(Path(plan.config_path), cfg.to_yaml(header="frozen by pclean submit"))
    write_text(Path(plan.script_path), plan.script, mode=0o755)
    proc = subprocess.run(plan.sbatch_command, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch refused the coordinator job: {(proc.stderr or proc.stdout).strip()} "
                         f"(script kept at {plan.script_path})")
    job_id = proc.stdout.strip().split(";")[0]
    return plan.model_copy(update={"job_id": job_id})
