"""The benchmark harness's pure logic: the scaling model, target verdicts and RESULTS.md rendering.

No timing is asserted here (speed is measured by bench/, never by a test); these check that the
harness turns given figures into the right verdicts and text.
"""

from __future__ import annotations

import math

import pytest

from bench import report, scaling
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
