"""CASA's own MPI parallel tclean on one case, under mpirun with the peer's venv (bench/mpicasa_env.py).

    mpirun --allow-run-as-root --oversubscribe --bind-to none -n N+1 -x CASASITECONFIG ... \\
        bench/.venv-mpicasa/bin/python bench/mpicasa_case.py CASE.json RESULT.json

Every rank runs this file. Under mpirun, `import casatasks` (through casampi) turns ranks 1..N into
servers that never return from the import; rank 0 goes on and calls tclean with the case's
parameters and `parallel=True` (a cube runs in parallel whenever it is under mpirun; continuum
needs the flag and splits the MS by rows). Rank 0 times the tclean call alone, prints the figures
as one JSON line after RESULT_MARK and writes them to RESULT.json. Imports nothing of this project:
the CASA environment comes in through the process environment (mpirun -x).
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

RESULT_MARK = "MPICASA-RESULT "


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    case = json.load(open(argv[1], encoding="utf-8"))
    result_file = argv[2]
    os.chdir(case["case_dir"])  # every rank's CASA log and scratch files land here
    data: dict = {}
    try:
        t = time.perf_counter()
        import casatasks  # ranks 1..N stay in here as servers
        from casampi.MPIEnvironment import MPIEnvironment

        data["import_s"] = time.perf_counter() - t
        data["mpi_enabled"] = bool(MPIEnvironment.is_mpi_enabled)
        data["mpi_servers"] = len(MPIEnvironment.mpi_server_rank_list()) if MPIEnvironment.is_mpi_enabled else 0
        t = time.perf_counter()
        summary = casatasks.tclean(vis=case["vis"], imagename=case["imagename"], **case["params"], parallel=True)
        data["engine_s"] = time.perf_counter() - t
        data["stages"] = {"casampi import": data["import_s"], "tclean (mpicasa)": data["engine_s"]}
        if isinstance(summary, dict):
            data["iterations"] = int(summary.get("iterdone", 0) or 0)
            data["major_cycles"] = int(summary.get("nmajordone", 0) or 0)
        data["ok"] = True
    except BaseException as err:
        data.update(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
    data["wall_s"] = time.perf_counter() - t0
    print(RESULT_MARK + json.dumps(data, default=str), flush=True)
    write_json(result_file, data)
    return 0 if data.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
