"""The work protocol on a real in-process Dask cluster: the same operations, sync and async client.

Each operation of ``PublishedWork`` is written once; these tests hold that it behaves the same
through a synchronous client (what the operators use) and an asynchronous one (the triggers).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from pclean_provider.compute.dask_keys import prefix_of_key, try_of_key, work_key, work_key_prefix
from pclean_provider.compute.dask_work import ProgressTail, PublishedWork, read_result, result_path


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as local:
        with Client(local, set_as_default=False) as client:
            yield local.scheduler_address, client


def _echo(value):
    return {"value": value}


def _wait_for(flag: str):
    import os
    import time

    deadline = time.monotonic() + 30
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"waited": True}


def test_keys_are_the_published_format():
    key = work_key("subcube", "nightly", "scheduled__2026-01-01T00:00:00+00:00", "subcube", 3, 2)
    # The run id was sanitised, so a hash of the exact id keeps it apart from one written that way.
    assert key == "pclean-subcube-nightly-scheduled__2026_01_01T00_00_00_00_00+8bc450a85082-subcube-m3-try2"
    assert prefix_of_key(key) == work_key_prefix("subcube", "nightly", "scheduled__2026-01-01T00:00:00+00:00",
                                                 "subcube", 3)
    assert try_of_key(key) == 2 and try_of_key("pclean-x") is None
    assert result_path("/s", key) == f"/s/{key}.result.json"


def test_sync_client_submit_find_release(cluster, tmp_path):
    _, client = cluster
    work = PublishedWork(client)
    key = "pclean-echo-d-r-t-m0-try1"
    result_file = str(tmp_path / f"{key}.json")
    future = work.submit(key, result_file, _echo, 7)
    assert future.result(timeout=30) == {"value": 7}
    assert read_result(result_file) == {"value": 7}
    assert work.find(key).key == key
    # Finished, and its result is the result file's: the Dask result is never unpickled by a reader.
    assert work.status(key).state == "finished" and work.status(key).result is None
    assert work.release(key) is True
    assert work.find(key) is None and work.release(key) is False
    assert work.status(key).state == "lost"


def test_new_try_cancels_only_older_tries_of_its_task(cluster, tmp_path):
    _, client = cluster
    work = PublishedWork(client)
    flag = tmp_path / "release"
    old = "pclean-echo-d-r-t-m1-try1"
    other_task = "pclean-echo-d-r-t-m2-try1"
    try:
        work.submit(old, str(tmp_path / "old.json"), _wait_for, str(flag))
        work.submit(other_task, str(tmp_path / "other.json"), _wait_for, str(flag))
        assert work.cancel_older_tries("pclean-echo-d-r-t-m1-try2") == [old]
        assert work.find(old) is None
        assert work.find(other_task) is not None
        assert work.cancel(old, reason="again") is False
    finally:
        flag.touch()
        work.cancel(other_task, reason="test over")


def test_async_client_status_and_cancel(cluster, tmp_path):
    address, client = cluster
    flag = tmp_path / "release"
    key = "pclean-echo-d-r-t-m3-try1"
    PublishedWork(client).submit(key, str(tmp_path / "k.json"), _wait_for, str(flag))

    async def look_then_cancel():
        from distributed import Client

        async with Client(address, asynchronous=True, set_as_default=False) as aclient:
            work = PublishedWork(aclient)
            running = await work.status(key)
            cancelled = await work.cancel(key, reason="killed")
            after = await work.status(key)
            return running.state, cancelled, after.state

    try:
        running, cancelled, after = asyncio.run(look_then_cancel())
    finally:
        flag.touch()
    assert running in ("waiting", "processing", "no-worker", "queued")
    assert cancelled is True and after == "lost"
    assert not (tmp_path / "k.json").exists()


def test_worker_error_reaches_the_status(cluster, tmp_path):
    _, client = cluster
    work = PublishedWork(client)
    key = "pclean-echo-d-r-t-m4-try1"
    future = work.submit(key, str(tmp_path / "e.json"), _echo)  # missing argument: TypeError on the worker
    with pytest.raises(TypeError):
        future.result(timeout=30)
    status = work.status(key)
    assert status.state == "error" and "TypeError" in status.error and "_echo" in status.error
    assert status.input_error is False, "a TypeError is a bug, not bad input"
    work.release(key)


def _reject_input():
    from pclean_provider.config.errors import ConfigError

    raise ConfigError("nchan=-2: must be >= 1")


def test_input_error_reaches_the_status(cluster, tmp_path):
    _, client = cluster
    work = PublishedWork(client)
    key = "pclean-echo-d-r-t-m5-try1"
    future = work.submit(key, str(tmp_path / "i.json"), _reject_input)
    with pytest.raises(ValueError, match="nchan=-2"):
        future.result(timeout=30)
    status = work.status(key)
    assert status.state == "error" and status.input_error is True and "nchan=-2" in status.error
    work.release(key)


def test_progress_tail_reads_whole_lines_and_restarts_on_a_new_file(tmp_path):
    path = tmp_path / "p.jsonl"
    tail = ProgressTail(str(path), lambda line: json.loads(line)["n"])
    assert tail.new_lines() == []
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": ')
    assert tail.new_lines() == [1, 2]
    with open(path, "a") as handle:
        handle.write('3}\n')
    assert tail.new_lines() == [3]
    replacement = tmp_path / "new.jsonl"
    replacement.write_text('{"n": 9}\n')
    replacement.replace(path)
    assert tail.new_lines() == [9]


def test_work_cancelled_with_a_reason_reports_it(cluster, tmp_path):
    """The SLURM no-workers watch cancels waiting work on the scheduler with SLURM's reasons; a
    trigger polling that work must be told them, not a bare "cancelled"."""
    from pclean_provider.compute.dask_work import cancel_with_reason

    _, client = cluster
    work = PublishedWork(client)
    flag = tmp_path / "release"
    key = "pclean-echo-d-r-t-m6-try1"
    try:
        work.submit(key, str(tmp_path / "c.json"), _wait_for, str(flag))
        client.run_on_scheduler(cancel_with_reason, keys=[key], client=client.id,
                                message="no Dask worker for 900 s; job 12: PENDING (Resources)")
        status = work.status(key)
    finally:
        flag.touch()
        work.release(key)
    assert status.state == "cancelled" and "PENDING (Resources)" in (status.error or ""), status
