"""``pclean plan``: the imaging plan of MeasurementSets, derived from the data.

    pclean plan night.ms                                  # the packaged cube template's policy
    pclean plan night.ms --template nightly_continuum_imaging --json
    pclean plan night.ms --set weighting=uniform --set cell=0.2arcsec --policy-set pixels_per_beam=4

Prints one table per MS (targets, their fields, spws, cell, size, gridder, beam), then each
target's decisions with their reasons, and the targets skipped and why. ``--json`` prints the
plans as JSON instead; ``--out`` also writes them to a file; ``--result-file`` writes the step's
result (``step_results``: the exit status, and the plans and per-MS errors as its payload), which
is what the pipeline's plan task reads.

Exit codes: ``exit_codes.PlanExit`` (0 planned, an MS with nothing to image being a plan whose
targets were all skipped; 2 bad arguments or template; 3 an MS could not be planned, the reason
printed and, with ``--out``, recorded per MS, the other MSs still planned).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from pclean_provider.atomic_files import write_json
from pclean_provider.config import ConfigError
from pclean_provider.config.plan_policy import PlanPolicy
from pclean_provider.errors import PcleanInputError
from pclean_provider.exit_codes import PlanExit
from pclean_provider.step_results import finish

DEFAULT_TEMPLATE = "nightly_cube_imaging"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclean plan",
        description="Derive the imaging plan of MeasurementSets: targets (science sources by intent, mosaics), "
        "cell from the weighted uv coverage, image size from the primary beam, gridder and stopping, each "
        "decision with its reason.")
    p.add_argument("vis", nargs="+", help="MeasurementSet(s) to plan")
    p.add_argument("--template", default=None, help="pipeline template whose preset, overrides and plan policy "
                   f"apply: a dag_id of the installed templates or a YAML path (default {DEFAULT_TEMPLATE})")
    p.add_argument("--preset", default=None, help="an imaging preset instead of the template's")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="pin a tclean parameter (YAML value), e.g. --set cell=0.5arcsec --set specmode=mfs")
    p.add_argument("--policy-set", dest="policy_sets", action="append", default=[], metavar="NAME=VALUE",
                   help="change a plan policy field, e.g. --policy-set pixels_per_beam=4")
    p.add_argument("--request", help="JSON file {presets, overrides, policy} (what the pipeline passes; "
                   "replaces --template, --preset and --set)")
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.add_argument("--out", help="also write the plans as JSON to this file")
    p.add_argument("--result-file", help="write the step's result (exit status, plans and errors) here as JSON, "
                   "atomically (what the Airflow task reads)")
    return p


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what} {item!r}: write NAME=VALUE")
        out[name.strip()] = yaml.safe_load(value)
    return out


def _request(args) -> dict[str, Any]:
    if args.request:
        data = json.loads(Path(args.request).read_text())
        return {"presets": list(data.get("presets") or []), "overrides": dict(data.get("overrides") or {}),
                "policy": dict(data.get("policy") or {})}
    # Not at the top: the templates load numpy (see main).
    from pclean_provider.pipeline.pipeline_template import load_template, load_templates

    name = args.template or DEFAULT_TEMPLATE
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        template = load_template(path)
    else:
        found = {t.dag_id: t for t in load_templates()}
        if name not in found:
            raise ValueError(f"--template {name!r} is neither a YAML file nor an installed template "
                             f"({', '.join(sorted(found))})")
        template = found[name]
    preset = args.preset or template.preset
    policy = {**template.plan.model_dump(), **_pairs(args.policy_sets, "--policy-set")}
    return {"presets": [preset] if preset else [], "overrides": {**template.overrides, **_pairs(args.sets, "--set")},
            "policy": policy}


def format_plan(plan) -> str:
    lines = [f"{plan.ms}  ({plan.telescope}, {plan.kind}; planned in {plan.seconds:.1f} s)"]
    header = ("target", "fields", "spw", "cell", "imsize", "gridder", "beam (\")", "PB FWHM (\")")
    rows = []
    for t in plan.targets:
        p = t.parameters
        beam = t.beam_estimate_arcsec
        rows.append((t.label, p.get("field", ""), str(p.get("spw", "")), str(p.get("cell", "")),
                     "x".join(map(str, p.get("imsize", []))), str(p.get("gridder", "")),
                     f"{beam[0]:.3g} x {beam[1]:.3g}" if beam else "-",
                     f"{t.pb_fwhm_arcsec:.4g}" if t.pb_fwhm_arcsec else "-"))
    if rows:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    else:
        lines.append("  no target to image")
    for t in plan.targets:
        lines.append(f"  {t.label}:")
        for d in t.decisions:
            lines.append(f"    {d.name:<12} {json.dumps(d.value):<40} [{d.source}] {d.reason}")
    for s in plan.skipped:
        lines.append(f"  skipped {s.label}: {s.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # After the arguments are read: the planner loads numpy (`pclean plan --help` stays quick).
    from pclean_provider.engine.imaging_plan import PlanError, plan_imaging

    try:
        request = _request(args)
        policy = PlanPolicy.model_validate(request["policy"])
    except (OSError, ValueError) as exc:
        print(f"pclean plan: {exc}", file=sys.stderr)
        return finish(args.result_file, "plan", PlanExit.BAD_INPUT, message=str(exc))
    plans, errors = [], []
    for vis in args.vis:
        try:
            plan = plan_imaging(vis, overrides=request["overrides"], presets=request["presets"], policy=policy)
        except ConfigError as exc:
            print(f"pclean plan: {exc}", file=sys.stderr)
            return finish(args.result_file, "plan", PlanExit.BAD_INPUT, message=str(exc))
        except (PcleanInputError, PlanError) as exc:
            print(f"pclean plan: {vis}: {exc}", file=sys.stderr)
            errors.append({"vis": str(Path(vis).resolve()), "error": str(exc)})
            continue
        plans.append(plan)
        if not args.json:
            print(format_plan(plan))
    result = {"plans": [p.model_dump(mode="json") for p in plans], "errors": errors}
    if args.json:
        print(json.dumps(result["plans"][0] if len(args.vis) == 1 and plans else result, indent=2))
    if args.out:
        write_json(args.out, result, indent=2)
    if errors:
        unplanned = "; ".join(f"{e['vis']}: {e['error']}" for e in errors)
        return finish(args.result_file, "plan", PlanExit.UNPLANNED, result, f"could not be planned: {unplanned}")
    return finish(args.result_file, "plan", PlanExit.OK, result)
