"""A part that CASA ended reaches the user in CASA's words on every face: the `pclean` command, the
coordinator's result file, and the Airflow task's failure (issue 29).

No public input makes CASA end a part any more (tests/casa/test_part_abort.py makes one on purpose,
below the public API), so these tests raise the error the engine raises then, at the one place the
imaging happens, and follow it through the real code of each face. Its reason is made by the
engine's own `abort_reason` from what such a part's process leaves: CASA's "terminate called ...
what(): ..." lines in its output file, beside its CASA log.

No Dask cluster is started: on the Airflow face the worker's and the scheduler's halves are Dask's
own code (how a worker turns a task's exception into its message, how that message crosses the
wire) and this project's code run on the scheduler; only the scheduler process is a stand-in
holding the one failed task.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - the operators import Airflow: point it at the test home first
from pclean_provider.casa.session_registry import abort_reason
from pclean_provider.engine.imaging_errors import ImagingPartError
from pclean_provider.engine.part_backends import PartsLost
from pclean_provider.exit_codes import ImagingExit
from tests.airflow.fake_ti import FakeTI

# What CASA's C++ runtime writes when an uncaught casacore error ends a part's process (the abort of
# tests/casa/test_part_abort.py), after some ordinary output of the step.
TERMINATE = "terminate called after throwing an instance of 'casacore::ArrayConformanceError'"
WHAT = "what():  ArrayBase::reform() - total elements differ"
PART_OUTPUT = f"""2026-05-01 22:14:03 INFO SynthesisImagerVi2::makePSF  Making PSF
{TERMINATE}
  {WHAT}
"""

# A folder name holding a double quote: with CASA's single quotes, a repr of the message would have
# to escape one kind of them, rewording CASA's line.
LOG_FOLDERS = ["logs", 'night "2026-05-01" logs']


def _casa_ended_part(root: Path, folder: str = "logs") -> tuple[ImagingPartError, Path, Path]:
    """The error the engine raises for part 2 of 2 of a continuum run that CASA ended in make_psf,
    with the paths of the part's output and CASA log that its reason names."""
    logs = root / folder
    logs.mkdir(parents=True)
    spec = SimpleNamespace(run_id="abort", part=1, workdir=str(root / "part2"), log_dir=str(logs))
    output, casa_log = logs / "casa-part2.stderr", logs / "casa-part2.log"
    output.write_text(PART_OUTPUT)
    casa_log.write_text("2026-05-01 22:14:03 INFO SynthesisImagerVi2::makePSF  Making PSF\n")
    reason = abort_reason(spec)
    assert reason.startswith("CASA ended the process: "), reason
    return ImagingPartError(1, 2, "make_psf", reason, "continuum"), output, casa_log


def _assert_in_casa_s_words(text: str, err: ImagingPartError, output: Path, casa_log: Path) -> None:
    """The whole message, verbatim: CASA's lines as CASA wrote them and where to read more."""
    assert str(err) in text, text
    assert TERMINATE in text and WHAT in text, text
    assert str(output) in text and str(casa_log) in text, text
    assert "left the cluster" not in text, "a part CASA ended is not a lost worker"


def _mfs_config(tmp_path: Path):
    from pclean_provider.config import PcleanConfig

    ms = tmp_path / "target.ms"
    ms.mkdir(exist_ok=True)
    return PcleanConfig.from_flat(vis=str(ms), imagename=str(tmp_path / "img"), specmode="mfs", niter=100)


# -- the command line ---------------------------------------------------------------------------------


def test_the_command_line_prints_casa_s_message_and_exits_failed(tmp_path, monkeypatch, capsys):
    from pclean_provider.cli.main import main as pclean_main
    from pclean_provider.engine import api

    err, output, casa_log = _casa_ended_part(tmp_path)

    def run(cfg, progress=False):  # the imaging: where the engine raises the part's error
        raise err

    monkeypatch.setattr(api, "run", run)
    ms = tmp_path / "target.ms"
    ms.mkdir()
    code = pclean_main(["--vis", str(ms), "--imagename", str(tmp_path / "img"), "--specmode", "mfs",
                        "--niter", "100", "--no-progress"])
    out, text = capsys.readouterr()
    assert code == ImagingExit.FAILED, text
    assert text.startswith(f"pclean: failed: {err}"), text
    _assert_in_casa_s_words(text, err, output, casa_log)
    assert "Traceback" not in text and out == ""


# -- the coordinator's process and the task that runs it ---------------------------------------------------


class _SchedulerClient:
    """In place of coordinator.main's client of the run's scheduler: the imaging never uses it here."""

    def __init__(self, address, timeout=None):
        self.address = address

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _raised_by_the_coordinator_task(tmp_path: Path, monkeypatch, err: ImagingPartError) -> ImagingPartError:
    """Run the coordinator's `main` (its own process in a run) with its imaging raising `err`, then
    read its result file as `coordinator_task` does; the error that task raises on its Dask worker."""
    from pclean_provider.engine import coordinator

    def run_continuum(cfg, client, nparts=None):  # the imaging
        raise err

    monkeypatch.setattr(coordinator, "run_continuum", run_continuum)
    # What main does around the imaging in its own process, which the test process must not do:
    # connect to the run's scheduler, load CASA, and ask to end with its parent (the test runner).
    monkeypatch.setattr(coordinator, "Client", _SchedulerClient)
    monkeypatch.setattr(coordinator, "ensure_casa_runtime",
                        lambda: SimpleNamespace(log_path=str(tmp_path / "casa.log")))
    monkeypatch.setattr(coordinator, "die_with_parent", lambda parent_pid: None)

    cfg_path, result = tmp_path / "config.json", tmp_path / "result.json"
    cfg_path.write_text(_mfs_config(tmp_path).model_dump_json())
    assert coordinator.main(["--config", str(cfg_path), "--scheduler", "tcp://127.0.0.1:1",
                             "--result", str(result)]) == 1
    payload = json.loads(result.read_text())
    with pytest.raises(ImagingPartError) as raised:
        coordinator.result_of(payload, "continuum")
    return raised.value


def test_the_coordinator_s_result_file_carries_the_part_s_error_whole(tmp_path, monkeypatch):
    err, output, casa_log = _casa_ended_part(tmp_path)
    again = _raised_by_the_coordinator_task(tmp_path, monkeypatch, err)
    assert type(again) is ImagingPartError and not isinstance(again, PartsLost)
    assert (again.part, again.nparts, again.operation, again.imaging) == (1, 2, "make_psf", "continuum")
    assert again.reason == err.reason and str(again) == str(err)
    _assert_in_casa_s_words(str(again), again, output, casa_log)


# -- the Airflow task ---------------------------------------------------------------------------------------


class _SchedulerHoldingOneErredTask:
    """What a Dask scheduler holds once the published work under `key` failed on a worker with
    `error` (raised and caught by the caller): Dask's own worker message for it, sent over Dask's
    wire format, kept on a real TaskState as the scheduler keeps it."""

    def __init__(self, key: str, error: BaseException) -> None:
        from distributed.core import error_message
        from distributed.protocol import dumps, loads
        from distributed.scheduler import TaskGroup, TaskPrefix, TaskState

        sent = error_message(error)  # what the worker sends (ExecuteFailureEvent.from_exception)
        # A worker in its own process: the scheduler gets the pickled error as Serialized frames.
        received = loads(dumps({"exception": sent["exception"]}), deserialize=False)
        task = TaskState(key, None, "erred", TaskGroup(key, TaskPrefix(key)), validate=False)
        task.exception, task.exception_text = received["exception"], sent["exception_text"]
        task.traceback_text, task.exception_blame = sent["traceback_text"], task
        self.tasks = {key: task}
        self.extensions = {"publish": SimpleNamespace(datasets={key: {"keys": [key]}})}
        self.metadata: dict = {}

    def get_metadata(self, keys, default=None):
        return default

    def set_metadata(self, keys, value):
        self.metadata[tuple(keys)] = value


class _ClientOf:
    """A client of that scheduler: the calls PublishedWork, the lease and the trigger make, each
    run on it as `run_on_scheduler` runs them. `sync` does what distributed's does: a synchronous
    client runs the coroutine, an asynchronous one (a trigger's) hands it back to be awaited."""

    def __init__(self, scheduler: _SchedulerHoldingOneErredTask, asynchronous: bool) -> None:
        self.scheduler = scheduler
        self.asynchronous = asynchronous

    async def list_datasets(self):
        return list(self.scheduler.extensions["publish"].datasets)

    async def run_on_scheduler(self, function, **kwargs):
        return function(dask_scheduler=self.scheduler, **kwargs)

    async def set_metadata(self, key, value):
        self.scheduler.set_metadata([key], value)

    async def nthreads(self):
        return {"tcp://127.0.0.1:2": 1}

    def sync(self, function, *args, **kwargs):
        coroutine = function(*args, **kwargs)
        return coroutine if self.asynchronous else asyncio.run(coroutine)


def _worker_failed_with(tmp_path: Path, monkeypatch, err: ImagingPartError):
    """The coordinator task failing on its Dask worker with `err`: the scheduler that then holds it
    and the key of the work."""
    from pclean_provider.compute.dask_keys import work_key

    again = _raised_by_the_coordinator_task(tmp_path, monkeypatch, err)
    key = work_key("continuum", "d", "r", "image", -1, 1)
    try:
        raise again  # as coordinator_task raises it inside the worker's task
    except ImagingPartError as raised:
        return _SchedulerHoldingOneErredTask(key, raised), key


def _operator(tmp_path: Path):
    from pclean_provider.operators.continuum import ContinuumImagingOperator

    cfg = _mfs_config(tmp_path)
    return ContinuumImagingOperator(task_id="image", scheduler_address="tcp://127.0.0.1:1", deferrable=True,
                                    overrides={"vis": cfg.selection.vis, "imagename": cfg.image.imagename,
                                               "specmode": "mfs", "niter": 100},
                                    state_dir=str(tmp_path / "state"))


@pytest.mark.parametrize("folder", LOG_FOLDERS, ids=["plain-folder", "quoted-folder"])
def test_a_deferred_task_fails_in_casa_s_words(tmp_path, monkeypatch, folder):
    """Trigger -> event -> execute_complete: the exception the task raises, which Airflow writes to
    the task log, says what CASA said."""
    from airflow.sdk.exceptions import AirflowException

    from pclean_provider.hooks.dask import AsyncDaskConnection
    from pclean_provider.triggers.dask import DaskWorkTrigger

    err, output, casa_log = _casa_ended_part(tmp_path, folder)
    scheduler, key = _worker_failed_with(tmp_path, monkeypatch, err)
    op = _operator(tmp_path)
    trigger = DaskWorkTrigger(scheduler_address="tcp://127.0.0.1:1", key=key,
                              result_file=str(tmp_path / "state" / f"{key}.result.json"), poll_interval=0.1,
                              label=op.label())

    @asynccontextmanager
    async def connect(address, timeout=30.0):
        yield AsyncDaskConnection(_ClientOf(scheduler, asynchronous=True))

    monkeypatch.setattr(trigger._hook, "async_connect", connect)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(asyncio.wait_for(first_event(), 30))
    assert event["status"] == "error" and event["input_error"] is False
    with pytest.raises(AirflowException) as failed:
        op.execute_complete({"ti": FakeTI(task_id="image")}, event)
    text = str(failed.value)
    assert text.startswith(f"continuum image failed on the Dask worker: ImagingPartError: {err}"), text
    _assert_in_casa_s_words(text, err, output, casa_log)
    assert 'ImagingPartError("' not in text and "\\'" not in text, "CASA's lines are not shown as a repr"


@pytest.mark.parametrize("folder", LOG_FOLDERS, ids=["plain-folder", "quoted-folder"])
def test_a_task_waiting_in_its_worker_fails_in_casa_s_words(tmp_path, monkeypatch, folder):
    """deferrable=False: the operator's own wait makes the same failure."""
    from airflow.sdk.exceptions import AirflowException

    from pclean_provider.compute.dask_work import ProgressTail
    from pclean_provider.hooks.dask import DaskConnection

    err, output, casa_log = _casa_ended_part(tmp_path, folder)
    scheduler, key = _worker_failed_with(tmp_path, monkeypatch, err)
    op = _operator(tmp_path)
    with pytest.raises(AirflowException) as failed:
        op._wait_inline(DaskConnection(_ClientOf(scheduler, asynchronous=False), "tcp://127.0.0.1:1"), key,
                        str(tmp_path / "state" / f"{key}.result.json"), ProgressTail(None))
    text = str(failed.value)
    assert text.startswith(f"continuum image failed on the Dask worker: ImagingPartError: {err}"), text
    _assert_in_casa_s_words(text, err, output, casa_log)
    assert 'ImagingPartError("' not in text and "\\'" not in text, "CASA's lines are not shown as a repr"


class _Unpicklable(RuntimeError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = __import__("threading").Lock()  # what Dask cannot pickle: it sends a stand-in


def test_an_error_dask_could_not_pickle_keeps_the_text_dask_sent():
    """Only the error the worker raised is shown in its own words; for Dask's stand-in of one it could
    not pickle (an Exception holding the repr), what Dask sent is shown as it is."""
    from pclean_provider.compute.dask_work import scheduler_task_state

    try:
        raise _Unpicklable("part 1 'x' failed")
    except _Unpicklable as raised:
        scheduler = _SchedulerHoldingOneErredTask("k", raised)
    state = scheduler_task_state("k", dask_scheduler=scheduler)
    assert state["error"] == repr(_Unpicklable("part 1 'x' failed")), state
    assert state["error_lineage"][0] == "builtins.Exception"


ABORT_OUTPUT = [
    "continuum: major cycle 2",
    "terminate called after throwing an instance of 'casacore::ArrayConformanceError'",
    "  what():  ArrayConformanceError: reform() - total elements differ: [1, 1, 1, 1, 2] vs [1, 1]",
]


def test_casa_ending_the_coordinator_itself_is_told_in_casa_s_words():
    """No part failed: CASA ended the coordinator's own process, which wrote no result. Its last
    output holds CASA's reason; the message gives it and the coordinator's CASA log."""
    from pclean_provider.engine.coordinator import CASA_LOG_LINE, no_result_message

    output = [f"{CASA_LOG_LINE}/logs/casa-4242.log", *ABORT_OUTPUT]
    text = no_result_message("continuum", -6, output)
    assert text.startswith("CASA ended the continuum coordinator's process (exit code -6): "), text
    assert "casacore::ArrayConformanceError" in text and "reform() - total elements differ" in text, text
    assert text.endswith("(CASA log: /logs/casa-4242.log)"), text
    assert "major cycle 2" not in text and "left the cluster" not in text, text
    # Without CASA's words the exit code and the last output are all there is.
    plain = no_result_message("cube", 1, [f"{CASA_LOG_LINE}/logs/casa-1.log", "Traceback ...", "MemoryError"])
    assert plain.startswith("cube coordinator exited with code 1 and no result (CASA log: /logs/casa-1.log)")
    assert plain.endswith("Traceback ...\nMemoryError"), plain


def test_the_relay_keeps_the_casa_log_line_and_the_last_twenty():
    from pclean_provider.engine.coordinator import CASA_LOG_LINE, _relay

    lines = [f"{CASA_LOG_LINE}/logs/casa-7.log", *(f"line {i}" for i in range(50)), *ABORT_OUTPUT]
    tail: list[str] = []
    _relay(SimpleNamespace(stderr=iter(line + "\n" for line in lines)), tail)
    assert tail[0] == f"{CASA_LOG_LINE}/logs/casa-7.log" and tail[1:] == lines[-20:], tail
