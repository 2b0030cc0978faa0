"""Serial tclean against the row-parallel continuum engine on row-heavy MeasurementSets.

    python -m bench.bench_continuum [--shapes a,b] [--deconvolvers hogbom,mtmfs] [--workers 1,2]
                                    [--output bench/results/continuum.json]
    python -m bench.bench_continuum --quick      # a tiny MS, a few seconds per case: checks the harness

Two shapes, so a result is not an accident of one layout (`SHAPES`): a long track with short
integrations gives many rows, and a small image with few iterations keeps the run
gridding-dominated - the case row parallelism is for. Each measurement runs in a fresh process
(`--case serial|engine`), so one run's caches and memory do not help the other, and its whole
process tree is sampled for peak RSS (bench/treemem.py): the serial process, and each Dask
worker of the engine. The engine's cluster is started before its clock starts (a nightly
pipeline keeps its cluster); its start-up time is recorded separately. Recorded per case: wall
time, speedup, the engine's stage table (engine/continuum/stages.py; `stages` summed by kind
and `stage_list` as they happened), and the fidelity figures (max |diff| / peak of the images,
restoring beams), so a fast wrong answer cannot pass as a win.
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
from typing import Any

from bench.json_files import write_json

REPO = Path(__file__).resolve().parents[1]

# Two row-heavy layouts that differ in antennas, spws and integration (rows ~ baselines x dumps).
SHAPES = {
    "a": dict(antennas=16, nspw=2, nchan=16, hours=8.0, integration_s=10.0),
    "b": dict(antennas=10, nspw=4, nchan=8, hours=12.0, integration_s=4.0),
    # Seconds per case: only to check the harness end to end.
    "quick": dict(antennas=6, nspw=2, nchan=4, hours=0.5, integration_s=60.0),
}


MS_CACHE = "ms-cache"
SEED = 5


def _simulated(cache: Path, shape: str, simulate_ms) -> tuple[Any, bool]:
    """The shape's MS from the cache when it was made with these very parameters, else made now.

    A marker written after the simulator finished (temp name, then rename) records the
    parameters; a missing or different marker means the MS is made again from scratch.
    """
    from types import SimpleNamespace

    wanted = {"shape": shape, "seed": SEED, **SHAPES[shape]}
    ms = cache / f"rowheavy-{shape}.ms"
    marker = cache / f"rowheavy-{shape}.params.json"
    if ms.is_dir() and marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("params") == wanted:
            return SimpleNamespace(ms=ms, nrows=done["nrows"]), True
    marker.unlink(missing_ok=True)
    sim = simulate_ms(ms, **SHAPES[shape], seed=SEED, overwrite=True)
    write_json(marker, {"params": wanted, "nrows": sim.nrows})
    return sim, False


def _imaging_kwargs(args: argparse.Namespace, vis: str, deconvolver: str) -> dict:
    return dict(vis=vis, specmode="mfs", imsize=[args.imsize, args.imsize], cell=args.cell,
                deconvolver=deconvolver, nterms=2, weighting=args.weighting, robust=0.5,
                niter=args.niter, threshold=args.threshold)


def _load_casatools() -> None:
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime()


def _case(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process."""
    from pclean_provider.casa.runtime import ensure_casa_runtime

    work = Path(args.workdir)
    ensure_casa_runtime(log_dir=work / "logs", log_name=f"casa-{args.name}.log")
    kwargs = _imaging_kwargs(args, args.vis, args.deconvolver)
    imagename = str(work / args.name)
    if args.case == "serial":
        from casatasks import tclean

        t0 = time.perf_counter()
        summary = tclean(imagename=imagename, **kwargs) or {}
        return {"case": "serial", "wall_s": time.perf_counter() - t0, "imagename": imagename,
                "iterations": int(summary.get("iterdone", 0))}

    from pclean_provider.compute import open_cluster
    from pclean_provider.config import ClusterSpec, PcleanConfig
    from pclean_provider.engine.continuum.run import run_continuum
    from pclean_provider.engine.continuum.stages import summed

    cfg = PcleanConfig.from_flat(imagename=imagename, **kwargs)
    t0 = time.perf_counter()
    with open_cluster(ClusterSpec(nworkers=args.workers, local_directory=str(work / "dask"))) as cluster:
        # CASA is loaded before serial tclean's clock starts (casatools and casatasks, which
        # tclean needs); the workers load casatools, all a continuum part needs, before the
        # engine's, so both sides leave the import out alike. It is counted in the cluster
        # start, as a kept cluster (a nightly run's) pays it once.
        cluster.client.run(_load_casatools)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_continuum(cfg, cluster.client, cluster_start_s=started)
        wall = time.perf_counter() - t1
    return {"case": "engine", "workers": args.workers, "wall_s": wall, "cluster_start_s": started,
            "imagename": imagename, "iterations": result.iterations, "nparts": result.nparts,
            "major_cycles": result.major_cycles, "minor_cycle_s": result.minor_cycle_s,
            "major_cycle_s": result.major_cycle_s, "setup_s": result.setup_s, "psf_s": result.psf_s,
            "restore_s": result.restore_s, "engine_elapsed_s": result.elapsed_s,
            "stages": summed(result.stages),
            "stage_list": [s.model_dump(mode="json") for s in result.stages]}


def _run_case(args: argparse.Namespace, case: str, vis: str, deconvolver: str, workers: int, name: str) -> dict:
    """One case in a fresh process, its tree's memory sampled while it runs."""
    sys.path.insert(0, str(REPO))
    from bench.treemem import TreeMemorySampler, worker_peak_bytes

    out = Path(args.workdir) / f"{name}.json"
    cmd = [sys.executable, "-m", "bench.bench_continuum", "--case", case, "--vis", vis, "--result", str(out),
           "--name", name, "--deconvolver", deconvolver, "--workers", str(workers)]
    for key in ("workdir", "imsize", "cell", "weighting", "niter", "threshold"):
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.Popen(cmd, cwd=REPO)
    with TreeMemorySampler(proc.pid) as sampler:
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"bench case {name} exited with code {rc}: {' '.join(cmd)}")
    result = json.loads(out.read_text(encoding="utf-8"))
    mem = sampler.summary()
    result["peak_tree_rss_bytes"] = mem["peak_tree_rss_bytes"]
    # Serial tclean is one process; the engine's figure is its largest worker (the client
    # process holds the coordinator's images only, and is kept in the tree figure).
    result["peak_rss_bytes"] = (mem["peak_process_rss_bytes"] if case == "serial"
                                else worker_peak_bytes(mem, proc.pid))
    result["peak_client_rss_bytes"] = next((p["peak_rss_bytes"] for p in mem["processes"]
                                            if p["pid"] == proc.pid), 0)
    return result


def _fidelity(serial: str, engine: str, deconvolver: str) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.image_compare import beams, max_abs_diff_over_peak

    tt = ".image.tt0" if deconvolver == "mtmfs" else ".image"
    rt = ".residual.tt0" if deconvolver == "mtmfs" else ".residual"
    return {"image_max_diff_over_peak": max_abs_diff_over_peak(engine + tt, serial + tt),
            "residual_max_diff_over_peak": max_abs_diff_over_peak(engine + rt, serial + rt),
            "beam_serial": beams(serial + tt), "beam_engine": beams(engine + tt)}


def _stage_line(case: dict) -> str:
    return ", ".join(f"{r['stage']} {r['seconds']:.2f}" for r in case.get("stages", []))


def stage_markdown(report: dict) -> str:
    """The totals and the engine's stages of every case as markdown tables, for bench/RESULTS.md."""
    machine = report["machine"]
    ceiling = ""
    for when in ("before", "after"):
        probe = machine.get(f"parallel_ceiling_{when}")
        if probe:
            ceiling += (f" Two processes at once gave {probe['two_process_throughput']:.2f}x one alone "
                        f"{when} the cases (bench/parallel_ceiling.py).")
    out = [f"Load average at start: {machine.get('load_average_1min_at_start', 0):.2f}; "
           f"{machine.get('cpus')} CPUs; imaging {report['imaging']}.{ceiling}", ""]
    for shape, entry in report["shapes"].items():
        ms = entry["ms"]
        out.append(f"### Shape {shape}: {ms['antennas']} antennas, {ms['nspw']} spw x {ms['nchan']} channels, "
                   f"{ms['hours']} h at {ms['integration_s']} s, {ms['rows']:,} rows")
        for deconvolver, runs in entry["runs"].items():
            serial = runs["serial"]
            engines = [(k, v) for k, v in runs.items() if k != "serial"]
            out += ["", f"{deconvolver}: serial tclean {serial['wall_s']:.1f} s, "
                        f"{serial['peak_rss_bytes'] / 2**20:,.0f} MiB, {serial['iterations']} iterations", "",
                    "| case | wall s | speedup | worker RSS MiB | iterations | image diff / peak |",
                    "|---|---|---|---|---|---|"]
            for key, e in engines:
                out.append(f"| {key.replace('engine_', '')} worker(s) | {e['wall_s']:.1f} | {e['speedup']:.2f}x | "
                           f"{e['peak_rss_bytes'] / 2**20:,.0f} | {e['iterations']} | "
                           f"{e['fidelity']['image_max_diff_over_peak']:.1e} |")
            names = []
            for _, e in engines:
                names += [r["stage"] for r in e["stages"] if r["stage"] not in names]
            out += ["", "| stage (s, count) | " + " | ".join(f"{k.replace('engine_', '')} worker(s)"
                                                            for k, _ in engines) + " |",
                    "|---" * (len(engines) + 1) + "|"]
            for name in names:
                cells = []
                for _, e in engines:
                    row = next((r for r in e["stages"] if r["stage"] == name), None)
                    cells.append("" if row is None else f"{row['seconds']:.2f} ({row['count']})")
                out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="a,b", help=f"comma-separated, of {sorted(SHAPES)}")
    p.add_argument("--quick", action="store_true", help="the tiny 'quick' shape, 64 px, 1 and 2 workers")
    p.add_argument("--deconvolvers", default="hogbom,mtmfs")
    p.add_argument("--workers", default="1,2", help="engine cases, comma-separated worker counts")
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--cell", default="8arcsec")
    p.add_argument("--weighting", default="briggs")
    p.add_argument("--niter", type=int, default=200)
    p.add_argument("--threshold", default="5mJy")
    p.add_argument("--workdir", default=str(REPO / "work" / "bench-continuum"))
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "continuum.json"))
    p.add_argument("--case", choices=["serial", "engine"], help=argparse.SUPPRESS)
    p.add_argument("--vis", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--deconvolver", default="hogbom", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        args.workers = int(args.workers)
        write_json(Path(args.result), _case(args))
        return 0
    if args.quick:
        args.shapes, args.imsize = "quick", 64
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"--shapes: unknown {unknown}; choose from {sorted(SHAPES)}")
    workers = [int(w) for w in args.workers.split(",")]
    deconvolvers = [d.strip() for d in args.deconvolvers.split(",") if d.strip()]

    import shutil

    work = Path(args.workdir)
    # Earlier runs' images go; the simulated MSs are kept (shape b takes 8.5 minutes to make).
    if work.is_dir():
        for old in work.iterdir():
            if old.name != MS_CACHE:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    work.mkdir(parents=True, exist_ok=True)
    from bench import parallel_ceiling
    from pclean_provider.casa.runtime import ensure_casa_runtime
    from pclean_provider.casa.simulator import simulate_ms

    ensure_casa_runtime(log_dir=work / "logs", log_name="casa-bench.log")
    load = os.getloadavg()[0]
    report = {"benchmark": "continuum row-parallel vs serial tclean",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "load_average_1min_at_start": load,
                          # what the two CPUs give together right now: the ceiling of every ratio below
                          "parallel_ceiling_before": parallel_ceiling.measure()},
              "imaging": {k: v for k, v in _imaging_kwargs(args, "", "").items() if k not in ("vis", "deconvolver")},
              "shapes": {}}
    summary = []
    for shape in shapes:
        t0 = time.perf_counter()
        sim, reused = _simulated(work / MS_CACHE, shape, simulate_ms)
        entry = {"ms": {"path": str(sim.ms), "rows": sim.nrows, **SHAPES[shape], "reused": reused,
                        "simulate_s": time.perf_counter() - t0}, "runs": {}}
        report["shapes"][shape] = entry
        for deconvolver in deconvolvers:
            serial = _run_case(args, "serial", str(sim.ms), deconvolver, 1, f"{shape}-{deconvolver}-serial")
            runs = {"serial": serial}
            for w in workers:
                eng = _run_case(args, "engine", str(sim.ms), deconvolver, w, f"{shape}-{deconvolver}-w{w}")
                eng["speedup"] = serial["wall_s"] / eng["wall_s"] if eng["wall_s"] > 0 else None
                eng["minor_cycle_share"] = eng["minor_cycle_s"] / eng["wall_s"] if eng["wall_s"] > 0 else None
                eng["fidelity"] = _fidelity(serial["imagename"], eng["imagename"], deconvolver)
                runs[f"engine_{w}"] = eng
                summary.append({"shape": shape, "deconvolver": deconvolver, "workers": w,
                                "serial_s": round(serial["wall_s"], 2), "engine_s": round(eng["wall_s"], 2),
                                "speedup": round(eng["speedup"], 3),
                                "worker_rss_mib": round(eng["peak_rss_bytes"] / 2**20),
                                "serial_rss_mib": round(serial["peak_rss_bytes"] / 2**20),
                                "image_diff": eng["fidelity"]["image_max_diff_over_peak"],
                                "stages": _stage_line(eng)})
            entry["runs"][deconvolver] = runs
            write_json(Path(args.output), report)  # partial results survive a later failure
    report["summary"] = summary
    report["machine"]["parallel_ceiling_after"] = parallel_ceiling.measure()
    write_json(Path(args.output), report)
    markdown = Path(args.output).with_suffix(".md")
    tmp = markdown.with_name(f"{markdown.name}.tmp-{os.getpid()}")
    tmp.write_text(stage_markdown(report), encoding="utf-8")
    os.replace(tmp, markdown)
    print(json.dumps({"output": args.output, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
