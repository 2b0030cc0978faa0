"""The imaging tasks of the shipped DAGs wait within a bound (issue 30, item 1: the execution timeout):
prepare derives it per target from the template and the cube, the exact-cube and continuum operators
get it, and the waiting trigger gives up at it, with a message that says what to do, even against a
scheduler that was stopped with SIGSTOP and still accepts connections."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("plaintext_dask_allowed")]

# A "scheduler" that listens, then is stopped: the kernel still completes every TCP handshake, and
# nothing ever answers, as with a Dask scheduler under SIGSTOP.
LISTENER = ("import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()")


@pytest.fixture
def stopped_scheduler():
    proc = subprocess.Popen([sys.executable, "-c", LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    proc.send_signal(signal.SIGSTOP)
    yield f"tcp://127.0.0.1:{port}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


async def first_event(trigger, timeout: float = 120):
    async def first():
        async for event in trigger.run():
            return event
    return await asyncio.wait_for(first(), timeout)


def test_the_wait_ends_at_its_deadline_against_a_stopped_scheduler(stopped_scheduler, tmp_path):
    from pclean_provider.triggers.dask import DaskWorkTrigger

    message = "cube cube did not finish within 60 min (the template's imaging_timeout); raise it and clear the task"
    trigger = DaskWorkTrigger(scheduler_address=stopped_scheduler, key="pclean-cube-k", poll_interval=0.2,
                              result_file=str(tmp_path / "result.json"), unreachable_timeout=3600,
                              no_workers_timeout=3600, deadline=time.time() + 1.5, deadline_message=message)
    assert DaskWorkTrigger(**trigger.serialize()[1]).deadline == trigger.deadline  # survives a triggerer restart
    started = time.monotonic()
    event = asyncio.run(first_event(trigger))
    # Within the deadline and the few seconds the withdrawal may wait for the stopped scheduler; without
    # a deadline it would wait an hour for the scheduler to count as unreachable.
    assert time.monotonic() - started < 30
    assert event.payload["status"] == "error" and event.payload["message"] == message


def imaging_operator(dag):
    return dag.task_dict["cube"] if "cube" in dag.task_dict else dag.task_dict["continuum"]


@pytest.mark.parametrize("kind", ["cube", "continuum"])
def test_the_shipped_dags_imaging_waits_are_bounded_and_say_what_to_raise(kind):
    from pclean_provider.dags.builder import build_dag
    from pclean_provider.dags.imaging import ms_group_kwargs
    from pclean_provider.pipeline.pipeline_template import load_templates

    (t,) = [t for t in load_templates() if t.kind == kind]
    op = imaging_operator(build_dag(t))
    assert "imaging_timeout" in op.work_timeout_hint
    assert ms_group_kwargs({"overrides": {}, "presets": [], "name": "n.ms", "imaging_timeout_s": 3900.0})[
        "timeout"] == 3900.0


def test_prepare_scales_the_bound_with_the_cube(tmp_path):
    from pclean_provider.config import load_config
    from pclean_provider.dags.tasks.prepare import _imaging_timeout
    from pclean_provider.pipeline.pipeline_template import load_templates

    (t,) = [t for t in load_templates() if t.kind == "cube"]
    (tmp_path / "n.ms").mkdir()
    meta = tmp_path / "n.ms.metadata.json"
    meta.write_text(json.dumps({"size_bytes": 2e9, "spws": [{"id": 0, "nchan": 2000}, {"id": 1, "nchan": 8}]}))
    ms = {"vis": str(tmp_path / "n.ms"), "metadata_path": str(meta)}

    def bound(imsize, spws, **extra):
        cfg = load_config(overrides={"vis": ms["vis"], "imagename": str(tmp_path / "n.cube"), "specmode": "cube",
                                     "imsize": imsize, "cell": "1arcsec", **extra})
        return _imaging_timeout(t, cfg, ms, {"spws": spws})

    small, how = bound(256, [1])
    large, _ = bound(2048, [0])
    assert small < large and "(the template's imaging_timeout)" in how and "256x256x8" in how
    assert large == pytest.approx((60 + 60 * 2048 * 2048 * 2000 * 4 / 1e9 + 15 * 2) * 60)
    pinned = t.model_copy(update={"imaging_timeout": t.imaging_timeout.model_copy(update={"minutes": 90})})
    cfg = load_config(overrides={"vis": ms["vis"], "imagename": str(tmp_path / "n.cube"), "specmode": "cube"})
    assert _imaging_timeout(pinned, cfg, ms, {"spws": [0]})[0] == 90 * 60


def test_a_fanout_cubes_batches_and_concatenation_are_bounded_too():
    from pclean_provider.dags.builder import build_dag
    from pclean_provider.dags.imaging import TIMEOUT_HINT
    from pclean_provider.pipeline.pipeline_template import load_templates

    (t,) = [t for t in load_templates() if t.kind == "cube"]
    dag = build_dag(t.model_copy(update={"cube_mode": "fanout"}))
    bounded = [task for task_id, task in dag.task_dict.items() if task_id.startswith("subcubes_") or task_id == "concat"]
    assert len(bounded) >= 2
    for task in bounded:
        assert task.work_timeout_hint == TIMEOUT_HINT and task.work_timeout is not None, task.task_id
