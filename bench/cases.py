"""One measured case, run in a fresh process: `python -m bench.cases CASE.json RESULT.json`.

A fresh process per case keeps one case's memory (casatools caches, a Dask cluster) out of the
next one's figures; the parent samples this process's whole tree while it runs. The case writes
only numbers and paths (never pixels) to RESULT.json, under a temporary name then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from bench.json_files import write_json

REPO = Path(__file__).resolve().parents[1]


def case_tclean(case: dict) -> dict:
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime(log_dir=case["case_dir"])
    import casatasks

    t0 = time.perf_counter()
    summary = casatasks.tclean(vis=case["vis"], imagename=case["imagename"], **case["params"])
    seconds = time.perf_counter() - t0
    out = {"engine_s": seconds, "stages": {"tclean": seconds}}
    if isinstance(summary, dict):
        out["iterations"] = int(summary.get("iterdone", 0) or 0)
        out["major_cycles"] = int(summary.get("nmajordone", 0) or 0)
    return out


def case_pclean(case: dict) -> dict:
    """This project's engine through its public entry (`run(cfg, client)` is what `pclean()` calls),
    with the cluster opened here so that its start-up is a stage of its own."""
    import contextlib

    from pclean_provider.casa.runtime import ensure_casa_runtime
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    ensure_casa_runtime(log_dir=case["case_dir"])
    flat = {**case["params"], "vis": case["vis"], "imagename": case["imagename"], **case.get("extras", {})}
    cfg = PcleanConfig.from_flat(flat)
    stages: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        client = None
        if cfg.extras.parallel:
            from pclean_provider.compute import open_cluster

            t = time.perf_counter()
            client = stack.enter_context(open_cluster(cfg.cluster)).client
            stages["cluster start"] = time.perf_counter() - t
        t = time.perf_counter()
        result = run(cfg, client=client)
        engine_s = time.perf_counter() - t
        t = time.perf_counter()
    stop_s = time.perf_counter() - t if cfg.extras.parallel else 0.0
    data = result.model_dump(mode="json")
    if data.get("concat"):
        concat_s = float(data["concat"]["seconds"])
        stages["sub-cube imaging"] = max(engine_s - concat_s, 0.0)
        stages["concatenation"] = concat_s
        sub = data.get("subcubes") or []
        data["subcube_seconds"] = [s["seconds"] for s in sub]
        data["subcube_nchan"] = [s["nchan"] for s in sub]
        data["subcube_peak_rss_bytes"] = [s["peak_rss_bytes"] for s in sub]
        # Per-sub-cube detail is summarised above; the full list would bloat results.json.
        data.pop("subcubes", None)
    elif data.get("continuum"):
        c = data["continuum"]
        named = {"set-up and weighting": c.get("setup_s", 0.0), "PSF": c.get("psf_s", 0.0),
                 "major cycles": c.get("major_cycle_s", 0.0), "minor cycles (serial)": c.get("minor_cycle_s", 0.0),
                 "restore": c.get("restore_s", 0.0)}
        stages.update(named)
        stages["other"] = max(engine_s - sum(named.values()), 0.0)
        data["minor_cycle_share"] = (c.get("minor_cycle_s", 0.0) / engine_s) if engine_s > 0 else None
        c.pop("cycles", None)
    stages["cluster stop"] = stop_s  # last, so the stage plot reads left to right in time
    return {"engine_s": engine_s, "stages": stages, "pclean_result": data,
            "iterations": data.get("iterations"), "products": data.get("products")}


def _make_planes(casatools, folder: Path, planes: int, imsize: int, f0: float, df: float) -> list[str]:
    """Single-plane images with consecutive frequencies and a per-plane beam, as sub-cubes have."""
    ia = casatools.image()
    paths = []
    try:
        ia.fromshape(str(folder / "template.im"), [imsize, imsize, 1, 1], overwrite=True)
        csys = ia.coordsys()
        ia.close()
        rec = csys.torecord()
        csys.done()
        key = next(k for k in rec if k.startswith("spectral"))
        for i in range(planes):
            rec[key]["wcs"]["crval"] = f0 + i * df
            rec[key]["wcs"]["cdelt"] = df
            rec[key]["wcs"]["crpix"] = 0.0
            path = str(folder / f"plane{i:05d}.im")
            ia.fromshape(path, [imsize, imsize, 1, 1], csys=rec, overwrite=True)
            ia.set(float(i))
            ia.setrestoringbeam(major=f"{30 + 0.01 * i}arcsec", minor="25arcsec", pa="10deg")
            ia.close()
            paths.append(path)
    finally:
        ia.done()
    shutil.rmtree(folder / "template.im", ignore_errors=True)
    return paths


def case_concat(case: dict) -> dict:
    """Concatenation time per plane through the engine's own concatenation (casa.image_concat)."""
    from pclean_provider.casa.image_concat import concat_images
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime(log_dir=case["case_dir"])
    import casatools

    work = Path(case["case_dir"]) / "planes"
    out: dict = {"modes": {}, "planes": case["planes"], "imsize": case["imsize"]}
    stages: dict[str, float] = {}
    for mode in case["modes"]:
        folder = work / mode
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t = time.perf_counter()
        parts = _make_planes(casatools, folder, case["planes"], case["imsize"], 1.4e9, 1e6)
        make_s = time.perf_counter() - t
        t = time.perf_counter()
        concat_images(parts, str(folder / "cube.image"), mode)
        seconds = time.perf_counter() - t
        out["modes"][mode] = {"seconds": seconds, "per_plane_s": seconds / case["planes"], "make_planes_s": make_s}
        stages[f"concat {mode}"] = seconds
        shutil.rmtree(folder, ignore_errors=True)
    out["stages"] = stages
    out["engine_s"] = sum(stages.values())
    return out


def case_simulate(case: dict) -> dict:
    """Make a MeasurementSet here, not in the orchestrator: the simulator's log stays in this case's folder."""
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime(log_dir=case["case_dir"])
    from pclean_provider.casa.simulator import simulate_ms

    t = time.perf_counter()
    sim = simulate_ms(case["ms"], **case["spec"], overwrite=True)
    seconds = time.perf_counter() - t
    return {"engine_s": seconds, "stages": {"simulate": seconds}, "sim": sim.model_dump(mode="json")}


CASES = {"simulate": case_simulate, "tclean": case_tclean, "pclean": case_pclean, "concat": case_concat}


def main(argv: list[str]) -> int:
    case_file, result_file = argv[1], argv[2]
    case = json.loads(Path(case_file).read_text())
    os.chdir(case["case_dir"])  # CASA writes stray files into the working directory
    t0 = time.perf_counter()
    try:
        data = CASES[case["kind"]](case)
        data["ok"] = True
    except BaseException as err:  # the parent reports the failure; it must not lose the figures
        data = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}
    data["wall_s"] = time.perf_counter() - t0
    write_json(result_file, data)
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv))
