"""Running `pclean <subcommand>` from a task, so that the Airflow worker never loads casatools."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

PCLEAN = [sys.executable, "-m", "pclean_provider.cli.main"]
SUBPROCESS_TIMEOUT_S = 3 * 3600


class PcleanRun:
    """What a `pclean` subprocess left: exit code and its output (already echoed to the task log)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def why(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-2000:]


def run_pclean(args: list[str], log_dir: Path) -> PcleanRun:
    """Run `pclean <args>` with its lines streamed into the task log as they come (progress).

    CASA writes its log into the working directory, so the subprocess runs in log_dir.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"running: pclean {' '.join(args)}", flush=True)
    proc = subprocess.Popen([*PCLEAN, *args], cwd=log_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
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
        proc.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        for r in readers:
            r.join(timeout=10)
    return PcleanRun(proc.returncode, "".join(captured["out"]), "".join(captured["err"]))
