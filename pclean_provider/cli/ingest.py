"""``pclean ingest``: validate MeasurementSets in a landing area (or one named MS).

Exit codes: ``exit_codes.IngestExit`` (0 done, broken MSs quarantined and MSs unreadable for now
included; 2 bad input, nothing moved; 3 the MS named with ``--vis`` cannot be imaged, the reason
printed; 4 the MS named with ``--vis`` could not be read reliably, or an MS could not be moved to a
full quarantine area, a retry may succeed).
``--report`` writes the JSON report for people and scripts; ``--result-file`` writes the step's
result (``step_results``: the exit status and, as its payload, the same report), which is what the
Airflow ingest task reads back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pclean_provider.casa.runtime import ensure_casa_runtime
from pclean_provider.exit_codes import IngestExit
from pclean_provider.pipeline import ingest
from pclean_provider.step_results import finish


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclean ingest",
        description="Find complete MeasurementSets in a landing area, check each (opens, rows, spectral "
        "windows, fields, the selected spw/field exist), write its metadata JSON, quarantine broken "
        "ones with a reason file, skip those already imaged.")
    p.add_argument("landing", nargs="?", help="landing area to scan (not needed with --vis)")
    p.add_argument("--vis", help="check only this MS (never moved); exit 3 if it cannot be imaged")
    p.add_argument("--quarantine", help="where broken MSs go (default: <landing>/../quarantine)")
    p.add_argument("--metadata-dir", help="where <name>.ms.metadata.json is written "
                   "(default: <landing>/../metadata)")
    p.add_argument("--ledger", help="directory of already-imaged records (default: <landing>/../ledger)")
    p.add_argument("--completion", choices=["marker", "quiet_period"], default="marker",
                   help="how a finished transfer is recognised (default: marker)")
    p.add_argument("--marker-suffix", default=".complete", help="completion marker suffix (default: .complete)")
    p.add_argument("--quiet-period", type=float, default=120.0, help="seconds without change, for "
                   "--completion quiet_period (default 120)")
    p.add_argument("--pattern", default="*.ms", help="glob of MSs in the landing area (default *.ms)")
    p.add_argument("--spw", default=None, help="spw selection that must exist in the MS")
    p.add_argument("--field", default=None, help="field selection that must exist in the MS")
    p.add_argument("--redo", action="store_true", help="take MSs even if they were imaged before")
    p.add_argument("--report", help="write the JSON report here (atomically)")
    p.add_argument("--log-dir", help="directory for the CASA log (default: the metadata directory)")
    p.add_argument("--result-file", help="write the step's result (exit status and report) here as JSON, "
                   "atomically (what the Airflow task reads)")
    return p


def summary_lines(report) -> list[str]:
    """One line per MS: what ingest did with it and why."""
    lines = []
    for ms in report.accepted:
        lines.append(f"accepted     {ms.name}: {ms.nrows} rows, {ms.nspw} spw, {ms.nfield} field(s) -> {ms.metadata_path}")
        lines += [f"warning      {ms.name}: {warning}" for warning in ms.warnings]
    lines += [f"quarantined  {ms.name}: {ms.reason} -> {ms.quarantine_path}" for ms in report.quarantined]
    for word, entries in (("incomplete", report.incomplete), ("skipped", report.already_imaged),
                          ("unreadable", report.unreadable), ("taken", report.taken_elsewhere),
                          ("refused", report.refused)):
        lines += [f"{word:<12} {ms.name}: {ms.why}" for ms in entries]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def done(code: IngestExit, payload: dict | None = None, message: str = "") -> int:
        # A result file that cannot be written is a full disk, which a retry may get past.
        return finish(args.result_file, "ingest", code, payload, message, unwritable=IngestExit.READ_UNSTABLE)

    if not args.landing and not args.vis:
        message = "give a landing area, or --vis PATH for one MS"
        print(f"pclean ingest: {message}", file=sys.stderr)
        return done(IngestExit.BAD_INPUT, message=message)

    base = Path(args.landing).resolve().parent if args.landing else Path(args.vis).resolve().parent
    metadata_dir = Path(args.metadata_dir or base / "metadata")
    log_dir = Path(args.log_dir) if args.log_dir else metadata_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    # CASA writes its log into the cwd unless told otherwise; point it at our log directory.
    ensure_casa_runtime(log_dir=log_dir)

    if args.vis:
        try:
            accepted = ingest.ingest_one(Path(args.vis), metadata_dir=metadata_dir, spw=args.spw,
                                         field=args.field)
        except ingest.MsReadUnstable as exc:
            print(f"pclean ingest: {exc}", file=sys.stderr)
            return done(IngestExit.READ_UNSTABLE, message=str(exc))
        except (ingest.MsRejected, ingest.SelectionNotInMs) as exc:
            print(f"pclean ingest: {args.vis} cannot be imaged: {exc}", file=sys.stderr)
            rejected = {"rejected": str(exc), "vis": args.vis}
            if args.report:
                ingest.write_json_atomic(Path(args.report), rejected)
            return done(IngestExit.REJECTED, rejected, f"{args.vis} cannot be imaged: {exc}")
        report = ingest.IngestReport(accepted=[accepted])
    else:
        landing = Path(args.landing)
        try:
            report = ingest.ingest_landing_area(
                landing, quarantine_dir=Path(args.quarantine or base / "quarantine"),
                metadata_dir=metadata_dir, ledger_dir=Path(args.ledger or base / "ledger"),
                completion=args.completion, marker_suffix=args.marker_suffix,
                quiet_period_s=args.quiet_period, pattern=args.pattern, spw=args.spw, field=args.field,
                redo=args.redo)
        except (FileNotFoundError, ingest.SelectionNotInMs) as exc:
            print(f"pclean ingest: {exc}", file=sys.stderr)
            return done(IngestExit.BAD_INPUT, message=str(exc))
        except (ingest.MsReadUnstable, ingest.QuarantineFailed) as exc:
            print(f"pclean ingest: {exc}", file=sys.stderr)
            return done(IngestExit.READ_UNSTABLE, message=str(exc))

    for line in summary_lines(report):
        print(line)
    payload = json.loads(report.model_dump_json())
    if args.report:
        try:
            ingest.write_json_atomic(Path(args.report), payload)
        except OSError as exc:
            message = f"the report {args.report} could not be written ({exc.strerror or exc}); free space there and rerun"
            print(f"pclean ingest: {message}", file=sys.stderr)
            return done(IngestExit.READ_UNSTABLE, message=message)
    return done(IngestExit.OK, payload)


if __name__ == "__main__":
    sys.exit(main())
