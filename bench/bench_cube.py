"""Serial tclean against the cube engine (2 workers) on a cube of at least 64 channels.

    python -m bench.bench_cube [--nchan 64 --imsize 256 --hours 2 --antennas 12 --workers 2 ...]
                               [--output bench/results/cube.json]

Both measurements run in fresh processes (`--case serial|engine`) on the same simulated MS and
parameters, one after the other in one run. The engine's Dask cluster is started before its
clock starts and its workers have imported casatasks, as serial tclean has before its clock (a
nightly pipeline keeps a warm cluster; start-up and warm-up are recorded separately).
Recorded: wall times and speedup; per worker the peak RSS (sampled by the sub-cubes themselves
and by the worker process as a whole) next to the engine's memory estimate and serial tclean's
peak RSS; fidelity (max |diff| / peak per product, beams, sum of weights), so a fast wrong
answer cannot pass as a win. Written to a temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.json_files import write_json

REPO = Path(__file__).resolve().parents[1]


def _imaging_kwargs(args: argparse.Namespace, vis: str) -> dict:
    return dict(vis=vis, specmode="cube", imsize=[args.imsize, args.imsize], cell=args.cell,
                deconvolver="hogbom", weighting=args.weighting, robust=0.5, niter=args.niter,
                threshold=args.threshold)


class _ProcessPeak:
    """Peak RSS of this process, sampled (serial tclean is one process)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _warm_worker() -> None:
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime()
    import casatasks  # noqa: F401


def _worker_rss(client) -> dict:
    def rss():
        import psutil

        return psutil.Process().memory_info().rss

    return client.run(rss)


def _case(args: argparse.Namespace) -> dict:
    from pclean_provider.casa.runtime import ensure_casa_runtime

    work = Path(args.workdir)
    ensure_casa_runtime(log_dir=work / "logs", log_name=f"casa-{args.case}.log")
    kwargs = _imaging_kwargs(args, args.vis)
    imagename = str(work / args.case)
    if args.case == "serial":
        from casatasks import tclean

        os.chdir(work)
        with _ProcessPeak() as peak:
            t0 = time.perf_counter()
            summary = tclean(imagename=imagename, **kwargs) or {}
            wall = time.perf_counter() - t0
        return {"case": "serial", "wall_s": wall, "imagename": imagename, "peak_rss_bytes": peak.peak,
                "iterations": int(summary.get("iterdone", 0)), "stop": summary.get("stopDescription")}

    from pclean_provider.compute import open_cluster
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.engine.cube.run import run_cube

    cfg = PcleanConfig.from_flat(imagename=imagename, parallel=True, nworkers=args.workers, **kwargs)
    # As for serial tclean (imported before its clock starts), casatasks is loaded before the clock,
    # here and on the workers: a pipeline's long-lived cluster is warm.
    import casatasks  # noqa: F401
    from casatasks.private.imagerhelpers import input_parameters  # noqa: F401

    t0 = time.perf_counter()
    with open_cluster(ClusterSpec(nworkers=args.workers, local_directory=str(work / "dask"))) as cluster:
        cluster.client.run(_warm_worker)
        started = time.perf_counter() - t0
        before = _worker_rss(cluster.client)
        t1 = time.perf_counter()
        result = run_cube(cfg, client=cluster.client)
        wall = time.perf_counter() - t1
        after = _worker_rss(cluster.client)
    per_worker: dict[str, int] = {}
    for sub in result.subcubes:
        key = f"{sub.host}:{sub.pid}"
        per_worker[key] = max(per_worker.get(key, 0), sub.peak_rss_bytes)
    return {"case": "engine", "wall_s": wall, "cluster_start_and_warm_s": started, "imagename": imagename,
            "iterations": result.iterations, "nsubcubes": result.nsubcubes,
            "subcube_channels": [s.nchan for s in result.subcubes],
            "subcube_seconds": [round(s.seconds, 2) for s in result.subcubes],
            "concat_s": result.concat.seconds if result.concat else None,
            "peak_rss_per_worker_bytes": per_worker,
            "worker_rss_before_bytes": before, "worker_rss_after_bytes": after,
            "estimated_bytes_per_subcube": _estimate(args, result)}


def _estimate(args: argparse.Namespace, result) -> int:
    from pclean_provider.engine.cube.memory import estimate_subcube_bytes

    return max(estimate_subcube_bytes(s.nchan, [args.imsize, args.imsize]) for s in result.subcubes)


def _run_case(args: argparse.Namespace, case: str, vis: str) -> dict:
    out = Path(args.workdir) / f"{case}.json"
    cmd = [sys.executable, "-m", "bench.bench_cube", "--case", case, "--vis", vis, "--result", str(out)]
    for key in ("workdir", "imsize", "cell", "weighting", "niter", "threshold", "workers"):
        cmd += [f"--{key}", str(getattr(args, key))]
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def _fidelity(serial: str, engine: str) -> dict:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from tests.image_compare import beams, frequencies, max_abs_diff_over_peak, pixels

    out = {}
    for suffix in (".image", ".residual", ".psf", ".pb", ".model"):
        if os.path.isdir(serial + suffix) and os.path.isdir(engine + suffix):
            out[f"{suffix}_max_diff_over_peak"] = max_abs_diff_over_peak(engine + suffix, serial + suffix)
    bs, be = np.array(beams(serial + ".image")), np.array(beams(engine + ".image"))
    out["beam_max_rel_diff"] = float(np.max(np.abs(be - bs) / np.abs(bs).clip(1e-9)))
    sw, se = pixels(serial + ".sumwt"), pixels(engine + ".sumwt")
    out["sumwt_max_rel_diff"] = float(np.max(np.abs(se - sw) / np.abs(sw).clip(1e-9)))
    out["frequency_max_abs_diff_hz"] = float(np.max(np.abs(frequencies(engine + ".image")
                                                           - frequencies(serial + ".image"))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nchan", type=int, default=64)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--antennas", type=int, default=12)
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--cell", default="8arcsec")
    p.add_argument("--weighting", default="briggs")
    p.add_argument("--niter", type=int, default=100000, help="large: the run should stop on --threshold")
    p.add_argument("--threshold", default="20mJy")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=str(REPO / "work" / "bench-cube"))
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "cube.json"))
    p.add_argument("--case", choices=["serial", "engine"], help=argparse.SUPPRESS)
    p.add_argument("--vis", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        write_json(Path(args.result), _case(args))
        return 0

    import shutil

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from pclean_provider.casa.runtime import ensure_casa_runtime
    from pclean_provider.casa.simulator import simulate_ms

    ensure_casa_runtime(log_dir=work / "logs", log_name="casa-bench.log")
    t0 = time.perf_counter()
    sim = simulate_ms(work / "cube.ms", antennas=args.antennas, nchan=args.nchan, hours=args.hours, seed=5)
    simulate_s = time.perf_counter() - t0
    load_before = os.getloadavg()
    serial = _run_case(args, "serial", str(sim.ms))
    engine = _run_case(args, "engine", str(sim.ms))
    speedup = serial["wall_s"] / engine["wall_s"] if engine["wall_s"] > 0 else None
    report = {
        "benchmark": "cube sub-cubes on Dask vs serial tclean",
        "command": "python -m bench.bench_cube " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()},
        "ms": {"path": str(sim.ms), "rows": sim.nrows, "nchan": args.nchan, "hours": args.hours,
               "antennas": args.antennas, "simulate_s": simulate_s},
        "imaging": _imaging_kwargs(args, str(sim.ms)),
        "serial": serial,
        "engine": engine,
        "speedup": speedup,
        "fidelity": _fidelity(serial["imagename"], engine["imagename"]),
    }
    write_json(Path(args.output), report)
    print(json.dumps({"speedup": speedup, "serial_s": serial["wall_s"], "engine_s": engine["wall_s"],
                      "serial_peak_rss_mib": serial["peak_rss_bytes"] / 2**20,
                      "engine_peak_rss_per_worker_mib": {k: v / 2**20 for k, v in
                                                         engine["peak_rss_per_worker_bytes"].items()},
                      "fidelity": report["fidelity"], "output": args.output}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
