"""Sub-cube batches: how many sub-cubes one Airflow task images (pure logic), and the Dask keys
of a batch's sub-cubes."""

from __future__ import annotations

import pytest

from pclean_provider.compute.dask_keys import child_key, older_child_keys
from pclean_provider.engine.cube.plan import PlanError, batch_ranges


def sizes(ranges):
    return [b - a for a, b in ranges]


def test_batches_cover_every_subcube_once_in_order():
    ranges = batch_ranges(70, 2, max_batches=8, subcubes_per_task=16)
    assert ranges[0][0] == 0 and ranges[-1][1] == 70
    assert all(a == prev_b for (a, _), (_, prev_b) in zip(ranges[1:], ranges, strict=False))
    assert sizes(ranges) == [14, 14, 14, 14, 14]  # 5 tasks of 16 would be uneven: evened out


def test_derived_size_keeps_every_worker_busy_for_the_target_time():
    # 4 workers, 300 s per task, 20 s per sub-cube: 15 rounds of 4 sub-cubes per task.
    assert sizes(batch_ranges(120, 4, max_batches=100)) == [60, 60]
    # A sub-cube longer than the target: still one per worker.
    assert sizes(batch_ranges(8, 4, max_batches=100, target_task_seconds=10, subcube_seconds=60)) == [4, 4]


def test_any_channel_count_fits_the_map_limit():
    # Memo 13's 7,680 one-channel sub-cubes, 1 worker, a requested 1 sub-cube per task, limit 1,024.
    ranges = batch_ranges(7680, 1, max_batches=1024, subcubes_per_task=1)
    assert len(ranges) <= 1024 and sum(sizes(ranges)) == 7680 and max(sizes(ranges)) - min(sizes(ranges)) <= 1
    assert len(batch_ranges(70, 1, max_batches=3, subcubes_per_task=1)) == 3
    assert batch_ranges(1, 16, max_batches=8) == [(0, 1)]


@pytest.mark.parametrize("kwargs, word", [
    ({"subcubes_per_task": 0}, "subcubes_per_task"),
    ({"max_batches": 0}, "max_batches"),
    ({"subcube_seconds": 0}, "subcube_seconds"),
])
def test_bad_batch_settings_name_the_parameter(kwargs, word):
    args = {"max_batches": 8, **kwargs}
    with pytest.raises(PlanError, match=word):
        batch_ranges(10, 2, **args)


def test_sub_cube_keys_carry_the_batch_try_and_first_channel():
    specs = [{"chan_start": 0}, {"chan_start": 4}]
    assert child_key("pclean-subcubes-d-r-t-m3-try2", specs[1]) == "pclean-subcubes-d-r-t-m3-try2-sc00004"
    # A newer try knows the keys of the earlier tries' sub-cubes, to cancel any still queued.
    assert older_child_keys("pclean-subcubes-d-r-t-m3-try3", specs) == [
        "pclean-subcubes-d-r-t-m3-try1-sc00000", "pclean-subcubes-d-r-t-m3-try1-sc00004",
        "pclean-subcubes-d-r-t-m3-try2-sc00000", "pclean-subcubes-d-r-t-m3-try2-sc00004"]
    assert older_child_keys("pclean-subcubes-d-r-t-m3-try1", specs) == []


def _wait_for_release(event_name: str) -> str:
    from distributed import Event

    Event(event_name).wait()
    return "ran"


def _scheduler_state(key: str, dask_scheduler=None) -> str | None:
    task = dask_scheduler.tasks.get(key)
    return None if task is None else task.state


def test_a_newer_try_cancels_an_older_try_s_queued_sub_cube():
    """What a batch's retry does first, on a real (in-process) scheduler: the older try's sub-cube
    still queued behind a busy worker is cancelled; keys the scheduler never saw are passed over."""
    from distributed import Client, Event, LocalCluster

    from pclean_provider.engine.cube.subcube_batch import _cancel_on_scheduler

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as local, \
            Client(local) as client:
        release = Event("release-busy", client=client)
        busy = client.submit(_wait_for_release, "release-busy", key="busy", pure=False)
        old = child_key("pclean-subcubes-d-r-t-m0-try1", {"chan_start": 0})
        queued = client.submit(_wait_for_release, "release-busy", key=old, pure=False)
        stale = older_child_keys("pclean-subcubes-d-r-t-m0-try2", [{"chan_start": 0}, {"chan_start": 9}])
        assert old in stale
        # A submission reaches the scheduler asynchronously: ask it (each ask a round trip) until it knows.
        states = (client.run_on_scheduler(_scheduler_state, key=old) for _ in range(2000))
        assert next((s for s in states if s is not None), None) in ("queued", "no-worker", "processing")
        client.run_on_scheduler(_cancel_on_scheduler, keys=stale, requester=client.id)
        # Forgotten by the scheduler: it will never run, whatever the older try's client still holds.
        assert client.run_on_scheduler(_scheduler_state, key=old) is None
        release.set()
        assert busy.result(timeout=30) == "ran"
        del queued
