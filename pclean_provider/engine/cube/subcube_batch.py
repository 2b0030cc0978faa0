"""A batch of sub-cubes on the Dask cluster: one Airflow task's work, one Dask task per sub-cube.

Airflow maps one task per batch (so a cube of thousands of channels stays within its map limit and
its per-task scheduling cost); Dask still runs every sub-cube as a task of its own, queued by the
Dask scheduler and spread over every worker the cluster has, so the cluster, not an Airflow pool,
sets how many sub-cubes run at once.

`image_subcube_batch` is the batch's work: it runs on a worker, leaves that worker's thread pool
while it waits (so the worker images sub-cubes meanwhile), submits each sub-cube under a key made
from its own key (`compute.dask_keys.child_key`), and returns every sub-cube's result with the wall-clock interval in which the
worker ran it. Each sub-cube is written as `engine/cube/subcube.image_subcube` writes it (private
staging folder, renamed into place). No Airflow here, and `distributed` and the sub-cube's
imaging (engine.cube.subcube: psutil, CASA) are imported only inside the functions that run on a
worker: the batch operator imports this module in the Airflow process.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pclean_provider.compute.dask_keys import child_key, older_child_keys
from pclean_provider.compute.futures import wait_done


def image_timed_subcube(spec: dict) -> dict:
    """Image one sub-cube; its result and when (wall clock) and where it ran."""
    from distributed import get_worker

    from pclean_provider.engine.cube.subcube import image_subcube

    started = time.time()
    result = json.loads(image_subcube(spec).model_dump_json())
    return {"result": result, "started": started, "finished": time.time(), "worker": get_worker().address}


def _cancel_on_scheduler(keys: list[str], requester: str, dask_scheduler: Any = None) -> None:
    """Run on the scheduler: cancel the keys it knows (unknown keys are skipped there)."""
    dask_scheduler.stimulus_cancel(keys, requester, force=True, reason="superseded by a newer try of the batch",
                                   msg="")


def image_subcube_batch(specs: list[dict]) -> dict:
    """Run on a worker: image every sub-cube of the batch as its own Dask task; wait for all.

    All are waited for even when one fails, so that the others' products are in place for a
    retry, which then re-images the batch's sub-cubes (only this batch's). The first failure is
    raised as it came, so an input error still reads as one.
    """
    from distributed import get_worker, worker_client

    batch_key = str(get_worker().get_current_task())
    t0 = time.monotonic()
    # worker_client secedes this task from the worker's thread pool: the worker's thread images
    # sub-cubes while the batch waits.
    with worker_client() as client:
        stale = older_child_keys(batch_key, specs)
        if stale:
            # The cancelled earlier try of this batch leaves its sub-cubes queued; they would image
            # the same channels again, so they go before this try submits its own.
            client.run_on_scheduler(_cancel_on_scheduler, keys=stale, requester=client.id)
        futures = [client.submit(image_timed_subcube, spec, key=child_key(batch_key, spec), pure=False)
                   for spec in specs]
        wait_done(futures)
        failed = [(spec, f) for spec, f in zip(specs, futures, strict=True) if f.status != "finished"]
        if failed:
            spec, future = failed[0]
            exc = future.exception() if future.status == "error" else None
            channels = ", ".join(f"ch {s['chan_start']}-{s['chan_stop'] - 1}" for s, _ in failed)
            if exc is None:
                raise RuntimeError(f"sub-cube(s) {channels} did not finish ({future.status})")
            exc.add_note(f"failed sub-cubes of this batch: {channels}")
            raise exc.with_traceback(future.traceback())
        timed = client.gather(futures)
    return {"results": [t["result"] for t in timed],
            "timings": [{"index": t["result"]["index"], "chan_start": t["result"]["chan_start"],
                         "started": t["started"], "finished": t["finished"], "worker": t["worker"]} for t in timed],
            "seconds": time.monotonic() - t0}
