"""Running `pclean <subcommand>` from a task, so that the Airflow worker never loads casatools.

The step's time is bounded by its task's ``execution_timeout`` (the template's
``step_timeout_minutes``), not by a constant here: when Airflow stops the task (timeout, a user's
mark-failed, the worker shutting down), the exception it raises in this process ends the wait,
and the subprocess, in a process group of its own, is stopped with it so nothing runs on unowned.

A step's answer comes back in its result file (``step_results``), read by ``run_step``: the task
never parses the step's stdout, which is for the task log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.casa_python import CasaPythonError, casa_python
from pclean_provider.child_env import child_env
from pclean_provider.exit_codes import BAD_INPUT, OK
from pclean_provider.step_results import StepResult, read_step_result

CLI_MODULE = "pclean_provider.cli.main"
# After SIGTERM, how long the subprocess gets to remove its temporary files before SIGKILL.
STOP_GRACE_S = 10.0


def step_timeout(t) -> timedelta:
    """The execution_timeout of a pipeline's `pclean` steps (template ``step_timeout_minutes``)."""
    return timedelta(minutes=t.step_timeout_minutes)


class PcleanRun:
    """What a `pclean` subprocess left: exit code and its output (already echoed to the task log)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def why(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-2000:]


def pclean_command() -> list[str]:
    """`pclean` in the CASA environment: ``[pclean] casa_python`` when set (checked once per process: a
    worker set up wrong fails here, without retries, naming the setting), else this worker's python."""
    try:
        return [casa_python(), "-m", CLI_MODULE]
    except CasaPythonError as exc:
        raise AirflowFailException(str(exc)) from exc


def run_pclean(args: list[str], log_dir: Path) -> PcleanRun:
    """Run `pclean <args>` with its lines streamed into the task log as they come (progress).

    CASA writes its log into the working directory, so the subprocess runs in log_dir.
    """
    command = pclean_command()
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"running: pclean {' '.join(args)} (python: {command[0]})", flush=True)
    # The step reads MSs and products that came from outside: it gets none of the Airflow worker's
    # secrets (database, Fernet key, JWT secret, connections, variables).
    proc = subprocess.Popen([*command, *args], cwd=log_dir, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True, bufsize=1, start_new_session=True)
    captured: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, name: str, sink) -> None:
        for line in stream:
            captured[name].append(line)
            print(line.rstrip("\n"), file=sink, flush=True)

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out", sys.stdout), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err", sys.stderr), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait()
    except BaseException:
        # Airflow's timeout or kill arrives as an exception in this thread: stop the step's whole
        # process group, which this task alone owns, before letting it through.
        stop_group(proc)
        raise
    finally:
        for r in readers:
            r.join(timeout=10)
    return PcleanRun(proc.returncode, "".join(captured["out"]), "".join(captured["err"]))


def run_step(args: list[str], log_dir: Path) -> StepResult:
    """Run the step `pclean <args>` (``args[0]`` names it: ingest, plan, qa, archive) and read its result.

    The result file goes beside the step's logs, under the step's name; an earlier try's file is
    removed first, so that a step that dies before writing its own is not read as the earlier one.
    """
    kind = args[0]
    result_file = log_dir / f"{kind}.result.json"
    result_file.unlink(missing_ok=True)
    proc = run_pclean([*args, "--result-file", str(result_file)], log_dir)
    return read_step_result(result_file, kind, proc.returncode, why=proc.why())


def run_step_payload(args: list[str], log_dir: Path, label: str) -> dict:
    """`run_step` for a step that must succeed: its payload, or the task fails. Bad input fails
    without retries (a retry would be refused alike); any other failure may be retried."""
    result = run_step(args, log_dir)
    if result.code == BAD_INPUT:
        raise AirflowFailException(f"pclean {args[0]} refused {label}: {result.message}")
    if result.code != OK:
        raise RuntimeError(f"pclean {args[0]} exited with {result.code} ({result.exit}): {result.message}")
    return result.payload


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the subprocess's process group, SIGKILL what is left after STOP_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
