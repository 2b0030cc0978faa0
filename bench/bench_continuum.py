"""Serial tclean against the row-parallel continuum engine on a row-heavy MeasurementSet.

    python -m bench.bench_continuum [--hours 8 --integration 10 --antennas 16 --workers 2 ...]
                                    [--output bench/results/continuum.json]

A long track with short integrations gives many rows, and a small image with few iterations
keeps the run gridding-dominated - the case row parallelism is for. Each measurement runs in a
fresh process (`--case serial|engine`), so one run's caches and memory do not help the other.
The engine's cluster is started before its clock starts (a nightly pipeline keeps its cluster);
its start-up time is recorded separately. Recorded: wall times, speedup, the share of the
engine's time spent in the serial minor cycle (coordinator), and the fidelity figures
(max |diff| / peak of the images, restoring beams), so a fast wrong answer cannot pass as a win.
Only numbers and paths are written, to a temporary name then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _imaging_kwargs(args: argparse.Namespace, vis: str) -> dict:
    return dict(vis=vis, specmode="mfs", imsize=[args.imsize, args.imsize], cell=args.cell,
                deconvolver=args.deconvolver, nterms=2, weighting=args.weighting, robust=0.5,
                niter=args.niter, threshold=args.threshold)


def _case(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process."""
    from pclean_provider.casa.runtime import ensure_casa_runtime

    work = Path(args.workdir)
    ensure_casa_runtime(log_dir=work / "logs", log_name=f"casa-{args.case}.log")
    kwargs = _imaging_kwargs(args, args.vis)
    imagename = str(work / args.case)
    if args.case == "serial":
        from casatasks import tclean

        t0 = time.perf_counter()
        summary = tclean(imagename=imagename, **kwargs) or {}
        return {"case": "serial", "wall_s": time.perf_counter() - t0, "imagename": imagename,
                "iterations": int(summary.get("iterdone", 0))}

    from pclean_provider.compute import open_cluster
    from pclean_provider.config import ClusterSpec, PcleanConfig
    from pclean_provider.engine.continuum import run_continuum

    cfg = PcleanConfig.from_flat(imagename=imagename, **kwargs)
    t0 = time.perf_counter()
    with open_cluster(ClusterSpec(nworkers=args.workers, local_directory=str(work / "dask"))) as cluster:
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_continuum(cfg, cluster.client)
        wall = time.perf_counter() - t1
    return {"case": "engine", "wall_s": wall, "cluster_start_s": started, "imagename": imagename,
            "iterations": result.iterations, "nparts": result.nparts, "major_cycles": result.major_cycles,
            "minor_cycle_s": result.minor_cycle_s, "major_cycle_s": result.major_cycle_s,
            "setup_s": result.setup_s, "psf_s": result.psf_s, "restore_s": result.restore_s,
            "engine_elapsed_s": result.elapsed_s}


def _run_case(args: argparse.Namespace, case: str, vis: str) -> dict:
    out = Path(args.workdir) / f"{case}.json"
    cmd = [sys.executable, "-m", "bench.bench_continuum", "--case", case, "--vis", vis, "--result", str(out)]
    for key in ("workdir", "imsize", "cell", "deconvolver", "weighting", "niter", "threshold", "workers"):
        cmd += [f"--{key}", str(getattr(args, key))]
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def _fidelity(serial: str, engine: str, deconvolver: str) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.image_compare import beams, max_abs_diff_over_peak

    tt = ".tt0" if deconvolver == "mtmfs" else ""
    return {"image_max_diff_over_peak": max_abs_diff_over_peak(engine + ".image" + tt, serial + ".image" + tt),
            "residual_max_diff_over_peak": max_abs_diff_over_peak(engine + ".residual" + tt,
                                                                  serial + ".residual" + tt),
            "beam_serial": beams(serial + ".image" + tt), "beam_engine": beams(engine + ".image" + tt)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=8.0, help="track length (more rows)")
    p.add_argument("--integration", type=float, default=10.0, help="seconds per integration (more rows)")
    p.add_argument("--antennas", type=int, default=16)
    p.add_argument("--nchan", type=int, default=16, help="channels per spw")
    p.add_argument("--nspw", type=int, default=2)
    p.add_argument("--imsize", type=int, default=128)
    p.add_argument("--cell", default="8arcsec")
    p.add_argument("--deconvolver", default="mtmfs")
    p.add_argument("--weighting", default="briggs")
    p.add_argument("--niter", type=int, default=200)
    p.add_argument("--threshold", default="5mJy")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=str(REPO / "work" / "bench-continuum"))
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "continuum.json"))
    p.add_argument("--case", choices=["serial", "engine"], help=argparse.SUPPRESS)
    p.add_argument("--vis", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        _write_json(Path(args.result), _case(args))
        return 0

    import shutil

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from pclean_provider.casa.runtime import ensure_casa_runtime
    from pclean_provider.casa.simulator import simulate_ms

    ensure_casa_runtime(log_dir=work / "logs", log_name="casa-bench.log")
    t0 = time.perf_counter()
    sim = simulate_ms(work / "rowheavy.ms", antennas=args.antennas, nchan=args.nchan, nspw=args.nspw,
                      hours=args.hours, integration_s=args.integration, seed=5)
    simulate_s = time.perf_counter() - t0
    serial = _run_case(args, "serial", str(sim.ms))
    engine = _run_case(args, "engine", str(sim.ms))
    speedup = serial["wall_s"] / engine["wall_s"] if engine["wall_s"] > 0 else None
    report = {
        "benchmark": "continuum row-parallel vs serial tclean",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "ms": {"path": str(sim.ms), "rows": sim.nrows, "hours": args.hours, "integration_s": args.integration,
               "antennas": args.antennas, "nspw": args.nspw, "nchan": args.nchan, "simulate_s": simulate_s},
        "imaging": _imaging_kwargs(args, str(sim.ms)),
        "serial": serial,
        "engine": engine,
        "speedup": speedup,
        "minor_cycle_share": engine["minor_cycle_s"] / engine["wall_s"] if engine["wall_s"] > 0 else None,
        "fidelity": _fidelity(serial["imagename"], engine["imagename"], args.deconvolver),
    }
    _write_json(Path(args.output), report)
    print(json.dumps({k: report[k] for k in ("speedup", "minor_cycle_share")}
                     | {"serial_s": serial["wall_s"], "engine_s": engine["wall_s"], "rows": sim.nrows,
                        "output": args.output}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
