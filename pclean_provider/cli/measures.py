"""`pclean measures`: how current CASA's measures data are, and a refresh of the site copy.

``status`` prints the folder CASA uses and the dates its tables reach; with ``--vis`` it checks
MSs against them (exit 3 when one was observed after them). ``update`` fetches the current measures
into a site copy (``--path``, default ``[pclean] measures_path``); it needs the network, and a site
without it copies a current folder from a site that has it and points ``measures_path`` there.
"""

from __future__ import annotations

import argparse
import os
import sys

from pclean_provider.casa.measures_info import measures_warnings, read_status, update_site_copy
from pclean_provider.casa.msinfo import read_ms_metadata
from pclean_provider.casa.runtime import MEASURES_ENV, CasaRuntimeError, ensure_casa_runtime
from pclean_provider.exit_codes import MeasuresExit


def _status(args) -> int:
    try:
        info = ensure_casa_runtime()
    except CasaRuntimeError as exc:
        print(f"pclean measures: {exc}", file=sys.stderr)
        return MeasuresExit.BAD_INPUT
    status = read_status(args.path or info.measures_path)
    for line in status.describe():
        print(line)
    stale = False
    for vis in args.vis:
        if not os.path.isdir(vis):
            print(f"pclean measures: --vis {vis} is not a MeasurementSet folder", file=sys.stderr)
            return MeasuresExit.BAD_INPUT
        meta = read_ms_metadata(vis)
        warnings = measures_warnings(status, meta.time_end_mjd_s / 86400.0)
        for warning in warnings:
            print(f"warning: {os.path.basename(vis)}: {warning}")
        if not warnings:
            print(f"{os.path.basename(vis)}: observed until {meta.time_end_utc}, within the measures")
        stale = stale or bool(warnings)
    return MeasuresExit.STALE if stale else MeasuresExit.OK


def _update(args) -> int:
    path = args.path or os.environ.get(MEASURES_ENV)
    if not path:
        print(f"pclean measures update: give --path DIR or set [pclean] measures_path (${MEASURES_ENV}): "
              "the installed casadata package is never updated in place", file=sys.stderr)
        return MeasuresExit.BAD_INPUT
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)

    try:
        update_site_copy(path, force=args.force)
    except Exception as exc:  # casaconfig raises its own types for no network, bad paths, locks
        print(f"pclean measures update: could not update {path}: {type(exc).__name__}: {exc}. Where this "
              "host has no network, copy a current measures folder from a host that has one and set "
              f"[pclean] measures_path (${MEASURES_ENV}) to it", file=sys.stderr)
        return MeasuresExit.FAILED
    print(f"measures in {path} are current; CASA uses them where [pclean] measures_path (${MEASURES_ENV}) "
          "names this folder")
    return MeasuresExit.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pclean measures", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    status = sub.add_parser("status", help="the measures folder CASA uses and the dates its tables reach")
    status.add_argument("--path", help="a measures folder to inspect (default: the one CASA uses)")
    status.add_argument("--vis", action="append", default=[],
                        help="an MS to check against the measures (repeatable); exit 3 if one is later")
    update = sub.add_parser("update", help="fetch the current measures into a site copy (needs the network)")
    update.add_argument("--path", help="the site copy (default: [pclean] measures_path)")
    update.add_argument("--force", action="store_true", help="fetch even when the copy was updated recently")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return MeasuresExit.BAD_INPUT if exc.code else MeasuresExit.OK
    return _status(args) if args.action == "status" else _update(args)
