"""``pclean qa``: metrics, scores and the qa.json / qa.html reports of one imaging product.

qa.json and qa.html are for people and the archive; ``--result-file`` writes the step's result
(``step_results``: the exit status, and the score, band, gate and report files as its payload),
which is what the Airflow qa task reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pclean_provider.exit_codes import QaExit
from pclean_provider.pipeline.qa_models import QaThresholds
from pclean_provider.step_results import finish


def _load_mapping(path: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"pclean qa: {what}={path} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise SystemExit(f"pclean qa: {what}={path} must hold a mapping (JSON object / YAML dict)")
    return data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclean qa",
        description="QA metrics, scores and reports for an imaging product.",
        epilog=f"Exit status: {QaExit.OK} when the reports are written (also for an empty product, which scores 0 "
        f"and goes to review), {QaExit.REVIEW} with --exit-on-review when the gate says review, "
        f"{QaExit.BAD_INPUT} when the input is wrong.",
    )
    p.add_argument("--image", required=True, help="imagename prefix as given to tclean/pclean (or its .image)")
    p.add_argument("--kind", choices=("cube", "mfs"), required=True, help="cube or mfs (continuum) product")
    p.add_argument("--out", required=True, help="folder for qa.json, qa.schema.json and qa.html")
    p.add_argument("--truth", help="simulator truth JSON: recovered flux and position of each source")
    p.add_argument("--vis", help="MeasurementSet the product was imaged from (for the theoretical sensitivity)")
    p.add_argument("--summary", help="JSON file with tclean's return dict (iterdone, niter, stopcode)")
    p.add_argument("--thresholds", help="JSON or YAML file with QaThresholds (pipeline templates pass theirs)")
    p.add_argument(
        "--plan", help="imaging plan JSON of this target (cell, imsize and why): shown in the report, and a "
        "recorded imsize cap turns a short primary-beam coverage into a warning"
    )
    p.add_argument("--min-score", type=float, help="gate: overall score needed for 'archive' (default from thresholds)")
    p.add_argument("--no-html", action="store_true", help="skip qa.html (no plots)")
    p.add_argument("--result-file", help="write the step's result (exit status, score, band, gate, report files) "
                   "here as JSON, atomically (what the Airflow task reads)")
    p.add_argument(
        "--exit-on-review", action="store_true", help=f"exit with status {QaExit.REVIEW} when the gate says 'review'"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress lines go to stderr, where a terminal or an Airflow task log shows them.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # After the arguments are read: QA loads numpy (`pclean qa --help` stays quick).
    from pclean_provider.pipeline.qa import QaInputError, run_qa

    thresholds = QaThresholds.model_validate(_load_mapping(args.thresholds, "--thresholds")) if args.thresholds else None
    summary = _load_mapping(args.summary, "--summary") if args.summary else None
    print(f"pclean qa: checking {args.image} ({args.kind}) ...", file=sys.stderr, flush=True)
    try:
        report = run_qa(
            args.image,
            kind=args.kind,
            truth=args.truth,
            thresholds=thresholds,
            out_dir=args.out,
            imaging_summary=summary,
            vis=args.vis,
            html=not args.no_html,
            plan=args.plan,
        )
    except QaInputError as exc:
        print(f"pclean qa: {exc}", file=sys.stderr)
        return finish(args.result_file, "qa", QaExit.BAD_INPUT, message=str(exc))
    width = max((len(s.metric) for s in report.scores), default=10)
    for s in sorted(report.scores, key=lambda s: s.score):
        print(f"{s.band:>10}  {s.score:4.2f}  {s.metric:<{width}}  {s.applies_to}: {s.message}")
    if report.not_judged_reason:
        # Not an input error: the product exists but holds nothing to measure; it goes to review.
        print(f"not judged: {report.not_judged_reason}")
    gate = report.gate(args.min_score)
    print(f"overall {report.overall_score:.2f} ({report.overall_band}); gate: {gate}")
    for name, path in report.files.items():
        print(f"wrote {name}: {path}")
    payload = {"overall_score": report.overall_score, "overall_band": report.overall_band,
               "not_judged_reason": report.not_judged_reason, "gate": gate, "files": dict(report.files)}
    if args.exit_on_review and gate == "review":
        return finish(args.result_file, "qa", QaExit.REVIEW, payload,
                      f"overall score {report.overall_score:.2f} ({report.overall_band}): the gate says review")
    return finish(args.result_file, "qa", QaExit.OK, payload)


if __name__ == "__main__":
    sys.exit(main())
