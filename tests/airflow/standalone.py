"""A real ``airflow standalone`` for tests: its own AIRFLOW_HOME, port and process group.

``airflow standalone`` starts scheduler, dag-processor, api-server and triggerer as children;
SIGTERM to the parent alone leaves them running, so the whole session (started with
``start_new_session``) is signalled and waited for. The REST API v2 is driven with a bearer
token from ``/auth/token`` using the generated admin password.

The session's shared standalone (``shared``) is the split install of issue 31: Airflow runs from a
fresh virtual environment with the provider installed without its casa extra (``airflow_environment``),
and ``[pclean] casa_python`` names the project's own environment (``casa_python_wrapper``), with which
the tasks start their `pclean` steps and cluster hosts. So every live test checks that no Airflow
component, task runner included, needs CASA.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
TEST_DAGS = REPO / "tests" / "airflow" / "dags"
VENV_BIN = Path(sys.executable).parent
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standalone:
    def __init__(self, home: Path, extra_env: dict[str, str] | None = None, port: int | None = None,
                 bin_dir: Path = VENV_BIN, pythonpath: str | None = str(REPO)):
        """``bin_dir``: the environment whose `airflow` runs (default: the project's own); ``pythonpath``:
        the components' PYTHONPATH (None: none, so that only what is installed there is importable)."""
        self.home = Path(home)
        self.bin_dir = Path(bin_dir)
        self.pythonpath = pythonpath
        self.port = port or free_port()
        self.base_url = f"http://localhost:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._token: str | None = None
        self.log_path = self.home / "standalone.log"
        self.env = self._environment(extra_env or {})

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        # Nothing of the test process's own Airflow set-up (tests/airflow/provider_env.py points its
        # home, log folder and DAG folder elsewhere) may leak into this one.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            # Two cores: keep Airflow's own concurrency small so the imaging gets the CPU.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        })
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        env.update(extra)
        return env

    # -- life cycle -------------------------------------------------------------------------------
    def init(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(REPO / "scripts" / "airflow-init.sh")], env=self.env, check=True,
                       cwd=self.home, capture_output=True, text=True, timeout=300)

    def start(self, timeout: float = 240) -> Standalone:
        self.init()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([str(self.bin_dir / "airflow"), "standalone"], env=self.env, cwd=self.home,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.password_file.exists():
                    self.token(refresh=True)
                    r = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                    if r.ok and r.json().get("scheduler", {}).get("status") == "healthy":
                        return
                    last = r.text
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = str(exc)
            time.sleep(2)
        raise TimeoutError(f"airflow standalone not ready after {timeout} s ({last}):\n{self.tail()}")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout`."""
        if not self.proc:
            return
        pgid = self.proc.pid  # start_new_session made the child its own group leader
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 15)):
            if not self.group_members():
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end:
                self.proc.poll()  # reap the leader so it does not linger as a zombie
                if not self.group_members():
                    break
                time.sleep(0.5)
        self.proc.poll()

    def group_members(self) -> list[int]:
        """Live (non-zombie) processes of our group; orphans may be re-parented, so scan /proc."""
        if not self.proc:
            return []
        members = []
        for pid in _all_pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                members.append(pid)
        return members

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- REST API v2 --------------------------------------------------------------------------------
    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def admin_password(self) -> str:
        return json.loads(self.password_file.read_text())["admin"]

    def token(self, refresh: bool = False) -> str:
        if self._token is None or refresh:
            r = requests.post(f"{self.base_url}/auth/token",
                              json={"username": "admin", "password": self.admin_password()}, timeout=10)
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in (1, 2):
            r = requests.request(method, f"{self.base_url}/api/v2{path}",
                                 headers={"Authorization": f"Bearer {self.token(refresh=attempt == 2)}"},
                                 timeout=30, **kw)
            if r.status_code != 401:
                break
        if not r.ok:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.api("GET", f"/dags/{dag_id}")
            except RuntimeError:
                time.sleep(2)
        errors = self.api("GET", "/importErrors")
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout} s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        # The DAG processor registers an unpaused DAG's asset watchers (the landing-area trigger) when
        # it parses the DAG's file; the files are parsed once here (MIN_FILE_PROCESS_INTERVAL), so ask
        # for that parse now, as an operator would with the UI's "reparse" button.
        token = self.api("GET", f"/dags/{dag_id}/details")["file_token"]
        self.api("PUT", f"/parseDagFile/{token}")

    def trigger(self, dag_id: str, conf: dict) -> str:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 480) -> str:
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL:
                return state
            time.sleep(3)
        raise TimeoutError(f"run {run_id} still {state} after {timeout} s; tasks: {self.task_summary(dag_id, run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return out["task_instances"]

    def task_summary(self, dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str, int]]:
        return {(t["task_id"], t["map_index"]): (t["state"], t["try_number"])
                for t in self.task_instances(dag_id, run_id)}

    def wait_for_task(self, dag_id: str, run_id: str, key: tuple[str, int], states: set[str],
                      timeout: float = 480) -> str:
        """Until the task instance ``key`` (task id, map index) is in one of ``states``."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            state = self.task_summary(dag_id, run_id).get(key, ("not yet",))[0]
            if state in states:
                return state
            if self.run_state(dag_id, run_id) in TERMINAL:
                break
            time.sleep(3)
        raise TimeoutError(f"{key} of run {run_id} is {state}, not {sorted(states)}: "
                           f"{self.task_summary(dag_id, run_id)}")

    def answer(self, dag_id: str, run_id: str, task_id: str, map_index: int, chosen: list[str],
               params: dict | None = None) -> dict:
        """Answer a waiting Human-in-the-loop task as a script would, through the REST API.

        First waits until the scheduler has taken in the end of the paused try's process. An answer
        that comes before that starts the resumed try while the paused one's end is still to be
        processed, and Airflow 3.3 then marks the resumed try failed although it succeeds (seen: an
        answer 2.6 s after the pause, the product published, the task failed). A person answers
        minutes later; a script has to wait for this."""
        self.wait_until_pause_taken_in(dag_id, run_id, task_id, map_index)
        return self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
                        json={"chosen_options": chosen, "params_input": params or {}})

    def wait_until_pause_taken_in(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        """Until the scheduler has processed the end of a Human-in-the-loop task's paused try (see
        ``answer``): what a script, or a test clicking in the UI, waits for before answering."""
        taken_in = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id}, map_index={map_index},"
        deadline = time.monotonic() + 120
        while taken_in not in self.log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler never took in the end of {task_id}[{map_index}]'s paused try "
                                   f"in run {run_id}")
            time.sleep(0.5)

    def clear(self, dag_id: str, run_id: str, task_ids: list, include_downstream: bool = True) -> Any:
        return self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json={
            "dry_run": False, "dag_run_id": run_id, "task_ids": task_ids,
            "include_downstream": include_downstream, "include_upstream": False,
            "only_failed": False, "reset_dag_runs": True,
        })

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        r = requests.get(
            f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}, timeout=30)
        r.raise_for_status()
        # Airflow 3 serves structured log records; the task's own lines are their "event" texts.
        content = r.json().get("content", [])
        return "\n".join(item.get("event", "") if isinstance(item, dict) else str(item) for item in content)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


# -- one standalone per test session, shared by the end-to-end and the browser tests ---------------

SMALL_CUBE = {"imsize": 64, "cell": "8arcsec", "niter": 30, "threshold": "0Jy", "nchan": -1}
# The fan-out cube DAG: one mapped task per sub-cube, each a whole tclean run, so exact for dirty
# cubes only; what a UI clear of one sub-cube reruns is tested on it.
FANOUT_DAG_ID = "nightly_cube_fanout"
SMALL_DIRTY_CUBE = {**SMALL_CUBE, "niter": 0}
# The cube template watching a landing area of its own (ARRIVALS_LANDING under the data root), so a
# test can land an MS and see the run start by itself; the other DAGs do not watch, so the MSs other
# tests make never start runs of their own. Its imaging has a short bound and no retry: a coordinator
# that hangs must end its task within the bound (test_standalone_e2e.py).
ARRIVALS_DAG_ID = "nightly_cube_arrivals"
ARRIVALS_LANDING = "arrivals-landing"
BOUNDED_MINUTES = 0.75
OPENLINEAGE_FILE = "openlineage-events.jsonl"
_shared: Standalone | None = None


def write_small_templates(directory: Path) -> Path:
    """The shipped templates with test-sized imaging, so a form-triggered run stays quick; plus the
    cube template in fanout mode as a DAG of its own (FANOUT_DAG_ID)."""
    import yaml

    from pclean_provider.data import PIPELINES, packaged_dir

    directory.mkdir(parents=True, exist_ok=True)
    for src in sorted(packaged_dir(PIPELINES).glob("*.yaml")):
        data = yaml.safe_load(src.read_text())
        data["overrides"] = {**data.get("overrides", {}), **SMALL_CUBE}
        if data.get("kind") == "continuum":
            data["overrides"].pop("nchan", None)
        data["retries"] = 1
        data["retry_delay_s"] = 5
        data["arrivals"] = {"watch": False}
        (directory / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
        if data.get("kind") == "cube":
            # Two batch tasks of one sub-cube each, so that a clear can re-run one batch alone.
            fanout = {**data, "dag_id": FANOUT_DAG_ID, "cube_mode": "fanout",
                      "overrides": {**data["overrides"], **SMALL_DIRTY_CUBE},
                      "cube": {"subcubes_per_task": 1, "batch_tasks": 2}}
            (directory / f"{FANOUT_DAG_ID}.yaml").write_text(yaml.safe_dump(fanout, sort_keys=False))
            # A run started by data has no conf: the template's gate is the gate, and a test-sized
            # cube scores below 0.66 (see test_nightly_dags), so this one archives at any score.
            arrivals = {**data, "dag_id": ARRIVALS_DAG_ID, "landing_dir": ARRIVALS_LANDING,
                        "arrivals": {"watch": True, "poll_interval_s": 2},
                        "qa": {**data.get("qa", {}), "gate_min_score": 0.0},
                        "retries": 0, "imaging_timeout": {"minutes": BOUNDED_MINUTES}}
            (directory / f"{ARRIVALS_DAG_ID}.yaml").write_text(yaml.safe_dump(arrivals, sort_keys=False))
    return directory


CONSTRAINTS = REPO / "requirements" / "constraints.txt"
# Airflow's side of the split install: what the shared standalone's environment gets besides the provider.
AIRFLOW_EXTRAS = "openlineage"


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    uv = str(beside) if beside.exists() else shutil.which("uv")
    if uv is None:
        raise RuntimeError("the live tests build Airflow's environment with uv: pip install uv (part of `make setup`)")
    return uv


def airflow_environment(root: Path) -> Path:
    """A fresh virtual environment for Airflow without CASA, as a site's Airflow machines get it; its bin folder.

    The provider is built from the checkout as a release is (sdist, then the wheel from it, so nothing
    left in a build/ folder slips in) and installed with constraints.txt and the openlineage extra, not
    the casa one. With uv's cache warm it takes about 13 s on two cores, 9 s of them compiling the
    bytecode (3.5 s without, but then every Airflow process compiles its imports again: importing
    Airflow's models and scheduler takes 4.6 s instead of 1.9 s); made once per test session, since the provider under test changes
    between sessions.
    """
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}

    def uv_run(*args: str) -> None:
        proc = subprocess.run([uv, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"uv {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")

    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    uv_run("build", "--quiet", "--out-dir", str(root / "dist"), str(REPO))
    (wheel,) = (root / "dist").glob("airflow_provider_pclean-*.whl")
    venv = root / "venv"
    uv_run("venv", "--quiet", "--python", sys.executable, str(venv))
    # --compile-bytecode, as `make setup` does: where PYTHONDONTWRITEBYTECODE is set, every scheduler,
    # triggerer and task process would otherwise compile Airflow's imports from source again.
    uv_run("pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"), "-c",
           str(CONSTRAINTS), f"{wheel}[{AIRFLOW_EXTRAS}]")
    (root / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return venv / "bin"


def casa_python_wrapper(path: Path) -> Path:
    """The ``[pclean] casa_python`` of the live tests: this test process's own Python (the project's
    environment, with CASA) running the checkout under test, which its own install need not point at."""
    path.write_text("#!/bin/sh\n"
                    "# The CASA environment of the live tests: the project's Python, the checkout under test first.\n"
                    f'PYTHONPATH="{REPO}" exec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


def dag_folder(directory: Path) -> Path:
    """A DAG folder of links to the project's DAG files and the test DAGs."""
    directory.mkdir(parents=True, exist_ok=True)
    for src in [*sorted((REPO / "dags").glob("*.py")), *sorted(TEST_DAGS.glob("*.py"))]:
        (directory / src.name).symlink_to(src)
    return directory


def stop_shared() -> None:
    """Stop this process's standalone now, with every process it started (the live tests are over)."""
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


def shared() -> Standalone:
    """Start (once per process) an `airflow standalone` serving the project's DAGs."""
    global _shared
    if _shared is not None:
        return _shared
    import atexit
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="pclean-standalone-"))
    data = root / "data"
    (data / "landing").mkdir(parents=True)
    env = {
        # The project's DAGs and the test DAGs (tests/airflow/dags) side by side: one Airflow serves
        # every live test.
        "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder(root / "dags")),
        # The test DAGs are driven right after start; a short listing interval finds them soon.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The DAG files do not change while the tests run: parsing each once (and again only if it
        # changes) leaves the CPU to the imaging beside the live tests.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "PCLEAN_DATA_ROOT": str(data),
        "PCLEAN_PIPELINES_DIR": str(write_small_templates(root / "pipelines")),
        # No nightly schedule firing in the middle of a test: only the runs a test triggers, and
        # those of ARRIVALS_DAG_ID that an MS landing in its own area starts.
        "PCLEAN_PIPELINES_UNSCHEDULED": "1",
        # Test-sized products score in QA's error band; the tests archive them at gate 0 (a run's
        # qa_min_score, ARRIVALS_DAG_ID's template), which only the site's lowest gate, lowered here as an
        # administrator would, allows.
        "PCLEAN_QA_GATE_MINIMUM": "0",
        # Airflow's OpenLineage provider writes every run's lineage events here, one JSON per line.
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "append": True,
                                                       "log_file_path": str(root / OPENLINEAGE_FILE)}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "pclean-tests",
    }
    # The split install: Airflow without CASA, the steps and cluster hosts in the CASA environment.
    env["AIRFLOW__PCLEAN__CASA_PYTHON"] = str(casa_python_wrapper(root / "casa-python"))
    airflow_bin = airflow_environment(root / "airflow-env")
    # The environment's files are hard links into uv's cache, yet thousands of them: gone with the session.
    atexit.register(shutil.rmtree, root / "airflow-env", ignore_errors=True)
    server = Standalone(root / "home", extra_env=env, bin_dir=airflow_bin, pythonpath=None)
    # The setting as a site makes it, in [pclean] (a PCLEAN_CASA_PYTHON of the test process would win).
    server.env.pop("PCLEAN_CASA_PYTHON", None)
    atexit.register(server.stop)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    server.data_root = data  # type: ignore[attr-defined]
    server.casa_python = Path(env["AIRFLOW__PCLEAN__CASA_PYTHON"])  # type: ignore[attr-defined]
    server.openlineage_events = root / OPENLINEAGE_FILE  # type: ignore[attr-defined]
    _shared = server
    return server
