"""The benchmark harness's pure logic: the scaling model, target verdicts and RESULTS.md rendering.

No timing is asserted here (speed is measured by bench/, never by a test); these check that the
harness turns given figures into the right verdicts and text.
"""

from __future__ import annotations

import math

import pytest

from bench import report, scaling, scaling_reads
from bench.sizes import SIZES, continuum_params, cube_params, worker_counts
from bench.treemem import TreeMemorySampler, worker_peak_bytes


def _cost(**kw) -> scaling.CubeCost:
    base = dict(per_channel_s=2.0, per_task_s=5.0, startup_s=3.0, concat_per_part_s=0.01,
                serial_per_channel_s=2.0, serial_fixed_s=0.0)
    return scaling.CubeCost(**{**base, **kw})


def test_fit_per_task_recovers_fixed_and_per_channel_cost():
    # 1 sub-cube of 128 channels: 5 + 2*128; two of 64: 5 + 2*64 each.
    a, b = scaling.fit_per_task(128, 5 + 2 * 128, [64, 64], [5 + 2 * 64, 5 + 2 * 64])
    assert a == pytest.approx(5.0)
    assert b == pytest.approx(2.0)


def test_fit_per_task_clamps_a_negative_fixed_cost():
    # Contention can make a half-size sub-cube as slow as the whole; no negative cost per channel then.
    a, b = scaling.fit_per_task(100, 100.0, [50, 50], [110.0, 110.0])
    assert a == 0.0
    assert b == pytest.approx(1.0)


def test_predicted_wall_follows_the_model():
    cost = _cost()
    # 1000 channels on 16 workers: 63 channels per sub-cube.
    assert scaling.predict_wall(cost, 1000, 16) == pytest.approx(3 + 5 + 63 * 2.0 + 16 * 0.01)
    # More workers than channels: one channel each, never more parts than channels.
    assert scaling.predict_wall(cost, 10, 1000) == pytest.approx(3 + 5 + 2.0 + 10 * 0.01)


def test_scaling_table_speedup_and_efficiency():
    rows = scaling.scaling_table(_cost(), 1000, (16, 64, 1000))
    assert [r["workers"] for r in rows] == [16, 64, 1000]
    serial = 2.0 * 1000
    for r in rows:
        assert r["speedup_vs_serial"] == pytest.approx(serial / r["wall_s"])
        assert r["efficiency"] == pytest.approx(r["speedup_vs_serial"] / r["workers"])
    # Fixed overheads weigh more as the per-worker share shrinks.
    assert rows[0]["overhead_share"] < rows[1]["overhead_share"] < rows[2]["overhead_share"]


def _case(impl, workers, wall, engine=None, ok=True, worker_rss=0, process_rss=100 * 2**20, **extra):
    return {"label": f"{impl} w{workers}", "impl": impl, "workers": workers, "ok": ok, "wall_s": wall,
            "engine_s": engine or wall, "peak_tree_rss_bytes": 2 * process_rss, "peak_process_rss_bytes": process_rss,
            "peak_worker_rss_bytes": worker_rss, **extra}


def _results(cube_w2_wall=50.0, overhead_share=0.05, size="medium"):
    cube = {"params": {"nchan": 128}, "cases": [
        _case("tclean", 1, 100.0, process_rss=400 * 2**20),
        _case("pclean", 2, cube_w2_wall, worker_rss=300 * 2**20,
              fidelity={"max_abs_diff_over_peak": 1e-4, "beam_major_rel_max": 0.0}),
        _case("published", 2, 240.0, ok=False, error="ConcatError: no cube\nmore"),
    ]}
    cont = {"params": {}, "cases": [_case("tclean", 1, 60.0, process_rss=300 * 2**20),
                                    _case("pclean", 2, 40.0, worker_rss=500 * 2**20, minor_cycle_share=0.2)]}
    return {"size": size, "command": "bench/run.py --size medium", "machine": {"cores": 2, "memory_gib": 24.0},
            "sections": {"cube": cube, "continuum_hogbom": cont},
            "airflow": {"ok": True, "overhead_share": overhead_share, "pclean_s": 60.0, "imaging_span_s": 63.0,
                        "overhead_s": 3.0, "dag_wall_s": 90.0, "spans": {"imaging": 63.0}},
            "concat": {"big": {"ok": True, "planes": 1000, "imsize": 32,
                               "modes": {"movevirtual": {"seconds": 5.0, "per_plane_s": 0.005}}}},
            "scaling": {"cost": _cost().model_dump(), "table": scaling.scaling_table(_cost())},
            "skipped": ["airflow: budget"], "errors": []}


def _status(targets, prefix):
    return next(t for t in targets if t["target"].startswith(prefix))["status"]


def test_targets_are_judged_met_and_missed_plainly():
    t = report.evaluate_targets(_results(cube_w2_wall=50.0, overhead_share=0.05))
    assert _status(t, "cube speedup on 2 workers >= 1.8x") == "met"  # 100/50 = 2.0
    assert _status(t, "continuum (hogbom)") == "met"  # 60/40 = 1.5
    assert _status(t, "continuum (mtmfs)") == "not measured"
    assert _status(t, "Airflow overhead") == "met"
    assert _status(t, "peak RSS per worker <= serial tclean's (cube") == "met"  # 300 <= 400 MiB
    assert _status(t, "peak RSS per worker <= serial tclean's (continuum_hogbom") == "MISSED"  # 500 > 300 MiB

    t = report.evaluate_targets(_results(cube_w2_wall=80.0, overhead_share=0.25))
    assert _status(t, "cube speedup on 2 workers >= 1.8x") == "MISSED"  # 1.25x
    assert _status(t, "cube speedup on 2 workers >= 1.6x") == "MISSED"
    assert _status(t, "Airflow overhead") == "MISSED"


def test_failed_runs_give_no_speedup():
    ref = _case("tclean", 1, 100.0)
    assert report.speedup(ref, _case("pclean", 2, 50.0, ok=False)) is None
    assert report.speedup(ref, _case("pclean", 2, 50.0)) == pytest.approx(2.0)


def test_results_markdown_names_command_machine_targets_and_failures():
    md = report.render_markdown(_results(cube_w2_wall=80.0))
    assert "`bench/run.py --size medium`" in md
    assert "| cube speedup on 2 workers >= 1.8x (issue 9) | 1.25x | MISSED |" in md
    assert "ConcatError: no cube" in md and "more" not in md.split("ConcatError: no cube")[1].split("|")[0]
    assert "serial minor cycle 20% of engine time" in md
    assert "| 1,000 | 32x32 | movevirtual | 5.0 | 5.00 |" in md
    assert "skipped: airflow: budget" in md
    for r in scaling.MEMO13_ARRAY:
        assert f"| {r['breadth']:,} | {r['hours']} |" in md
    # Not the medium size: the report says its figures are not the measurement.
    assert "its figures are not the measurement" in report.render_markdown(_results(size="tiny"))
    assert "its figures are not the measurement" not in md


def test_sizes_meet_the_issue():
    medium = SIZES["medium"]
    assert medium.cube_ms.nchan >= 128 and medium.cube_imsize >= 512
    assert medium.continuum_ms.hours * 3600 / medium.continuum_ms.integration_s * medium.continuum_ms.antennas > \
        SIZES["small"].continuum_ms.hours * 3600 / SIZES["small"].continuum_ms.integration_s * SIZES["small"].continuum_ms.antennas
    assert medium.budget_s <= 35 * 60 and SIZES["small"].budget_s <= 5 * 60
    assert cube_params(medium)["nchan"] == medium.cube_ms.nchan  # explicit for every implementation
    assert continuum_params(medium, "mtmfs")["nterms"] == 2 and "nterms" not in continuum_params(medium, "hogbom")
    assert worker_counts(2) == [1, 2] and worker_counts(8) == [1, 2, 4, 8]


def test_tree_sampler_counts_children(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 * 2**20); time.sleep(5)"])
    try:
        import psutil

        deadline = 50
        while deadline and psutil.Process(child.pid).memory_info().rss < 64 * 2**20:
            import time

            time.sleep(0.1)
            deadline -= 1
        s = TreeMemorySampler(psutil.Process().pid)
        s.sample_once()
    finally:
        child.kill()
        child.wait()
    summary = s.summary()
    assert summary["peak_tree_rss_bytes"] >= 64 * 2**20 + summary["processes"][-1]["peak_rss_bytes"]
    assert worker_peak_bytes(summary, psutil.Process().pid) >= 64 * 2**20
    assert not math.isnan(summary["peak_tree_rss_bytes"])


def test_parallel_ceiling_reports_alone_pair_and_ratio():
    from bench.parallel_ceiling import measure

    probe = measure(loops=2, repeat=1)
    assert probe["alone_s"] > 0 and probe["pair_each_s"] > 0
    # The three figures are each rounded to 3 decimals: recomputing the ratio from the rounded times
    # is off by up to that rounding, relative to times that are ~0.15 s on a quick probe.
    ratio = 2 * probe["alone_s"] / probe["pair_each_s"]
    rounding = ratio * (0.0005 / probe["alone_s"] + 0.0005 / probe["pair_each_s"]) + 0.0005
    assert abs(probe["two_process_throughput"] - ratio) <= rounding


def test_continuum_markdown_states_the_machine_s_two_process_ceiling():
    from bench.bench_continuum import stage_markdown

    probe = {"two_process_throughput": 1.45, "alone_s": 4.1, "pair_each_s": 5.7}
    text = stage_markdown({"machine": {"cpus": 2, "load_average_1min_at_start": 0.2,
                                       "parallel_ceiling_before": probe, "parallel_ceiling_after": probe},
                           "imaging": {}, "shapes": {}})
    assert "1.45x one alone before the cases" in text and "after the cases" in text


# -- CASA's MPI peer (mpicasa): the launch, rank 0's printed figures and the side-by-side rows --------


def test_mpicasa_command_has_n_plus_one_ranks_and_passes_the_casa_environment():
    from bench.mpicasa_env import mpirun_command

    cmd = mpirun_command("/v/bin/mpirun", "/v/bin/python", "bench/mpicasa_case.py", 2,
                         ["OMP_NUM_THREADS", "CASASITECONFIG", "OMP_NUM_THREADS"])
    assert cmd[:7] == ["/v/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "3"]
    # Each variable once, in a stable order; then the interpreter and the script (the case files follow).
    assert cmd[7:] == ["-x", "CASASITECONFIG", "-x", "OMP_NUM_THREADS", "/v/bin/python", "bench/mpicasa_case.py"]
    with pytest.raises(ValueError):
        mpirun_command("mpirun", "python", "s.py", 0, [])


def test_mpicasa_result_line_is_found_among_casa_and_mpi_output():
    from bench.mpicasa_case import RESULT_MARK
    from bench.mpicasa_env import parse_result_line

    text = "\n".join(["2026-12-06 INFO tclean::::casa  ##### Begin Task: tclean",
                      RESULT_MARK + '{"ok": false, "error": "first"}',
                      "  " + RESULT_MARK + '{"ok": true, "engine_s": 12.5, "mpi_servers": 2, "iterations": 40}',
                      "prterun: lingering daemon output"])
    assert parse_result_line(text) == {"ok": True, "engine_s": 12.5, "mpi_servers": 2, "iterations": 40}
    assert parse_result_line("no figures here") is None
    assert parse_result_line(RESULT_MARK + "{not json") is None
    assert parse_result_line(RESULT_MARK + "[1, 2]") is None


def test_mpicasa_figures_take_the_printed_line_when_no_result_file_was_read(tmp_path):
    from bench.mpicasa_case import RESULT_MARK
    from bench.run import mpicasa_figures

    log = tmp_path / "output.log"
    log.write_text(RESULT_MARK + '{"ok": true, "engine_s": 7.0, "wall_s": 11.0, "mpi_servers": 2}\n')
    got = mpicasa_figures({"ok": False, "error": "exit code 1, no result written", "log": str(log),
                           "parent_wall_s": 30.0, "peak_tree_rss_bytes": 5}, 2, ["mpirun", "-n", "3", "py"])
    assert got["ok"] and got["engine_s"] == 7.0 and got["parent_wall_s"] == 30.0 and got["peak_tree_rss_bytes"] == 5
    assert got["command"] == "mpirun -n 3 py" and "error" not in got
    # Fewer servers than asked for (e.g. MPI not enabled on rank 0) is a failed row, not a figure.
    bad = mpicasa_figures({"ok": True, "engine_s": 7.0, "mpi_servers": 0, "mpi_enabled": False}, 2, ["mpirun"])
    assert not bad["ok"] and "asked for 2 mpicasa servers, rank 0 saw 0" in bad["error"]


def test_mpicasa_pins_come_from_the_project_constraints(tmp_path):
    from bench.mpicasa_env import pinned_versions

    c = tmp_path / "constraints.txt"
    c.write_text("casatools==6.7.0.31\nCasatasks == 6.7.0.31  # comment\nsix==1.17.0\ndask==1\n")
    assert pinned_versions(c) == {"casatools": "6.7.0.31", "casatasks": "6.7.0.31", "six": "1.17.0"}


def _mpicasa_section():
    return {"params": {"specmode": "cube"}, "cases": [
        _case("mpicasa", 2, 30.0, engine=20.0, parent_wall_s=50.0,
              fidelity_products={".image_max_diff_over_peak": 0.0, ".residual_max_diff_over_peak": 0.0}),
        _case("tclean", 1, 40.0, engine=38.0, parent_wall_s=42.0),
        _case("pclean", 2, 25.0, engine=21.0, parent_wall_s=26.0,
              fidelity_products={".image_max_diff_over_peak": 2e-4, ".residual_max_diff_over_peak": 0.09}),
    ]}


def test_mpicasa_rows_give_call_and_whole_process_ratios_and_exactness():
    rows = report.mpicasa_rows(_mpicasa_section())
    assert [r["impl"] for r in rows] == ["tclean", "pclean", "mpicasa"]
    mpi = rows[2]
    assert mpi["call_s"] == 20.0 and mpi["whole_s"] == 50.0
    assert mpi["call_ratio"] == pytest.approx(38.0 / 20.0) and mpi["whole_ratio"] == pytest.approx(42.0 / 50.0)
    assert report.exactness(mpi["image_diff"]) == "exact" and report.exactness(rows[1]["residual_diff"]) == "9.0e-02"
    # Continuum's comparison names its products without the dot; tt0 is already in the figure.
    assert report.product_diff({"fidelity_products": {"residual_max_diff_over_peak": 1e-3}}, "residual") == 1e-3
    assert report.product_diff({"fidelity": {"max_abs_diff_over_peak": 0.0}}, "image") == 0.0


def test_mpicasa_table_and_target_in_results_markdown():
    res = _results()
    res["sections"]["cube"] = _mpicasa_section()
    res["mpicasa_env"] = {"venv": "bench/.venv-mpicasa", "launcher": "mpirun (Open MPI) 5.0.11",
                          "versions": {"casampi": "0.6.0"}, "pip_check": "No broken requirements found."}
    md = report.render_markdown(res)
    assert "### Cube: serial tclean, this engine and CASA's MPI tclean (mpicasa)" in md
    assert "| mpicasa w2 | 2 | 20.0 | 50.0 | 1.90x | 0.84x | 200 | exact | exact | - | - |  |" in md
    assert "casampi 0.6.0" in md and "mpirun (Open MPI) 5.0.11" in md
    t = report.evaluate_targets(res)
    # pclean's whole process 50/26 = 1.92x of mpicasa's, but its call 20/21 = 0.95x: missed.
    assert _status(t, "this engine >= 1.2x faster than mpicasa, same compute processes (cube, 2)") == "MISSED"
    # Without mpicasa rows, no such target and no such table (older results render as before).
    plain = report.render_markdown(_results())
    assert "mpicasa" not in plain


def test_run_case_stops_a_child_that_left_the_case_s_process_group(tmp_path):
    """mpirun's launcher starts each rank in a session of its own: killing the case's group alone would
    leave them running. The harness stops every process its memory sampler saw in the case's tree."""
    import sys
    import time

    import psutil

    from bench.measure import run_case

    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time, pathlib; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
              f"pathlib.Path({str(pid_file)!r}).write_text(str(c.pid)); time.sleep(120)")
    data = run_case(tmp_path / "case", {"kind": "test"}, [sys.executable, "-c", script], env={}, timeout_s=2.0)
    assert not data["ok"] and "timed out" in data["error"]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        psutil.Process(child).kill()
        raise AssertionError(f"the child {child} outside the case's group outlived the case")


def test_session_channels_add_a_margin_per_side_with_a_neighbour():
    # 48 channels in 4 sessions, linear interpolation: edges 12 + 1, inner 12 + 2.
    assert scaling_reads.session_channels(48, 4, 1) == [13, 14, 14, 13]
    assert scaling_reads.session_channels(10, 3, 0) == [4, 3, 3]
    assert scaling_reads.session_channels(48, 1, 1) == [48]


def test_fit_line_recovers_fixed_and_per_channel_bytes():
    points = [(n, 10e6 + 7e6 * n) for n in (7, 8, 13, 14, 25)]
    line = scaling_reads.fit_line(points)
    assert line["a"] == pytest.approx(10e6)
    assert line["b"] == pytest.approx(7e6)
    assert max(map(abs, line["residuals"])) < 1e-9
    with pytest.raises(ValueError):
        scaling_reads.fit_line([(5, 1.0), (5, 2.0)])


def test_loop_bytes_sums_the_sessions():
    fit = {"a": 10.0, "b": 2.0, "coordinator": 1.0}
    # The closed form equals the sum over the sessions' channels.
    expected = 1.0 + sum(10.0 + 2.0 * n for n in scaling_reads.session_channels(48, 4, 1))
    assert scaling_reads.loop_bytes(fit, 48, 4, 1) == pytest.approx(expected)
    # Never more sessions than half the channels.
    assert scaling_reads.loop_bytes(fit, 8, 100, 0) == pytest.approx(1.0 + 4 * 10.0 + 2.0 * 8)


def test_crossover_is_the_first_worker_count_where_reads_take_longer():
    # Reads 10 + 5 W seconds, CPU 1000 / W: 10 + 5*13 = 75 < 76.9, 10 + 5*14 = 80 >= 71.4.
    assert scaling_reads.crossover(lambda w: 10 + 5 * w, lambda w: 1000 / w, 100) == 14
    assert scaling_reads.crossover(lambda w: 0.0 * w, lambda w: 1.0, 100) is None
