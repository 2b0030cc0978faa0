"""``pclean archive``: publish products (FITS + manifest, atomically versioned) and verify them.

``publish`` prints what it published as JSON; with ``--result-file`` it also writes the step's
result (``step_results``: the exit status, and the same publish result as its payload), which is
what the Airflow archive task reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pclean_provider.atomic_files import is_out_of_space
from pclean_provider.exit_codes import ArchiveExit
from pclean_provider.step_results import finish


def _load_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"pclean archive: --config={path} does not exist")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        return dict(yaml.safe_load(p.read_text()) or {})
    return dict(json.loads(p.read_text()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pclean archive", description="Publish imaging products and verify an archive.")
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="export FITS with checksums, write the manifest, publish a new version")
    pub.add_argument("--image", action="append", required=True, help="imagename prefix (repeat for several)")
    pub.add_argument("--archive-root", required=True, help="archive folder; the product goes to <root>/<id>/vNNNN")
    pub.add_argument("--product-id", help="product name in the archive (default: the first image's name)")
    pub.add_argument("--qa-dir", help="folder with qa.json/qa.html (default <image>.qa when present)")
    pub.add_argument("--vis", action="append", help="input MeasurementSet (repeat for several)")
    pub.add_argument("--ms-metadata", help="JSON file with the MS metadata (instead of reading --vis again)")
    pub.add_argument("--config", help="JSON or YAML file with the full imaging configuration")
    pub.add_argument("--dag-run-id", help="Airflow DAG run id, for provenance")
    pub.add_argument("--started-utc", help="when the pipeline run started (ISO 8601)")
    pub.add_argument("--obs-id", help="ObsCore obs_id (default: the MS name)")
    pub.add_argument("--file-mode", help="octal mode of the published files, e.g. 0640 (default: the umask's); "
                     "the published version is read-only either way")
    pub.add_argument("--result-file", help="write the step's result (exit status and what was published) here as "
                     "JSON, atomically (what the Airflow task reads)")
    ver = sub.add_parser("verify", help="re-check checksums and the manifest; exit non-zero on any mismatch")
    ver.add_argument("path", help="a version folder, a product folder, or the archive root")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress lines go to stderr, where a terminal or an Airflow task log shows them.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # After the arguments are read: the archive loads numpy (`pclean archive --help` stays quick).
    from pclean_provider.pipeline.archive import ArchiveError, publish, verify_tree

    if args.command == "verify":
        results = verify_tree(args.path)
        for result in results:
            print(result.summary())
        return ArchiveExit.OK if results and all(r.ok for r in results) else ArchiveExit.FAILED

    metadata = None
    if args.ms_metadata:
        metadata = json.loads(Path(args.ms_metadata).read_text())
    print(f"pclean archive: publishing {', '.join(args.image)} ...", file=sys.stderr, flush=True)
    try:
        result = publish(
            args.image,
            args.archive_root,
            args.product_id,
            qa_dir=args.qa_dir,
            vis=args.vis,
            ms_metadata=metadata,
            config=_load_config(args.config) if args.config else None,
            dag_run_id=args.dag_run_id,
            started_utc=args.started_utc,
            obs_id=args.obs_id,
            file_mode=args.file_mode,
        )
    except ArchiveError as exc:
        print(f"pclean archive: {exc}", file=sys.stderr)
        return finish(args.result_file, "archive", ArchiveExit.BAD_INPUT, message=str(exc))
    except Exception as exc:
        if not is_out_of_space(exc):
            raise
        # Nothing was published: the staging folder is gone and earlier versions are untouched.
        message = (f"no space left to publish under {args.archive_root} ({exc}); nothing was published and "
                   "earlier versions are untouched. Free space there and retry.")
        print(f"pclean archive: {message}", file=sys.stderr)
        return finish(args.result_file, "archive", ArchiveExit.FAILED, message=message)
    print(result.model_dump_json(indent=2))
    return finish(args.result_file, "archive", ArchiveExit.OK, json.loads(result.model_dump_json()))


if __name__ == "__main__":
    sys.exit(main())
