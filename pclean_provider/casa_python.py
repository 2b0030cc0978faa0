"""The interpreter of the CASA environment: what `pclean` steps and cluster hosts are started with.

An Airflow worker may run without CASA (the provider installed without its ``casa`` extra) when a
CASA environment exists on the same machine: ``[pclean] casa_python`` in airflow.cfg
(``AIRFLOW__PCLEAN__CASA_PYTHON``, exported as ``$PCLEAN_CASA_PYTHON`` by airflow_config) names its
Python, and the `pclean <step>` subprocesses of the nightly DAGs and the local cluster hosts (whose
Dask workers, and the coordinators they start, inherit that interpreter) run with it. Unset, they
run with this process's own interpreter, as before.

The named interpreter is checked before its first use in a process, cheaply (it is started once to
look for casatools, never to import it) and with an error that names the setting and the fix: a
worker set up wrong fails its first step at once rather than deep in CASA. Nothing here imports CASA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from pclean_provider.child_env import child_env

ENV = "PCLEAN_CASA_PYTHON"
SETTING = "[pclean] casa_python (AIRFLOW__PCLEAN__CASA_PYTHON, or $PCLEAN_CASA_PYTHON)"
# Exit 0 when casatools can be imported there, 1 when it cannot; nothing is imported.
_PROBE = "import importlib.util, sys; sys.exit(importlib.util.find_spec('casatools') is None)"
PROBE_TIMEOUT_S = 120.0

_checked: set[str] = set()
_lock = threading.Lock()


class CasaPythonError(RuntimeError):
    """The configured CASA interpreter cannot run the CASA side of the pipeline."""


def configured() -> str | None:
    """The interpreter the setting names, or None when it is unset (empty counts as unset)."""
    value = os.environ.get(ENV, "").strip()
    return value or None


def casa_python() -> str:
    """The interpreter to start `pclean` steps and cluster hosts with: the setting's, checked once per
    process, else ``sys.executable``."""
    path = configured()
    if path is None:
        return sys.executable
    with _lock:
        if path not in _checked:
            check(path)
            _checked.add(path)
    return path


def check(path: str) -> None:
    """Raise CasaPythonError, naming the setting and the fix, unless ``path`` is an executable
    interpreter that can import casatools."""
    fix = (f"set {SETTING} to the python of an environment with the provider's casa extra installed "
           f"(pip install 'airflow-provider-pclean[casa]'), or unset it to use this worker's own python")
    if not os.path.isabs(path):
        raise CasaPythonError(f"{SETTING} is {path!r}, not an absolute path; {fix}")
    if not os.path.exists(path):
        raise CasaPythonError(f"{SETTING} names {path}, which does not exist on this machine; {fix}")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CasaPythonError(f"{SETTING} names {path}, which is not an executable file; {fix}")
    try:
        probe = subprocess.run([path, "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               # The steps' environment (no secrets): a PYTHONPATH there counts.
                               timeout=PROBE_TIMEOUT_S, env=child_env())
    except OSError as exc:
        raise CasaPythonError(f"{SETTING} names {path}, which cannot be started ({exc}); {fix}") from exc
    except subprocess.TimeoutExpired:
        raise CasaPythonError(f"{SETTING} names {path}, which did not answer within {PROBE_TIMEOUT_S:g} s "
                              f"whether it has casatools; {fix}") from None
    if probe.returncode == 1:
        raise CasaPythonError(f"{SETTING} names {path}, which cannot import casatools; {fix}")
    if probe.returncode != 0:
        why = (probe.stderr.strip() or probe.stdout.strip())[-500:]
        raise CasaPythonError(f"{SETTING} names {path}, which is not a working Python "
                              f"(exit {probe.returncode}: {why}); {fix}")

