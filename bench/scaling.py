"""A short scaling model for cube imaging, from measured per-channel cost and per-task overheads.

Model (one sub-cube per worker, as the engine plans by default):

    T(W) = startup + per_task + ceil(C / W) * per_channel + W * concat_per_part

- per_channel: seconds one worker spends per channel of a sub-cube (gridding + deconvolution);
- per_task: fixed seconds of one sub-cube (imager set-up, PSF/beam fitting, product writes);
- startup: opening the cluster (here: a local Dask cluster; a SLURM queue wait is not included);
- concat_per_part: the concatenation's cost per part (virtual concatenation, measured on 1,000 planes).

The serial reference is tclean on one core: C * per_channel_serial + fixed_serial.
It ignores I/O contention on a shared file system and scheduler queueing, which is what made
the published SLURM-array figures flatten between 100 and 1,000 jobs; it is an upper bound on
speedup, stated as such.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

# CASA Memo 13 ("Cube Parallelization with CASA6", Sekhar, Rau & Xue, 2024): 209 GB ALMA data set,
# 7,680 channels, per-channel tclean as a SLURM job array, against the ALMA pipeline's 8-way MPI
# tclean. Figures as summarised in a public pipeline's notes (the memo itself could not be opened
# from this machine): breadth -> (hours, speedup over 8-way MPI).
MEMO13_BASELINE = {"label": "tclean MPI, 8-way (ALMA pipeline)", "hours": 55.5}
MEMO13_ARRAY = [
    {"breadth": 10, "hours": 13.52, "speedup_vs_mpi8": 4.0},
    {"breadth": 100, "hours": 1.74, "speedup_vs_mpi8": 32.0},
    {"breadth": 1000, "hours": 0.97, "speedup_vs_mpi8": 57.0},
]
MEMO13_CONCAT = {"planes": 1000, "virtual_concat_s": 10.0, "fits_concat_s": 593.0}


class CubeCost(BaseModel):
    per_channel_s: float
    per_task_s: float
    startup_s: float
    concat_per_part_s: float
    serial_per_channel_s: float
    serial_fixed_s: float
    source: str = ""


def fit_per_task(nchan_one: int, seconds_one: float, nchan_each: list[int], seconds_each: list[float]) -> tuple[float, float]:
    """(per_task_s, per_channel_s) from one sub-cube of `nchan_one` channels and several smaller ones.

    Two sizes give two equations s = a + b * n; the smaller sub-cubes' mean is used. A negative
    fixed cost (noise, contention) is clamped to zero and the cost is then all per channel.
    """
    if not nchan_each or nchan_one <= 0:
        return 0.0, seconds_one / max(nchan_one, 1)
    n2 = sum(nchan_each) / len(nchan_each)
    s2 = sum(seconds_each) / len(seconds_each)
    if abs(nchan_one - n2) < 1e-9:
        return 0.0, seconds_one / nchan_one
    b = (seconds_one - s2) / (nchan_one - n2)
    a = seconds_one - b * nchan_one
    if a < 0 or b <= 0:
        return 0.0, seconds_one / nchan_one
    return a, b


def predict_wall(cost: CubeCost, nchan: int, workers: int) -> float:
    workers = max(1, min(workers, nchan))
    return (cost.startup_s + cost.per_task_s + math.ceil(nchan / workers) * cost.per_channel_s
            + workers * cost.concat_per_part_s)


def predict_serial(cost: CubeCost, nchan: int) -> float:
    return cost.serial_fixed_s + nchan * cost.serial_per_channel_s


def scaling_table(cost: CubeCost, nchan: int = 1000, workers: tuple[int, ...] = (16, 64, 1000)) -> list[dict]:
    serial = predict_serial(cost, nchan)
    rows = []
    for w in workers:
        t = predict_wall(cost, nchan, w)
        rows.append({"workers": w, "wall_s": t, "speedup_vs_serial": serial / t if t > 0 else None,
                     "efficiency": (serial / t / w) if t > 0 else None,
                     "overhead_share": (cost.startup_s + cost.per_task_s + min(w, nchan) * cost.concat_per_part_s) / t
                     if t > 0 else None})
    return rows
