"""Peak resident memory of a whole process tree, sampled in a background thread.

Dask workers are grandchildren of the measured process (nanny -> worker), so the tree is walked
afresh at every sample: a worker that starts late or is restarted is still counted.
"""

from __future__ import annotations

import threading
import time

import psutil


class TreeMemorySampler:
    """Samples RSS of `pid` and all its descendants every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_total = 0  # largest sum over the tree at one instant
        self.peak_by_pid: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.samples = 0
        # Every process seen in the tree (psutil keeps each one's start time, so a later signal can
        # tell it from an unrelated process that reused the pid).
        self.seen: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-sampler-{pid}", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample_once(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                if p.pid not in self.names:
                    self.names[p.pid] = " ".join(p.cmdline())[:160]
            except psutil.Error:
                continue
            total += rss
            self.seen.setdefault(p.pid, p)
            if rss > self.peak_by_pid.get(p.pid, 0):
                self.peak_by_pid[p.pid] = rss
        self.samples += 1
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def summary(self) -> dict:
        """Tree peak, the largest single process, and every process's own peak (for per-worker RSS)."""
        per = sorted(self.peak_by_pid.items(), key=lambda kv: -kv[1])
        return {
            "peak_tree_rss_bytes": self.peak_total,
            "peak_process_rss_bytes": per[0][1] if per else 0,
            "processes": [{"pid": pid, "peak_rss_bytes": rss, "cmd": self.names.get(pid, "")} for pid, rss in per],
            "samples": self.samples,
            "interval_s": self.interval,
        }


def worker_peak_bytes(summary: dict, root_pid: int) -> int:
    """Largest peak among the measured process's descendants (its Dask workers; 0 when it has none).

    The client process (the root) is left out: it holds no image data of the sub-cubes. Helper
    processes (multiprocessing's resource tracker, nannies) are far smaller than a worker, so the
    largest descendant is a worker.
    """
    return max((p["peak_rss_bytes"] for p in summary.get("processes", []) if p["pid"] != root_pid), default=0)


if __name__ == "__main__":  # a quick look at the current shell's tree
    s = TreeMemorySampler(psutil.Process().ppid())
    s.sample_once()
    time.sleep(0.01)
    print(s.summary())
