"""The layers hold: the Airflow face loads no CASA and no Dask client, and the import contracts are kept.

An Airflow scheduler, DAG processor, triggerer and worker import the provider's operators, hooks,
triggers, links and DAGs; CASA (casatools/casatasks) and Dask's client must load only on the Dask
workers (or in a `pclean` subprocess). A top-level import anywhere along the way would load them
into every Airflow process unnoticed, so this imports the whole Airflow layer in a fresh
interpreter and looks at what got loaded. `lint-imports` checks the static contracts
(pyproject.toml, [tool.importlinter]) that keep the other layers apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("casatools", "casatasks", "casaconfig", "distributed", "dask_jobqueue")

IMPORT_THE_AIRFLOW_LAYER = """
import importlib, json, pkgutil, sys

modules = ["pclean_provider", "pclean_provider.get_provider_info"]
for name in ("operators", "hooks", "triggers", "links", "dags"):
    package = importlib.import_module("pclean_provider." + name)
    modules += [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in modules:
    importlib.import_module(name)

from pclean_provider.dags import build_dags
from pclean_provider.get_provider_info import get_provider_info

get_provider_info()
dags = build_dags()  # what a DAG processor does with the dags/ folder's two-line file
print(json.dumps({"modules": modules, "dags": sorted(dags), "loaded": sorted(set(sys.modules))}))
"""


def test_the_airflow_layer_loads_no_casa_and_no_dask_client(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", IMPORT_THE_AIRFLOW_LAYER], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pclean_provider.operators.cube" in report["modules"] and report["dags"], report
    loaded = {name.split(".")[0] for name in report["loaded"]}
    assert "airflow" in loaded
    assert not loaded & set(HEAVY), f"the Airflow layer loaded {sorted(loaded & set(HEAVY))}"


def test_import_contracts_are_kept():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    require("import-linter", lint_imports is not None, "pip install -c requirements/constraints.txt -e '.[test]'")
    proc = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout, proc.stdout[-2000:]


def test_the_contracts_catch_a_casa_or_airflow_import_in_the_engine(tmp_path):
    """A contract that cannot fail proves nothing: break a copy of the package and see it reported."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    require("import-linter", lint_imports is not None, "pip install -c requirements/constraints.txt -e '.[test]'")
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "pclean_provider", copy / "pclean_provider", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "pclean_provider" / "engine" / "cube" / "memory.py"
    bad.write_text(bad.read_text() + "\nimport airflow\nimport casatools\n")
    proc = subprocess.run([lint_imports, "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(copy)})
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "Only pclean_provider.casa imports CASA BROKEN" in proc.stdout
    assert "Nothing below the Airflow layer imports Airflow BROKEN" in proc.stdout
