"""`make bench`: side-by-side speed, memory and fidelity of serial tclean, this engine, the published pclean and CASA's MPI tclean.

    .venv/bin/python bench/run.py [--size tiny|small|medium|wide] [--only cube,continuum,published,mpicasa,airflow,concat]
                                  [--mpicasa-servers 2] [--budget SECONDS] [--out bench/results] [--work DIR] [--keep-work] [--render-only]

Every measured case runs in a fresh process (bench/cases.py, bench/published_case.py,
bench/mpicasa_case.py under mpirun, bench/airflow_case.py) whose whole process tree is sampled for
memory; this process only orchestrates, compares images and writes bench/RESULTS.md and
<out>/results.json (with an --out other than bench/results, RESULTS.md goes into <out> too: a trial
run never overwrites the record).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report, scaling  # noqa: E402
from bench.measure import compare_images, run_case  # noqa: E402
from bench.sizes import SIZES, BenchSize, continuum_params, cube_params, worker_counts  # noqa: E402

STAGES = ("cube", "continuum", "published", "mpicasa", "airflow", "concat")
BENCH = REPO / "bench"
PUBLISHED_WORKERS = 2
DAG_ID = "nightly_cube_imaging"
# A parallel run taking this many times serial tclean's wall time is treated as hung.
HANG_FACTOR = 5.0
# mpirun starts every rank (each imports CASA) and lingers 15-20 s after the script: an mpicasa
# case gets this much more than the size's case timeout.
MPIRUN_ALLOWANCE_S = 60.0
# Keep this much of the budget for the report once the measurements are done.
REPORT_RESERVE_S = 20.0


class Bench:
    def __init__(self, size: BenchSize, work: Path, out: Path, command: str) -> None:
        self.size = size
        self.work = work
        self.out = out
        self.t0 = time.monotonic()
        self.deadline = self.t0 + size.budget_s
        self.results: dict = {
            "command": command, "size": size.name, "size_spec": size.model_dump(), "budget_s": size.budget_s,
            "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sample_interval_s": 0.1, "ms": {}, "sections": {}, "skipped": [], "errors": [],
            "published_notes": [],
        }
        self._env = None
        self.hung: dict[tuple[str, int], str] = {}

    # -- plumbing ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        el = time.monotonic() - self.t0
        left = self.deadline - time.monotonic()
        print(f"[bench {int(el) // 60:02d}:{int(el) % 60:02d}, {max(left, 0) / 60:4.1f} min left] {text}", flush=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic() - REPORT_RESERVE_S

    def env(self) -> dict[str, str]:
        if self._env is None:
            from pclean_provider.casa.runtime import casa_env

            self._env = {**os.environ, **casa_env(), "PYTHONPATH": str(REPO)}
        return dict(self._env)

    def measure(self, name: str, case: dict, command: list[str], env: dict | None = None,
                timeout: float | None = None, extra_s: float = 0.0) -> dict | None:
        left = self.remaining()
        if left < 15:
            self.results["skipped"].append(f"{name}: the time budget ({self.size.budget_s:.0f} s) ran out")
            self.say(f"skip {name}: out of budget")
            return None
        # extra_s: a launcher's fixed cost on top of the case's own (mpirun's start and linger).
        timeout = min(min(timeout or self.size.case_timeout_s, self.size.case_timeout_s) + extra_s, left)
        self.say(f"run  {name} (timeout {timeout:.0f} s)")
        data = run_case(self.work / "cases" / name, case, command, env or self.env(), timeout)
        state = "ok" if data.get("ok") else f"FAILED: {data.get('error', '').splitlines()[0][:200]}"
        self.say(f"done {name}: {data.get('wall_s', 0):.1f} s wall, peak tree RSS "
                 f"{data.get('peak_tree_rss_bytes', 0) / 2**20:.0f} MiB, {state}")
        if not data.get("ok"):
            self.results["errors"].append(f"{name}: {data.get('error', '').splitlines()[0][:300]} (log: {data.get('log')})")
        return data

    def project_case(self, name: str, case: dict, timeout: float | None = None) -> dict | None:
        return self.measure(name, case, [sys.executable, "-m", "bench.cases"], timeout=timeout)

    @staticmethod
    def hang_timeout(ref: dict | None) -> float | None:
        """A run that takes many times serial tclean's wall time is stuck, not slow: stop it then,
        so one hang cannot eat the budget of everything after it."""
        if not ref or not ref.get("ok") or not ref.get("wall_s"):
            return None
        return max(HANG_FACTOR * ref["wall_s"], 120.0)

    # -- inputs -----------------------------------------------------------------------------
    def make_ms(self, key: str) -> dict:
        if key in self.results["ms"]:
            return self.results["ms"][key]
        spec = self.size.cube_ms if key == "cube" else self.size.continuum_ms
        path = self.work / "ms" / f"{key}-{self.size.name}.ms"
        stamp = path.with_suffix(".params.json")
        from pclean_provider.casa.msinfo import read_ms_metadata

        t = time.perf_counter()
        if path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("spec") == spec.model_dump():
            info = json.loads(stamp.read_text())["sim"]
            self.say(f"reuse MS {path.name} ({spec.describe()})")
        else:
            self.say(f"make MS {path.name}: {spec.describe()}")
            # Making the MS is part of the run, but it must not eat the measurements' budget silently.
            data = self.project_case(f"simulate-{key}", {"kind": "simulate", "ms": str(path), "spec": spec.model_dump()})
            if not data or not data.get("ok"):
                raise RuntimeError(f"could not make {path}: {(data or {}).get('error', 'out of budget')}")
            info = data["sim"]
            stamp.write_text(json.dumps({"spec": spec.model_dump(), "sim": info}))
        meta = read_ms_metadata(path)
        rec = {"ms": str(path), "describe": spec.describe(), "nrows": meta.nrows, "size_bytes": meta.size_bytes,
               "seconds": time.perf_counter() - t, "sim": info}
        self.results["ms"][key] = rec
        self.say(f"MS {path.name}: {meta.nrows:,} rows, {meta.size_bytes / 2**20:.0f} MiB")
        return rec

    # -- imaging sections -------------------------------------------------------------------
    def section(self, key: str, ms_key: str, params: dict) -> dict:
        sec = self.results["sections"].setdefault(key, {"ms": ms_key, "params": params, "cases": []})
        return sec

    def _record(self, sec: dict, label: str, impl: str, workers: int | None, data: dict | None, image: str) -> dict | None:
        if data is None:
            return None
        rec = {"label": label, "impl": impl, "workers": workers, "image": image,
               **{k: data.get(k) for k in ("ok", "wall_s", "engine_s", "stages", "peak_tree_rss_bytes",
                                           "peak_process_rss_bytes", "peak_worker_rss_bytes", "parent_wall_s",
                                           "iterations", "error", "log", "memory", "returned", "major_cycles",
                                           "mpi_servers", "mpi_enabled", "command")}}
        pr = data.get("pclean_result") or {}
        if pr.get("minor_cycle_share") is not None:
            rec["minor_cycle_share"] = pr["minor_cycle_share"]
        for k in ("subcube_seconds", "subcube_nchan", "subcube_peak_rss_bytes"):
            if k in pr:
                rec[k] = pr[k]
        if pr.get("continuum"):
            c = pr["continuum"]
            rec["continuum"] = {k: c.get(k) for k in ("nparts", "major_cycles", "iterations", "setup_s", "psf_s",
                                                      "major_cycle_s", "minor_cycle_s", "restore_s", "elapsed_s")}
        ref = next((c for c in sec["cases"] if c["impl"] == "tclean"), None)
        if impl != "tclean" and ref and ref.get("ok") and rec.get("ok"):
            rec["fidelity"] = compare_images(image, ref["image"])
            rec["fidelity_products"] = self._product_fidelity(sec, ref["image"], image)
        sec["cases"] = [c for c in sec["cases"] if c["label"] != label] + [rec]
        return rec

    @staticmethod
    def _product_fidelity(sec: dict, ref_image: str, image: str) -> dict:
        """Every product's comparison, through the cube and continuum benchmarks' own fidelity
        functions (bench/bench_cube.py, bench/bench_continuum.py): residual, psf, pb, model, sumwt."""
        deconvolver = sec["params"].get("deconvolver", "hogbom")
        strip = ".image.tt0" if ref_image.endswith(".image.tt0") else ".image"
        ref_prefix, prefix = ref_image[: -len(strip)], image[: -len(strip)]
        try:
            if sec["params"].get("specmode") == "cube":
                from bench.bench_cube import _fidelity as cube_fidelity

                return cube_fidelity(ref_prefix, prefix)
            from bench.bench_continuum import _fidelity as continuum_fidelity

            return continuum_fidelity(ref_prefix, prefix, deconvolver)
        except Exception as err:  # a product one implementation does not write (e.g. no .sumwt)
            return {"error": f"{type(err).__name__}: {err}"}

    def reference(self, key: str, ms_key: str, params: dict) -> dict | None:
        """Serial tclean on this section's MS, once per run (every comparison is against it)."""
        sec = self.section(key, ms_key, params)
        have = next((c for c in sec["cases"] if c["impl"] == "tclean"), None)
        if have:
            return have
        ms = self.make_ms(ms_key)
        (self.work / "images" / key).mkdir(parents=True, exist_ok=True)
        image = str(self.work / "images" / key / "tclean")
        data = self.project_case(f"{key}-tclean", {"kind": "tclean", "vis": ms["ms"], "imagename": image,
                                                   "params": params})
        return self._record(sec, "serial tclean", "tclean", 1, data, image + self._suffix(params))

    @staticmethod
    def _suffix(params: dict) -> str:
        return ".image.tt0" if params.get("deconvolver") == "mtmfs" else ".image"

    def ours(self, key: str, ms_key: str, params: dict, workers: int) -> dict | None:
        sec = self.section(key, ms_key, params)
        label = f"this engine, {workers} worker{'s' if workers > 1 else ''}"
        have = next((c for c in sec["cases"] if c["label"] == label), None)
        if have:
            return have
        ms = self.make_ms(ms_key)
        (self.work / "images" / key).mkdir(parents=True, exist_ok=True)
        image = str(self.work / "images" / key / f"pclean-w{workers}")
        extras = {"parallel": True, "nworkers": workers, "threads_per_worker": 1,
                  "local_directory": str(self.work / "dask" / f"{key}-w{workers}")}
        family = (key.split("_")[0], workers)
        if family in self.hung:
            # The same engine configuration already hung on this MS; a second wait would only spend
            # the budget that the remaining measurements need.
            self.results["skipped"].append(f"{key}-pclean-w{workers}: the same engine run hung in "
                                           f"{self.hung[family]}")
            self.say(f"skip {key}-pclean-w{workers}: hung before in {self.hung[family]}")
            return None
        ref = next((c for c in sec["cases"] if c["impl"] == "tclean"), None)
        data = self.project_case(f"{key}-pclean-w{workers}", {"kind": "pclean", "vis": ms["ms"], "imagename": image,
                                                             "params": params, "extras": extras},
                                 timeout=self.hang_timeout(ref))
        if data is not None and "timed out" in (data.get("error") or ""):
            self.hung[family] = key
        return self._record(sec, label, "pclean", workers, data, image + self._suffix(params))

    def run_imaging(self, key: str, ms_key: str, params: dict) -> None:
        for d in (self.work / "images" / key,):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
        self.reference(key, ms_key, params)
        for w in worker_counts():
            self.ours(key, ms_key, params, w)

    # -- the published pclean ---------------------------------------------------------------
    def run_published(self) -> None:
        from bench.published_env import ensure_published_venv, venv_python

        try:
            self.results["published_env"] = ensure_published_venv(log=self.say)
        except Exception as err:  # no venv: say so in the report, keep measuring the rest
            self.results["errors"].append(f"published venv: {err}")
            return
        notes = self.results["published_notes"]
        notes += [
            "`nchan` given explicitly (every run here gets the same explicit nchan): with the default "
            "nchan=-1 the published pclean splits a cube as if it had one channel, its concatenation fails "
            "and no cube is written.",
            "absolute `vis` and `imagename` (its workers change directory, so relative paths fail).",
            "the CASA environment of this project (offline site config via CASASITECONFIG, OMP_NUM_THREADS=1) "
            "passed in through the process environment, since casatools cannot import offline without it.",
            f"parallel=True, nworkers={PUBLISHED_WORKERS}, its defaults otherwise (memory_limit='0', "
            "cube_chunksize=-1: one sub-cube per worker).",
            "its time is one pclean() call, which starts and stops its own cluster inside: its *engine* "
            "figure therefore includes its cluster start, unlike this engine's.",
        ]
        env = {k: v for k, v in self.env().items() if k != "PYTHONPATH"}
        jobs = [("cube", "cube", cube_params(self.size))]
        jobs += [(f"continuum_{d}", "continuum", continuum_params(self.size, d)) for d in ("hogbom", "mtmfs")]
        for key, ms_key, params in jobs:
            ref = self.reference(key, ms_key, params)
            if ref is None:
                continue
            sec = self.section(key, ms_key, params)
            ms = self.make_ms(ms_key)
            image = str(self.work / "images" / key / f"published-w{PUBLISHED_WORKERS}")
            data = self.measure(f"{key}-published-w{PUBLISHED_WORKERS}",
                                {"vis": ms["ms"], "imagename": image, "params": params,
                                 "extras": {"parallel": True, "nworkers": PUBLISHED_WORKERS}},
                                [str(venv_python()), str(BENCH / "published_case.py")], env=env,
                                timeout=self.hang_timeout(ref))
            rec = self._record(sec, f"published pclean 0.2.3, {PUBLISHED_WORKERS} workers", "published",
                               PUBLISHED_WORKERS, data, image + self._suffix(params))
            if rec and rec.get("ok") and not Path(rec["image"]).exists():
                rec["ok"] = False
                rec["error"] = f"returned without error but wrote no {Path(rec['image']).name}"
                self.results["errors"].append(f"{key}-published: {rec['error']}")

    # -- CASA's own MPI parallel tclean (mpicasa) ---------------------------------------------
    def mpicasa_jobs(self) -> list[tuple[str, str, dict]]:
        """Every imaging section of this run (the bench's shapes), with the parameters its serial
        tclean and pclean rows use."""
        jobs = [("cube", "cube", cube_params(self.size))]
        return jobs + [(f"continuum_{d}", "continuum", continuum_params(self.size, d)) for d in ("hogbom", "mtmfs")]

    def run_mpicasa(self, servers: list[int]) -> None:
        """tclean under mpirun with N servers (N = a pclean row's worker count) beside each section's
        serial tclean and pclean rows: the call's time, the whole process's, peak memory of the
        whole tree (mpirun, its daemon and every rank) and exactness against serial tclean."""
        from bench.mpicasa_env import ensure_mpicasa_venv, mpirun_command, peer_environment

        try:
            venv = ensure_mpicasa_venv(log=self.say)
        except Exception as err:  # no peer: say so in the report, keep measuring the rest
            self.results["errors"].append(f"mpicasa venv: {err}")
            return
        self.results["mpicasa_env"] = {k: venv.get(k) for k in ("venv", "python", "mpirun", "launcher", "versions",
                                                                "pth_file", "shared_site_packages", "pip_check")}
        base, casa_names = peer_environment(venv["mpirun"], self.env())
        for key, ms_key, params in self.mpicasa_jobs():
            ref = self.reference(key, ms_key, params)
            if ref is None:
                continue
            sec = self.section(key, ms_key, params)
            ms = self.make_ms(ms_key)
            for n in servers:
                image = str(self.work / "images" / key / f"mpicasa-n{n}")
                command = mpirun_command(venv["mpirun"], venv["python"], BENCH / "mpicasa_case.py", n, casa_names)
                data = self.measure(f"{key}-mpicasa-n{n}", {"vis": ms["ms"], "imagename": image, "params": params},
                                    command, env=base, timeout=self.hang_timeout(ref), extra_s=MPIRUN_ALLOWANCE_S)
                if data is not None:
                    data = mpicasa_figures(data, n, command)
                self._record(sec, f"mpicasa (CASA MPI tclean), {n} server{'s' if n > 1 else ''}", "mpicasa", n,
                             data, image + self._suffix(params))

    # -- Airflow ----------------------------------------------------------------------------
    def run_airflow(self) -> None:
        params = cube_params(self.size)
        ours = self.ours("cube", "cube", params, 2)
        ms = self.make_ms("cube")
        air: dict = {"dag_id": DAG_ID, "workers": 2}
        self.results["airflow"] = air
        if not (REPO / "dags" / "pclean_pipelines.py").exists():
            air["error"] = "dags/pclean_pipelines.py is missing"
            return
        home = self.work / "airflow-home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        data_root = self.work / "airflow-data"
        shutil.rmtree(data_root, ignore_errors=True)
        env = {**self.env(), "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
               "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"), "PCLEAN_DATA_ROOT": str(data_root),
               "PCLEAN_PIPELINES_UNSCHEDULED": "1",
               # The measured run archives at gate 0 (qa_min_score below): the site's lowest gate allows it.
               "PCLEAN_QA_GATE_MINIMUM": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.say("airflow db migrate (own AIRFLOW_HOME, SQLite)")
        mig = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, cwd=home,
                             capture_output=True, text=True, timeout=600)
        if mig.returncode != 0:
            air["error"] = f"airflow db migrate failed: {mig.stderr.strip()[-1500:]}"
            self.results["errors"].append(air["error"])
            return
        overrides = {**params, "parallel": True}
        # A run conf's paths must lie in the pipeline's data roots (pipeline/conf_policy.py): the DAG
        # images a copy inside the data root (copied before, not during, the measurement).
        vis = data_root / "incoming" / Path(ms["ms"]).name
        shutil.copytree(ms["ms"], vis)
        run_conf = {"vis": str(vis), "overrides": overrides, "cluster": "local",
                    "cluster_options": {"nworkers": 2, "threads_per_worker": 1}, "qa_min_score": 0.0}
        data = self.measure("cube-airflow-dag", {"dag_id": DAG_ID, "run_conf": run_conf},
                            [sys.executable, "-m", "bench.airflow_case"], env=env)
        if data is None:
            air["error"] = "skipped (budget)"
            return
        air.update({k: data.get(k) for k in ("ok", "error", "spans", "stages", "dag_run_state", "task_instances",
                                            "peak_tree_rss_bytes", "log", "dag_test_error")})
        air["dag_wall_s"] = data.get("engine_s")
        if data.get("ok") and ours and ours.get("ok"):
            pclean_s = ours["engine_s"] + (ours.get("stages") or {}).get("cluster start", 0.0)
            span = (data.get("spans") or {}).get("imaging")
            air["pclean_s"] = pclean_s
            air["imaging_span_s"] = span
            if span is not None:
                air["overhead_s"] = span - pclean_s
                air["overhead_share"] = (span - pclean_s) / ours["engine_s"]
                # dag.test() runs task instances one after another, so the mapped sub-cube tasks did
                # not overlap; a scheduler would run them side by side (pool slots permitting). The
                # estimate replaces their serial span by the longest one; the measured figure stays
                # the one judged against the target.
                sub = [r["duration_s"] for r in data.get("task_instances") or []
                       if r["task_id"].startswith("subcubes_") and r.get("duration_s") is not None]
                if len(sub) > 1:
                    concurrent = span - (sum(sub) - max(sub))
                    air["overhead_if_concurrent_s"] = concurrent - pclean_s
                    air["overhead_if_concurrent_share"] = (concurrent - pclean_s) / ours["engine_s"]
        elif data.get("ok"):
            air["ok"] = False
            air["error"] = "the DAG ran, but this engine's 2-worker cube run (the comparison) did not"

    # -- concatenation ----------------------------------------------------------------------
    def run_concat(self) -> None:
        conc = self.results.setdefault("concat", {})
        modes = ["paged", "virtual", "movevirtual"]
        for key, planes, imsize in (("per_mode", self.size.concat_planes, self.size.concat_imsize),
                                    ("big", self.size.concat_big_planes, self.size.concat_big_imsize)):
            data = self.project_case(f"concat-{planes}x{imsize}", {"kind": "concat", "planes": planes,
                                                                  "imsize": imsize, "modes": modes})
            if data is not None:
                conc[key] = {**{k: data.get(k) for k in ("ok", "error", "modes", "stages", "peak_tree_rss_bytes")},
                             "planes": planes, "imsize": imsize}

    # -- scaling model ----------------------------------------------------------------------
    def scaling(self) -> None:
        sec = self.results["sections"].get("cube")
        if not sec:
            return
        ref, w1 = report.case_by(sec, "tclean"), report.case_by(sec, "pclean", 1)
        wmax = max((c for c in sec["cases"] if c["impl"] == "pclean" and c.get("ok") and (c.get("workers") or 0) > 1),
                   key=lambda c: c["workers"], default=None)
        if not (ref and ref.get("ok") and w1 and w1.get("ok") and w1.get("subcube_seconds")):
            self.results["skipped"].append("scaling model: needs the cube's tclean and 1-worker runs")
            return
        nchan = sec["params"]["nchan"]
        if wmax and wmax.get("subcube_seconds"):
            a, b = scaling.fit_per_task(sum(w1["subcube_nchan"]), sum(w1["subcube_seconds"]),
                                        wmax["subcube_nchan"], wmax["subcube_seconds"])
            src = f"cube of {nchan} channels: 1 sub-cube vs {len(wmax['subcube_nchan'])} sub-cubes"
        else:
            a, b = 0.0, sum(w1["subcube_seconds"]) / nchan
            src = f"cube of {nchan} channels, 1 worker only"
        big = (self.results.get("concat") or {}).get("big") or {}
        per_part = ((big.get("modes") or {}).get("movevirtual") or {}).get("per_plane_s", 0.0) if big.get("ok") else 0.0
        startup = (wmax or w1).get("stages", {}).get("cluster start", 0.0)
        # Serial tclean does the same work per channel; what is left of its time is its fixed cost.
        serial_fixed = ref["engine_s"] - nchan * b
        serial_per_channel = b if serial_fixed >= 0 else ref["engine_s"] / nchan
        cost = scaling.CubeCost(per_channel_s=b, per_task_s=a, startup_s=startup, concat_per_part_s=per_part,
                                serial_per_channel_s=serial_per_channel, serial_fixed_s=max(serial_fixed, 0.0),
                                source=src)
        self.results["scaling"] = {"cost": cost.model_dump(), "nchan": 1000,
                                   "table": scaling.scaling_table(cost, 1000, (16, 64, 1000))}

    # -- machine, report --------------------------------------------------------------------
    def machine(self) -> dict:
        import importlib.metadata as md

        import psutil

        def ver(name: str) -> str:
            try:
                return md.version(name)
            except md.PackageNotFoundError:
                return "-"

        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            cpu = platform.processor() or "unknown"
        load = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        return {"cpu_model": cpu, "cores": cores, "memory_gib": psutil.virtual_memory().total / 2**30,
                "python": platform.python_version(), "platform": platform.platform(), "casatools": ver("casatools"),
                "casatasks": ver("casatasks"), "dask": ver("dask"), "distributed": ver("distributed"),
                "airflow": ver("apache-airflow"), "numpy": ver("numpy"), "project": ver("airflow-provider-pclean"),
                "load_at_start": round(load, 2),
                "busy_warning": (f"load average {load:.1f} on {cores} cores when the run started: other work was "
                                 "running, so timings are not meaningful") if load > 0.5 * cores else ""}

    def finish(self, plots: bool = True) -> None:
        self.results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.results["duration_s"] = time.monotonic() - self.t0
        self.results["machine"]["load_at_end"] = round(os.getloadavg()[0], 2)
        write_outputs(self.results, self.out, plots=plots)
        self.say(f"wrote {results_md_path(self.out)} and {self.out / 'results.json'}")


def mpicasa_figures(data: dict, servers: int, command: list[str]) -> dict:
    """An mpicasa case's figures: rank 0's own (its result file, or the JSON line it printed when no
    file was read) and the whole process's time as the parent saw it (parent_wall_s: mpirun's start
    to its exit, its linger after the script included)."""
    from bench.mpicasa_env import parse_result_line

    if "engine_s" not in data and data.get("log") and Path(data["log"]).exists():
        printed = parse_result_line(Path(data["log"]).read_text(errors="replace"))
        if printed:
            keep = {k: data[k] for k in data if k in ("memory", "peak_tree_rss_bytes", "peak_process_rss_bytes",
                                                        "peak_worker_rss_bytes", "parent_wall_s", "log", "error")}
            data = {**printed, **keep, "ok": bool(printed.get("ok")) and "timed out" not in (data.get("error") or "")}
            if data["ok"]:
                data.pop("error", None)
    data["command"] = " ".join(shlex.quote(a) for a in command)
    if data.get("ok") and data.get("mpi_servers") != servers:
        data["ok"] = False
        data["error"] = (f"asked for {servers} mpicasa servers, rank 0 saw {data.get('mpi_servers')} "
                         f"(MPI enabled: {data.get('mpi_enabled')})")
    return data


def results_md_path(out: Path) -> Path:
    """bench/RESULTS.md for the recorded run (out = bench/results); <out>/RESULTS.md for any other."""
    return BENCH / "RESULTS.md" if Path(out).resolve() == (BENCH / "results").resolve() else Path(out) / "RESULTS.md"


def write_outputs(results: dict, out: Path, plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md = results_md_path(out)
    results["targets"] = report.evaluate_targets(results)
    if plots:
        made = [report.plot_speedup(results, out / "speedup.png"), report.plot_stages(results, out / "stages.png")]
        # Paths relative to RESULTS.md so the images show where it is read.
        results["plots"] = [os.path.relpath(p, md.parent) for p in made if p]
    _atomic_write(out / "results.json", json.dumps(results, indent=1, default=str))
    _atomic_write(md, report.render_markdown(results))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="tiny: seconds-scale smoke run; small: under 5 min; medium: the measurement (~35 min, 2 cores); "
                        "wide: a 256-channel cube (with --only cube,mpicasa)")
    p.add_argument("--only", default=",".join(STAGES),
                   help=f"comma-separated stages among {','.join(STAGES)} (default: all)")
    p.add_argument("--mpicasa-servers", default="",
                   help="comma-separated server counts for the mpicasa rows (default: this engine's parallel "
                        "worker counts, 2 and up to the cores)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run instead of the size's own budget (e.g. a trial on a busy machine)")
    p.add_argument("--out", default=str(BENCH / "results"), help="folder for results.json and the plots")
    p.add_argument("--work", default=None, help="scratch folder for MSs and images (default work/bench/<size>)")
    p.add_argument("--keep-work", action="store_true", help="keep the images (the MSs are always kept for reruns)")
    p.add_argument("--render-only", action="store_true", help="re-render RESULTS.md and plots from <out>/results.json")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.only if s not in STAGES]
    if bad:
        p.error(f"--only: unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    try:
        args.mpicasa_servers = ([int(s) for s in args.mpicasa_servers.split(",") if s.strip()]
                                or [w for w in worker_counts() if w > 1])
    except ValueError:
        p.error(f"--mpicasa-servers: integers, got {args.mpicasa_servers!r}")
    if min(args.mpicasa_servers) < 1:
        p.error("--mpicasa-servers: at least one server")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    if args.render_only:
        write_outputs(json.loads((out / "results.json").read_text()), out)
        return 0
    size = SIZES[args.size]
    if args.budget:
        size = size.model_copy(update={"budget_s": args.budget})
    # Under the repository's work/ folder, which git ignores: MSs and images are never committed.
    work = Path(args.work or REPO / "work" / "bench" / size.name).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    b = Bench(size, work, out, command)
    b.results["machine"] = b.machine()
    from pclean_provider.casa.runtime import ensure_casa_runtime

    ensure_casa_runtime(log_dir=work / "logs")  # image comparisons in this process
    b.say(f"size {size.name}, stages {','.join(args.only)}, work {work}, budget {size.budget_s / 60:.0f} min")
    if b.results["machine"]["busy_warning"]:
        b.say("WARNING: " + b.results["machine"]["busy_warning"])
    try:
        if "cube" in args.only:
            b.run_imaging("cube", "cube", cube_params(size))
        if "continuum" in args.only:
            for d in ("hogbom", "mtmfs"):
                b.run_imaging(f"continuum_{d}", "continuum", continuum_params(size, d))
        if "concat" in args.only:
            b.run_concat()
        if "published" in args.only:
            b.run_published()
        if "mpicasa" in args.only:
            b.run_mpicasa(args.mpicasa_servers)
        if "airflow" in args.only:
            b.run_airflow()
        b.scaling()
    except KeyboardInterrupt:
        b.results["errors"].append("interrupted; the figures so far are reported")
    finally:
        b.finish()
        if not args.keep_work:
            shutil.rmtree(work / "images", ignore_errors=True)
            shutil.rmtree(work / "dask", ignore_errors=True)
    return 1 if b.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
