"""Where the time of one continuum run goes, stage by stage.

The continuum engine competes with serial tclean on fixed costs (part set-up, weighting,
gathers, restore) as much as on gridding, so every run keeps an ordered record of its stages
in its result and logs it as a short table at the end. A stage that repeats (a major cycle, a
gather) is kept once per occurrence, with its cycle number, and summed by kind in the table.

For steps that run on the parts, `dispatch` also keeps how much of the coordinator's wait was
not spent inside any part (the longest part's own seconds subtracted): task hand-off, result
polling and the slowest part's start - the cost of running a step remotely at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, Field


class StageTime(BaseModel):
    """One stage of a run: what it was, in which major cycle (None: once per run), how long."""

    stage: str
    seconds: float
    cycle: int | None = None
    where: str = Field("coordinator", description="'coordinator', or 'parts' for a step run on every part.")
    part_max_s: float | None = Field(None, description="Longest part's own time, for a step on the parts.")


# The order of the summed table: a run's stages as they happen.
STAGE_ORDER = (
    "cluster start", "input checks", "partition and coordinates", "open parts", "weight density",
    "psf", "psf gather", "pb", "scatter model", "major cycle on parts", "gather residual",
    "minor cycle", "mask and convergence", "restore", "pbcor", "close parts", "savemodel", "publish",
)


class StageClock:
    """Collects StageTimes; the per-phase totals of ContinuumResult (setup_s, psf_s, ...) are sums over it."""

    def __init__(self) -> None:
        self.stages: list[StageTime] = []

    def add(self, stage: str, seconds: float, *, cycle: int | None = None, where: str = "coordinator",
            part_max_s: float | None = None) -> None:
        self.stages.append(StageTime(stage=stage, seconds=max(0.0, seconds), cycle=cycle, where=where,
                                     part_max_s=part_max_s))

    @contextmanager
    def stage(self, stage: str, *, cycle: int | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0, cycle=cycle)

    def on_parts(self, stage: str, run: Any, *, cycle: int | None = None) -> Any:
        """Time `run()` (a backend step returning PartReplies) and keep the longest part's own time."""
        t0 = time.perf_counter()
        replies = run()
        wall = time.perf_counter() - t0
        longest = max((float(r.seconds) for r in replies), default=None) if isinstance(replies, Sequence) else None
        self.add(stage, wall, cycle=cycle, where="parts", part_max_s=longest)
        return replies

    def total(self, *stages: str) -> float:
        return sum(s.seconds for s in self.stages if s.stage in stages)


def summed(stages: Sequence[StageTime]) -> list[dict[str, Any]]:
    """One row per kind of stage: count, seconds, and the dispatch overhead of part steps."""
    rows: dict[str, dict[str, Any]] = {}
    for s in stages:
        row = rows.setdefault(s.stage, {"stage": s.stage, "count": 0, "seconds": 0.0, "dispatch_s": None})
        row["count"] += 1
        row["seconds"] += s.seconds
        if s.part_max_s is not None:
            row["dispatch_s"] = (row["dispatch_s"] or 0.0) + max(0.0, s.seconds - s.part_max_s)
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    return sorted(rows.values(), key=lambda r: order.get(r["stage"], len(order)))


def stage_table(stages: Sequence[StageTime], elapsed_s: float) -> str:
    """The summed stages as a short fixed-width table (for the log and the command line)."""
    lines = [f"{'stage':<26} {'n':>3} {'seconds':>8} {'share':>6} {'dispatch s':>10}"]
    accounted = 0.0
    for row in summed(stages):
        accounted += row["seconds"] if row["stage"] != "cluster start" else 0.0
        share = f"{row['seconds'] / elapsed_s:6.1%}" if elapsed_s > 0 else "     -"
        dispatch = "" if row["dispatch_s"] is None else f"{row['dispatch_s']:10.2f}"
        lines.append(f"{row['stage']:<26} {row['count']:>3} {row['seconds']:8.2f} {share} {dispatch}")
    other = elapsed_s - accounted
    lines.append(f"{'other':<26} {'':>3} {other:8.2f} {other / elapsed_s if elapsed_s > 0 else 0:6.1%}")
    lines.append(f"{'total (engine)':<26} {'':>3} {elapsed_s:8.2f}")
    return "\n".join(lines)
