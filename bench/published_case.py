"""Run the published pclean on one case: `<published venv python> bench/published_case.py CASE.json RESULT.json`.

Runs in the published package's own venv, so it imports nothing from this project: the CASA
environment (offline site config) comes in through the process environment from the parent.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

try:
    from bench.json_files import write_json
except ImportError:  # run as a file in the peer's venv, which has no project: the sibling file
    from json_files import write_json


def main(argv: list[str]) -> int:
    case = json.load(open(argv[1], encoding="utf-8"))
    result_file = argv[2]
    os.chdir(case["case_dir"])  # its CASA log and scratch files land here
    t0 = time.perf_counter()
    data: dict = {}
    try:
        from pclean import pclean

        t = time.perf_counter()
        ret = pclean(vis=case["vis"], imagename=case["imagename"], **case["params"], **case.get("extras", {}))
        data["engine_s"] = time.perf_counter() - t
        data["stages"] = {"published pclean()": data["engine_s"]}
        data["returned"] = repr(ret)[:500]
        data["ok"] = True
    except BaseException as err:
        data.update(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
    data["wall_s"] = time.perf_counter() - t0
    write_json(result_file, data)
    return 0 if data.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
