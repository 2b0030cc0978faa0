"""The published casa-pclean 0.2.3 in a virtual environment of its own (never a project dependency).

`bench/.venv-published` is made with `python3.11 -m venv`; a .pth file in it points at the
project venv's site-packages, so casatools/casadata (about 1 GB), dask and numpy are shared
instead of installed twice. casa-pclean itself goes in with `--no-deps`; the venv's own
site-packages comes first on sys.path, so only what the published package brings is its own.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

PUBLISHED = "casa-pclean==0.2.3"
BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-published"
PTH_NAME = "pclean-project-venv.pth"


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def project_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def ensure_published_venv(venv: Path = VENV, log=print) -> dict:
    """Create (once) and check the venv; returns what it holds, for RESULTS.md."""
    py = venv_python(venv)
    if not py.exists():
        log(f"creating {venv} (python3.11 -m venv)")
        _run(["python3.11", "-m", "venv", str(venv)])
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    pth = Path(site) / PTH_NAME
    shared = project_site_packages()
    if not pth.exists() or pth.read_text().strip() != shared:
        pth.write_text(shared + "\n")
    have = subprocess.run([str(py), "-m", "pip", "show", "casa-pclean"], capture_output=True, text=True)
    if have.returncode != 0 or "Version: 0.2.3" not in have.stdout:
        log(f"installing {PUBLISHED} --no-deps into {venv}")
        _run([str(py), "-m", "pip", "install", "-q", "--no-deps", PUBLISHED])
    # Every declared dependency (dask, distributed, numpy, pydantic, pyyaml, scipy) must resolve
    # through the shared site-packages; pip check says so or names what is missing.
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    version = _run([str(py), "-c", "import importlib.metadata as m; print(m.version('casa-pclean'))"]).strip()
    return {"venv": str(venv), "python": str(py), "package": PUBLISHED, "installed_version": version,
            "shared_site_packages": shared, "pth_file": str(pth), "pip_check": check.stdout.strip() or check.stderr.strip(),
            "extra_installs": []}


if __name__ == "__main__":
    print(ensure_published_venv())
    sys.exit(0)
