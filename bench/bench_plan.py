"""What the imaging plan costs, and how close its beam is to the one tclean fits, on row-heavy MSs.

    python -m bench.bench_plan [--shapes a,b] [--output bench/results/plan.json]
    python -m bench.bench_plan --shapes quick      # seconds: checks the harness

For each shape (the continuum bench's row-heavy layouts, so the figures sit beside its MSs) it
measures, each in a fresh process: ``pclean plan`` as a user runs it (interpreter, CASA import,
the MS read and the plan), the plan call alone, and the alternative a planner could use, a PSF made
by tclean (niter=0, the plan's own cell and size, mfs), whose fitted beam is the reference for the
plan's estimate. Only numbers and paths are written, to a temporary name then renamed.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_continuum import SHAPES  # noqa: E402 - after the path set-up

WEIGHTINGS = ("natural", "briggs", "uniform")

_PLAN_CALL = r"""
import json, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime
ensure_casa_runtime()
import casatools  # noqa: F401 - imported before the clock: a pipeline's plan step pays it once
from pclean_provider.engine.imaging_plan import plan_imaging
vis, weighting = sys.argv[1], sys.argv[2]
t = time.monotonic()
plan = plan_imaging(vis, overrides={"specmode": "mfs", "weighting": weighting, "robust": 0.5})
took = time.monotonic() - t
t0 = plan.targets[0]
print(json.dumps({"seconds": took, "beam": t0.beam_estimate_arcsec, "parameters": t0.parameters,
                  "uv_points": t0.decision("beam").inputs["uv_points"]}))
"""

_PSF_CALL = r"""
import json, sys, time
from pclean_provider.casa.runtime import ensure_casa_runtime, import_casatasks
ensure_casa_runtime()
casatasks = import_casatasks()
import casatools
vis, weighting, image, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t = time.monotonic()
casatasks.tclean(vis=vis, imagename=image, specmode="mfs", weighting=weighting, robust=0.5, niter=0,
                 cell=params["cell"], imsize=params["imsize"], gridder="standard", calcres=False,
                 restoration=False, pbcor=False)
took = time.monotonic() - t
ia = casatools.image()
ia.open(image + ".psf")
rb = ia.restoringbeam()
ia.close()
print(json.dumps({"seconds": took, "beam": [rb["major"]["value"], rb["minor"]["value"], rb["positionangle"]["value"]]}))
"""


def _run(code: list[str], cwd: Path, parse: bool = True) -> tuple[dict[str, Any], float]:
    start = time.monotonic()
    proc = subprocess.run(code, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    if not parse:
        return {}, wall
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]), wall


def make_ms(shape: str, work: Path) -> tuple[Path, int]:
    from pclean_provider.casa.runtime import ensure_casa_runtime
    from pclean_provider.casa.simulator import simulate_ms

    ensure_casa_runtime()
    ms = work / f"plan-{shape}.ms"
    if not ms.exists():
        simulate_ms(ms, seed=42, **SHAPES[shape])
    import casatools

    tb = casatools.table()
    tb.open(str(ms))
    rows = int(tb.nrows())
    tb.close()
    return ms, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="a,b")
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "plan.json"))
    p.add_argument("--work", default=str(REPO / "work" / "bench" / "plan"))
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": "python -m bench.bench_plan " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "load_at_start": os.getloadavg()[0], "shapes": {}}
    for shape in args.shapes.split(","):
        ms, rows = make_ms(shape, work)
        entry: dict[str, Any] = {"ms": str(ms), "rows": rows, "layout": SHAPES[shape], "cases": {}}
        cli, cli_wall = _run([sys.executable, "-m", "pclean_provider.cli.main", "plan", str(ms), "--json"], work,
                              parse=False)
        entry["cli_wall_s"] = cli_wall
        for weighting in WEIGHTINGS:
            planned, _ = _run([sys.executable, "-c", _PLAN_CALL, str(ms), weighting], work)
            image = work / f"psf-{shape}-{weighting}"
            for suffix in (".psf", ".sumwt", ".weight", ".pb", ".image", ".residual", ".model"):
                subprocess.run(["rm", "-rf", str(image) + suffix], check=False)
            psf, _ = _run([sys.executable, "-c", _PSF_CALL, str(ms), weighting, str(image),
                           json.dumps(planned["parameters"])], work)
            entry["cases"][weighting] = {"plan": planned, "tclean_psf": psf}
            print(f"{shape} {weighting}: plan {planned['seconds']:.2f} s, beam {planned['beam']}; "
                  f"tclean psf {psf['seconds']:.2f} s, beam {[round(b, 3) for b in psf['beam']]}", flush=True)
        results["shapes"][shape] = entry
    results["load_at_end"] = os.getloadavg()[0]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Command: `{results['command']}`; load average {results['load_at_start']:.2f} at start, "
             f"{results['load_at_end']:.2f} at end.", "",
             "| MS | rows | `pclean plan` whole process s | weighting | plan call s | uv points | plan beam \" | "
             "tclean PSF s | tclean beam \" | minor axis: plan / tclean |", "|---|---|---|---|---|---|---|---|---|---|"]
    for shape, e in results["shapes"].items():
        for weighting, c in e["cases"].items():
            pb, tb = c["plan"]["beam"], c["tclean_psf"]["beam"]
            lines.append(f"| {shape} | {e['rows']:,} | {e['cli_wall_s']:.1f} | {weighting} | {c['plan']['seconds']:.2f} | "
                         f"{c['plan']['uv_points']:,} | {pb[0]:.2f} x {pb[1]:.2f} | {c['tclean_psf']['seconds']:.1f} | "
                         f"{tb[0]:.2f} x {tb[1]:.2f} | {pb[1] / tb[1]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
