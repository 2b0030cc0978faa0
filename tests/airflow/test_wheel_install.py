"""The provider as a site gets it: the built wheel in a fresh virtual environment, no checkout.

The wheel is built from an sdist (as a release is, so nothing left in a local build/ folder can
slip in), installed with the project's constraints into a new environment under the temporary
folder (without the casa extra, as an Airflow scheduler, API server, triggerer or DAG processor
gets it), and used from there with the working directory outside the checkout and no PYTHONPATH:
the presets, the pipeline templates, the sbatch template and the DAG factory must all come from
the installed package. uv does the install: with its cache it takes seconds (a cold cache
downloads the dependencies once), where pip needs minutes for the same packages.

The provider is tested on two Airflow minors: 3.3 (constraints.txt) and 3.2 (the same constraints
with requirements/airflow-3.2.txt's pins in place of Airflow's). The checks that depend on Airflow
(the database migrates, the DAG folder parses and serializes, Airflow lists the provider and its
plugin) run in both environments, the rest in the 3.3 one. The 3.2 environment costs a second
install, seconds with uv's cache; it shares every package with the 3.3 one but Airflow 3.2's core,
task SDK and aiosqlite (about 7 MB), so a cold cache downloads little more than for the 3.3 one alone
(both: about 420 MB unpacked in uv's cache). The two environments' checks add about 35 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require

pytestmark = [pytest.mark.airflow, pytest.mark.wheel]

DAG_FILE = REPO / "dags" / "pclean_pipelines.py"
CONSTRAINTS = REPO / "requirements" / "constraints.txt"
# The Airflow minors besides constraints.txt's, each the pins that replace constraints.txt's own.
OTHER_MINORS = {"3.2": REPO / "requirements" / "airflow-3.2.txt"}
PACKAGED = {"pclean_provider/data/presets/vlass_mtmfs.yaml", "pclean_provider/data/pipelines/nightly_cube_imaging.yaml",
            "pclean_provider/data/pipelines/nightly_continuum_imaging.yaml",
            "pclean_provider/data/slurm/coordinator.sbatch", "pclean_provider/data/slurm/cluster.example.yaml",
            "pclean_provider/dags/builder.py"}


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


class Installed:
    """The fresh environment and how to run its commands away from the checkout."""

    def __init__(self, root: Path, venv: Path, wheel: Path):
        self.root, self.venv, self.wheel = root, venv, wheel
        self.dags = root / "dags"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AIRFLOW", "PCLEAN_"))}
        self.env.update({
            "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
            "AIRFLOW_HOME": str(root / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "PCLEAN_DATA_ROOT": str(root / "data"),
        })

    def run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        return proc.stdout

    def python(self, code: str, *args: str) -> dict:
        """Run code in the environment's python; its last output line is a JSON answer."""
        out = self.run(str(self.venv / "bin" / "python"), "-c", code, *args)
        return json.loads(out.strip().splitlines()[-1])


def _uv_runner(root: Path):
    uv = _uv()
    require("uv", uv is not None, "pip install uv (part of `make setup`)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}

    def uv_run(*args: str) -> None:
        proc = subprocess.run([uv, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"uv {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"

    return uv_run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built once for every environment of this module."""
    root = tmp_path_factory.mktemp("wheel-build").resolve()
    assert not root.is_relative_to(REPO.resolve()), "the build must live outside the checkout"
    _uv_runner(root)("build", "--quiet", "--out-dir", str(root / "dist"), str(REPO))
    (built,) = (root / "dist").glob("airflow_provider_pclean-*.whl")
    return built


def _pinned(name: str) -> str:
    return re.split(r"[=<>!~;\s\[]", name.strip(), maxsplit=1)[0].lower().replace("_", "-")


def merged_constraints(pins: Path, into: Path) -> Path:
    """constraints.txt with the lines of the packages pins names replaced by pins' lines."""
    own = [line.strip() for line in pins.read_text().splitlines() if line.strip() and not line.startswith("#")]
    names = {_pinned(line) for line in own}
    kept = [line for line in CONSTRAINTS.read_text().splitlines() if _pinned(line) not in names]
    assert len(kept) + len(names) == len(CONSTRAINTS.read_text().splitlines()), \
        f"{pins.name} pins a package constraints.txt does not: {sorted(names)}"
    into.write_text("\n".join([*kept, *own]) + "\n")
    return into


def install(tmp_path_factory, wheel: Path, constraints: Path, name: str) -> Installed:
    root = tmp_path_factory.mktemp(name).resolve()
    assert not root.is_relative_to(REPO.resolve()), "the fresh environment must live outside the checkout"
    uv_run = _uv_runner(root)
    venv = root / "venv"
    uv_run("venv", "--quiet", "--python", sys.executable, str(venv))
    uv_run("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(constraints), str(wheel))
    site = Installed(root, venv, wheel)
    site.dags.mkdir()
    shutil.copy(DAG_FILE, site.dags / DAG_FILE.name)
    return site


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Installed:
    """The wheel with the project's constraints: Airflow 3.3."""
    return install(tmp_path_factory, wheel, CONSTRAINTS, "wheel-install")


@pytest.fixture(scope="module", params=["3.3", *OTHER_MINORS])
def airflow_site(request, tmp_path_factory, wheel) -> Installed:
    """The wheel on each tested Airflow minor: the checks that depend on Airflow run in each."""
    if request.param == "3.3":
        site = request.getfixturevalue("installed")
    else:
        pins = OTHER_MINORS[request.param]
        root = tmp_path_factory.mktemp(f"airflow-{request.param}-constraints")
        site = install(tmp_path_factory, wheel, merged_constraints(pins, root / "constraints.txt"),
                       f"wheel-install-{request.param}")
    version = site.python("import json, airflow; print(json.dumps(airflow.__version__))")
    assert version.startswith(request.param + "."), (request.param, version)
    return site


def test_the_wheel_carries_data_and_dag_factory(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert PACKAGED <= names, sorted(PACKAGED - names)
    assert len(DAG_FILE.read_text().strip().splitlines()) <= 4, "a site's DAG file stays a few lines"


def test_the_package_is_the_installed_one(installed):
    where = installed.python("import json, pclean_provider; print(json.dumps(pclean_provider.__file__))")
    assert Path(where).is_relative_to(installed.venv), where


def test_presets_are_listed_and_a_preset_dumps_its_config(installed):
    listed = dict(line.split() for line in installed.run("pclean", "presets").splitlines())
    assert {"quicklook_continuum", "spectral_line_cube", "vlass_mtmfs"} <= set(listed)
    assert all(Path(path).is_relative_to(installed.venv) for path in listed.values()), listed

    dumped = installed.run("pclean", "--preset", "vlass_mtmfs", "--imsize", "512", "--dump-config")
    cfg = yaml.safe_load(dumped)
    assert cfg["deconvolution"]["deconvolver"] == "mtmfs" and cfg["deconvolution"]["nterms"] == 2
    assert cfg["gridding"]["gridder"] == "wproject" and cfg["image"]["imsize"] == 512
    assert "preset vlass_mtmfs" in dumped.splitlines()[0]


def test_the_sbatch_template_is_packaged(installed):
    where = installed.python("import json; from pclean_provider.compute.submit import template_path; "
                             "print(json.dumps(str(template_path())))")
    assert Path(where).is_relative_to(installed.venv) and Path(where).is_file(), where


def test_the_dag_folder_file_builds_both_pipelines(airflow_site):
    installed = airflow_site
    answer = installed.python(
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(sys.argv[1])\n"
        "import pclean_provider.dags\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "                  'dags': {d: sorted(t.task_id for t in dag.tasks) for d, dag in bag.dags.items()},\n"
        "                  'factory': pclean_provider.dags.__file__,\n"
        "                  'casatools': 'casatools' in sys.modules}))",
        str(installed.dags))
    assert not answer["errors"], answer["errors"]
    assert set(answer["dags"]) == {"nightly_cube_imaging", "nightly_continuum_imaging"}
    # The shipped cube template images with the exact loop (cube_mode exact): one cube task per MS.
    assert {"ingest", "prepare", "cluster_up", "cube", "qa", "qa_gate", "archive", "review", "review_decision",
            "cluster_down"} <= set(answer["dags"]["nightly_cube_imaging"])
    assert "continuum" in answer["dags"]["nightly_continuum_imaging"]
    assert Path(answer["factory"]).is_relative_to(installed.venv), answer["factory"]
    assert not answer["casatools"], "parsing the DAGs must not load CASA into the Airflow process"


def test_without_the_casa_extra_there_is_no_casa_and_imaging_says_what_to_install(installed):
    """The Airflow components install the provider alone: no casatools, no casatasks, no casadata."""
    answer = installed.python(
        "import importlib.util, json\n"
        "from pclean_provider.casa.runtime import CasaRuntimeError, ensure_casa_runtime\n"
        "found = {m: importlib.util.find_spec(m) is not None for m in ('casatools', 'casatasks', 'casadata')}\n"
        "try:\n"
        "    ensure_casa_runtime()\n"
        "    error = ''\n"
        "except CasaRuntimeError as exc:\n"
        "    error = str(exc)\n"
        "print(json.dumps({'found': found, 'error': error}))")
    assert not any(answer["found"].values()), answer["found"]
    assert "airflow-provider-pclean[casa]" in answer["error"], answer["error"]


def test_airflow_lists_the_provider(airflow_site):
    installed = airflow_site
    providers = json.loads(installed.run("airflow", "providers", "list", "-o", "json"))
    ours = [p for p in providers if p["package_name"] == "airflow-provider-pclean"]
    assert ours, [p["package_name"] for p in providers]
    from pclean_provider.version import __version__

    assert ours[0]["version"] == __version__


def test_the_database_migrates_and_the_dag_folder_serializes(airflow_site):
    """What a DAG processor does with the shipped DAG file, on a database that Airflow's own migrations
    made: both pipelines serialized, no import error; and the API server's plugin with its QA pages app."""
    airflow_site.run("airflow", "db", "migrate")
    airflow_site.run("airflow", "dags", "reserialize")
    db = sqlite3.connect(Path(airflow_site.env["AIRFLOW_HOME"]) / "airflow.db")
    try:
        errors = db.execute("SELECT filename, stacktrace FROM import_error").fetchall()
        serialized = {row[0] for row in db.execute("SELECT dag_id FROM serialized_dag")}
    finally:
        db.close()
    assert not errors, errors
    assert serialized == {"nightly_cube_imaging", "nightly_continuum_imaging"}, serialized

    plugins = json.loads(airflow_site.run("airflow", "plugins", "-o", "json"))
    ours = [p for p in plugins if p["name"] == "pclean"]
    assert ours and ours[0]["listeners"] == ["pclean_provider.plugins.pool_listener"], plugins
    assert [app["url_prefix"] for app in ours[0]["fastapi_apps"]] == ["/pclean"], ours
