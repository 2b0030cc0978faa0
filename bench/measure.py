"""Run one case in a fresh process group, sample its tree's memory, read back its figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.treemem import TreeMemorySampler, worker_peak_bytes

REPO = Path(__file__).resolve().parents[1]
# Processes listed per case in results.json (the biggest first); the rest add nothing readable.
KEEP_PROCESSES = 8


def _kill_group(pgid: int) -> None:
    # The case was started in a session of its own, so this group is exactly what we started:
    # the case, its Dask scheduler/nannies/workers and CASA helpers.
    try:
        os.killpg(pgid, signal.SIGTERM)
        time.sleep(1.0)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_leftovers(procs: list) -> None:
    """Stop what the case started outside its process group: mpirun's launcher puts every rank in a
    session of its own, so killing the case's group leaves ranks behind when mpirun dies first. The
    list is every process the memory sampler saw in the case's own tree, and psutil checks each process is still that one (same
    pid and start time) before signalling it."""
    import psutil

    alive = []
    for p in procs:
        try:
            if p.is_running():
                p.terminate()
                alive.append(p)
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(alive, timeout=3.0)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=3.0)


def run_case(case_dir: Path, case: dict, command: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """`command + [case.json, result.json]` in `case_dir`; returns the case's figures plus memory."""
    case_dir.mkdir(parents=True, exist_ok=True)
    case = {**case, "case_dir": str(case_dir)}
    case_file, result_file = case_dir / "case.json", case_dir / "result.json"
    case_file.write_text(json.dumps(case, indent=1))
    result_file.unlink(missing_ok=True)
    log_path = case_dir / "output.log"
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*command, str(case_file), str(result_file)], cwd=case_dir, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with TreeMemorySampler(proc.pid) as sampler:
            try:
                proc.wait(timeout=max(timeout_s, 1.0))
            except subprocess.TimeoutExpired:
                timed_out = True
        parent_wall = time.perf_counter() - t0
        # Leftovers (a worker that outlived its client) must not run into the next case.
        _kill_group(proc.pid)
        proc.wait()
        _kill_leftovers([p for pid, p in sampler.seen.items() if pid != proc.pid])
    if result_file.exists():
        data = json.loads(result_file.read_text())
    else:
        tail = log_path.read_text(errors="replace")[-3000:]
        data = {"ok": False, "error": f"timed out after {timeout_s:.0f} s" if timed_out
                else f"exit code {proc.returncode}, no result written; output tail:\n{tail}"}
    if timed_out:
        data.update(ok=False, error=f"timed out after {timeout_s:.0f} s (budget)")
    mem = sampler.summary()
    data["memory"] = {**mem, "processes": mem["processes"][:KEEP_PROCESSES]}
    data["peak_tree_rss_bytes"] = mem["peak_tree_rss_bytes"]
    data["peak_process_rss_bytes"] = mem["peak_process_rss_bytes"]
    data["peak_worker_rss_bytes"] = worker_peak_bytes(mem, proc.pid)
    data["parent_wall_s"] = parent_wall
    data["log"] = str(log_path)
    return data


def compare_images(image: str, reference: str) -> dict:
    """The fidelity figures, with exactly the comparisons the test suite uses (tests/image_compare.py)."""
    from tests import image_compare as ic

    out: dict = {"image": image, "reference": reference}
    try:
        out["max_abs_diff_over_peak"] = ic.max_abs_diff_over_peak(image, reference)
        got, ref = ic.beams(image), ic.beams(reference)
        out["nbeams"] = len(got)
        if len(got) == len(ref) and got:
            out["beam_major_rel_max"] = max(abs(g[0] - r[0]) / r[0] for g, r in zip(got, ref, strict=True) if r[0] > 0)
            out["beam_minor_rel_max"] = max(abs(g[1] - r[1]) / r[1] for g, r in zip(got, ref, strict=True) if r[1] > 0)
            out["beam_pa_abs_max_deg"] = max(abs(g[2] - r[2]) for g, r in zip(got, ref, strict=True))
            out["beam_major_arcsec"], out["reference_beam_major_arcsec"] = got[0][0], ref[0][0]
        else:
            out["beam_error"] = f"{len(got)} beams against the reference's {len(ref)}"
        f_got, f_ref = ic.frequencies(image), ic.frequencies(reference)
        out["frequencies_match"] = bool(len(f_got) == len(f_ref) and
                                        all(abs(a - b) <= 1e-9 * abs(b) for a, b in zip(f_got, f_ref, strict=True)))
    except (AssertionError, RuntimeError, OSError, ValueError) as err:
        out["error"] = f"{type(err).__name__}: {err}"
    return out
