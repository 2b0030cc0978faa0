"""The coordinator of a cube or continuum run as a task on the cluster, so whoever starts a run
(an Airflow task) stays light.

Why a subprocess: the coordinator holds casatools objects (normalizer, deconvolver, iterbotsink)
and the worker that runs its task may also hold a part imager, whose steps run in that worker's
task thread. CASA tools are not thread-safe, so the two must never share a process. The task
therefore only starts `python -m pclean_provider.engine.coordinator` (its own process with its own
CASA runtime and log), relays its progress lines, and returns its JSON result. While it
waits the task `secede`s from the worker's thread pool, so that worker's single thread stays
free for the part steps the coordinator sends it - otherwise a one-thread worker would deadlock
holding both the coordinator and a part.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from distributed import Client, secede

from pclean_provider.atomic_files import write_text
from pclean_provider.casa.runtime import casa_env, ensure_casa_runtime
from pclean_provider.casa.session_registry import abort_lines
from pclean_provider.child_env import child_env
from pclean_provider.config import PcleanConfig
from pclean_provider.engine.continuum.run import run_continuum
from pclean_provider.engine.cube.run import run_cube
from pclean_provider.engine.imaging_errors import ImagingInputError, ImagingPartError
from pclean_provider.errors import is_input_error

log = logging.getLogger(__name__)


def coordinator_task(cfg_json: str, scheduler_address: str, nparts: int | None = None) -> str:
    """Dask task: run the coordinator in a subprocess; returns its result as JSON (a continuum config:
    ContinuumResult; a cube config: the exact cube loop's PcleanResult)."""
    imaging = _imaging_of(PcleanConfig.model_validate_json(cfg_json))

    try:
        secede()
    except ValueError:
        pass  # not inside a worker (called directly): nothing to give back
    with tempfile.TemporaryDirectory(prefix="pclean-coordinator-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        out_path = Path(tmp) / "result.json"
        write_text(cfg_path, cfg_json)
        cmd = [sys.executable, "-m", "pclean_provider.engine.coordinator", "--config", str(cfg_path),
               "--scheduler", scheduler_address, "--result", str(out_path), "--parent-pid", str(os.getpid())]
        if nparts is not None:
            cmd += ["--nparts", str(nparts)]
        # The coordinator reads the MS: it gets no secret of the worker that starts it.
        env = child_env(casa_env())
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        tail: list[str] = []
        relay = threading.Thread(target=_relay, args=(proc, tail), daemon=True)
        relay.start()
        still_wanted = _task_still_wanted()
        while True:
            try:
                rc = proc.wait(timeout=CANCEL_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                if still_wanted():
                    continue
            # Cancelling a Dask future does not stop a task that is running: the coordinator would
            # go on imaging (and hold its parts' workers) for nobody.
            _stop(proc)
            raise RuntimeError(f"{imaging} coordinator stopped: its work was cancelled")
        relay.join(timeout=10)
        if not out_path.exists():
            raise RuntimeError(no_result_message(imaging, rc, tail))
        payload = json.loads(out_path.read_text(encoding="utf-8"))
    return result_of(payload, imaging)


# The line with which the coordinator names its CASA log (read back from its output if it dies).
CASA_LOG_LINE = "coordinator CASA log: "


def no_result_message(imaging: str, rc: int | None, output: list[str]) -> str:
    """Why a coordinator that wrote no result ended, from its last lines of output.

    CASA ends a process on an error its C++ code does not catch ("terminate called after throwing
    ... what(): ..."); the coordinator then writes nothing, and the user must read CASA's words,
    not an exit code."""
    casa_log = next((line[len(CASA_LOG_LINE):] for line in output if line.startswith(CASA_LOG_LINE)), None)
    where = f" (CASA log: {casa_log})" if casa_log else ""
    ended = abort_lines(output)
    if ended:
        return f"CASA ended the {imaging} coordinator's process (exit code {rc}): {' | '.join(ended[-6:])}{where}"
    return f"{imaging} coordinator exited with code {rc} and no result{where}; last output:\n" + "\n".join(output)


def result_of(payload: dict[str, Any], imaging: str) -> str:
    """The reading half of the result file `main` writes: its result as JSON, or its error raised.

    A failed part is raised again as the same ImagingPartError, its reason as the coordinator had
    it (for a part that CASA ended: CASA's own lines and the paths of the part's output and log),
    so that the task running the coordinator fails in those words.
    """
    if "error" in payload:
        err = payload["error"]
        if err["type"] == "ImagingPartError":
            raise ImagingPartError(err["part"], err["nparts"], err["operation"], err["reason"], err["imaging"])
        if err.get("input_error"):
            # Any input error of the run (bad selection, parameter the bridge refuses, ...) stays one
            # across the process boundary, so the caller fails without retrying.
            raise ImagingInputError(err["message"])
        raise RuntimeError(f"{imaging} coordinator failed: {err['type']}: {err['message']}")
    return json.dumps(payload["result"])


# How often a waiting coordinator task looks whether its work is still wanted.
CANCEL_CHECK_S = 1.0
# After SIGTERM, how long the coordinator gets before SIGKILL.
STOP_GRACE_S = 10.0


def _relay(proc: subprocess.Popen, tail: list[str]) -> None:
    """The coordinator's progress lines into this worker's log; the last 20 kept for an error, and
    the line naming its CASA log kept first."""
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip()
        log.info("coordinator: %s", line)
        tail.append(line)
        keep = 1 if tail[0].startswith(CASA_LOG_LINE) else 0
        del tail[keep:-20]


def _task_still_wanted():
    """A check whether the Dask task running this is still wanted (not cancelled, not forgotten);
    outside a worker (called directly) always True."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        worker, key = get_worker(), thread_state.key
    except (ValueError, AttributeError):
        return lambda: True

    def wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state not in ("cancelled", "released", "forgotten")

    return wanted


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _imaging_of(cfg: Any) -> str:
    return "cube" if cfg.is_cube else "continuum"


def die_with_parent(parent_pid: int | None) -> None:
    """Ask the kernel to SIGTERM this process when the Dask worker that started it dies.

    A lost worker's coordinator would otherwise drive the parts on without anyone to take its
    result, beside the retry's new coordinator (two iteration controllers writing one image set).
    Linux only (prctl PR_SET_PDEATHSIG); `parent_pid` closes the race of a parent that died before
    the request was made."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cube or continuum coordinator (started by coordinator_task).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--nparts", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="the worker process that started this one")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    out = Path(args.result)
    cfg = PcleanConfig.model_validate_json(Path(args.config).read_text(encoding="utf-8"))
    info = ensure_casa_runtime()
    log.info("%s%s", CASA_LOG_LINE, info.log_path)
    try:
        with Client(args.scheduler, timeout=60) as client:
            if cfg.is_cube:
                # The exact cube loop: its coordinator (one iteration controller) is this process too.
                result = run_cube(cfg.replace(parallel=True), client=client)
            else:
                result = run_continuum(cfg, client, nparts=args.nparts)
        write_text(out, json.dumps({"result": json.loads(result.model_dump_json())}))
        return 0
    except ImagingPartError as exc:
        err = {"type": "ImagingPartError", "part": exc.part, "nparts": exc.nparts, "imaging": exc.imaging,
               "operation": exc.operation, "reason": exc.reason, "message": str(exc)}
    except Exception as exc:
        err = {"type": type(exc).__name__, "message": str(exc), "input_error": is_input_error(exc)}
    write_text(out, json.dumps({"error": err}))
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
