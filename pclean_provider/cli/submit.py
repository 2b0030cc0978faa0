"""`pclean submit CONFIG [--dry-run] [SBATCH OPTIONS...]`: run a pclean coordinator as a SLURM job.

Options this command does not know are passed to sbatch unchanged and override the script's
#SBATCH lines, e.g. `pclean submit run.yaml --partition=debug --time=01:00:00`.
"""

from __future__ import annotations

import argparse
import sys

from pclean_provider.compute.errors import ClusterError
from pclean_provider.config import ConfigError, load_config
from pclean_provider.exit_codes import SubmitExit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pclean submit",
        description="Run a pclean coordinator (`pclean --config CONFIG`) as a SLURM batch job. Options not "
        "listed here are passed to sbatch and override the script's #SBATCH lines; put CONFIG first.",
        usage="pclean submit CONFIG [--dry-run] [--preset NAME] [SBATCH OPTIONS...]", allow_abbrev=False)
    parser.add_argument("config", help="pclean YAML config (the coordinator runs `pclean --config` on a frozen copy)")
    parser.add_argument("--dry-run", action="store_true", help="print the job script and the sbatch command; submit nothing")
    parser.add_argument("--preset", action="append", default=[], metavar="NAME", help="preset applied under CONFIG")
    args, sbatch_args = parser.parse_known_args(argv)

    # After the arguments are read: compute.submit loads `distributed` (`--help` stays quick).
    from pclean_provider.compute.submit import plan_submission, submit

    try:
        cfg = load_config(presets=args.preset, files=[args.config])
        cfg.require_runnable()
    except ConfigError as exc:
        print(f"pclean submit: error: {exc}", file=sys.stderr)
        return SubmitExit.BAD_INPUT
    try:
        plan = plan_submission(cfg, sbatch_args=sbatch_args)
        if args.dry_run:
            sys.stdout.write(plan.script)
            print(f"# would write {plan.script_path} and {plan.config_path}, then run: "
                  + " ".join(plan.sbatch_command), file=sys.stderr)
            return SubmitExit.OK
        done = submit(cfg, plan)
    except ClusterError as exc:
        print(f"pclean submit: error: {exc}", file=sys.stderr)
        return SubmitExit.FAILED
    print(done.job_id)
    print(f"submitted {done.job_name} as SLURM job {done.job_id}; script {done.script_path}, "
          f"log {done.log_dir}/{done.job_name}-{done.job_id}.out", file=sys.stderr)
    return SubmitExit.OK


if __name__ == "__main__":
    sys.exit(main())
