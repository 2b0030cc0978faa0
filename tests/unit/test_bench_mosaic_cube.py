"""bench/bench_mosaic_cube.py's pure logic: a case's verdict and the Markdown it prints for RESULTS.md.

No CASA and no timing: given figures in, the right verdict and table rows out.
"""

from __future__ import annotations

import pytest

from bench import bench_mosaic_cube as mb

PRODUCTS_EXACT = {s: 0.0 for s in mb.PRODUCTS}


def _compare(diffs=None, missing=None, beam=0.0):
    return {"max_diff_over_peak": dict(PRODUCTS_EXACT if diffs is None else diffs), "missing": missing or {},
            "beam_major_rel_max": beam, "freq_max_abs_diff_hz": 0.0}


def _tclean(seconds=100.0, process=105.0, iterdone=300, stopcode=1):
    return {"seconds": seconds, "process_s": process, "iterdone": iterdone, "stopcode": stopcode, "nmajordone": 3}


def _pclean(seconds=50.0, process=62.0, iterdone=300, stopcode=1, nsubcubes=2):
    return {"seconds": seconds, "process_s": process, "cluster_start_s": 6.0, "cluster_stop_s": 0.7, "clusters": 1,
            "iterdone": iterdone, "stopcode": stopcode, "nmajordone": 3, "nsubcubes": nsubcubes,
            "channels_per_subcube": [12, 12], "stage_seconds": {}}


def test_a_bit_identical_case_on_two_sessions_is_exact_with_both_ratios():
    row = mb.summarize("cleaned", _tclean(), _pclean(), _compare())
    assert row["verdict"] == "exact" and row["sessions_ok"] and row["same_iterations"]
    assert row["ratio_call"] == pytest.approx(2.0)
    assert row["ratio_process"] == pytest.approx(105.0 / 62.0)


def test_verdict_reads_the_case_s_tolerance_and_the_iterations():
    small = {**PRODUCTS_EXACT, ".psf": 5e-5}
    assert mb.summarize("cleaned", _tclean(), _pclean(), _compare(small))["verdict"] == "within tolerance"
    # niter=0 is held to 1e-5 of the peak: the same figure fails there.
    assert mb.summarize("dirty", _tclean(), _pclean(), _compare(small))["verdict"] == "NOT EXACT"
    # Identical pixels but another iteration count or stop code is not tclean's result.
    assert mb.summarize("cleaned", _tclean(), _pclean(iterdone=299), _compare())["verdict"] == "NOT EXACT"
    assert mb.summarize("cleaned", _tclean(), _pclean(stopcode=2), _compare())["verdict"] == "NOT EXACT"
    # A product that only one side wrote is not exact either.
    missing = {s: v for s, v in PRODUCTS_EXACT.items() if s != ".model"}
    row = mb.summarize("cleaned", _tclean(), _pclean(), _compare(missing, {".model": "pclean"}))
    assert row["verdict"] == "NOT EXACT"
    # NaN where the other cube has a value: the finite pixels may agree, the cubes do not.
    nan = {**_compare(), "nan_mismatch": [".image"]}
    assert mb.summarize("cleaned", _tclean(), _pclean(), nan)["verdict"] == "NOT EXACT"
    assert "exact (NaN elsewhere)" in mb.markdown(_report({"cleaned": mb.summarize("cleaned", _tclean(),
                                                                                   _pclean(), nan)}))


def test_one_session_is_flagged_not_hidden():
    row = mb.summarize("dirty", _tclean(iterdone=0, stopcode=3), _pclean(iterdone=0, stopcode=3, nsubcubes=1),
                       _compare())
    assert row["verdict"] == "exact" and not row["sessions_ok"]


def _report(cases):
    return {"command": "python bench/bench_mosaic_cube.py", "out": "bench/results/mosaic_cube.json",
            "load_at_start": 0.12, "cores": 2, "imaging": {"imsize": [360, 360], "cell": "10arcsec"},
            "ms": {"nrows": 144000, "params": {"fields": 7, "antennas": 16, "nchan": 24, "hours": 4.0,
                                               "integration_s": 12.0}},
            "parallel_ceiling_before": {"two_process_throughput": 1.8},
            "case_params": {"dirty": {"niter": 0}, "cleaned": {"niter": 300, "threshold": "10mJy"}},
            "cases": cases}


def test_markdown_gives_a_time_row_and_an_exactness_row_per_case():
    dirty = mb.summarize("dirty", _tclean(80.0, 84.0, 0, 3), _pclean(60.0, 72.0, 0, 3), _compare())
    cleaned = mb.summarize("cleaned", _tclean(), _pclean(nsubcubes=1),
                           _compare({**{s: v for s, v in PRODUCTS_EXACT.items() if s != ".model"},
                                     ".residual": 2e-6}, {".model": "pclean"}))
    md = mb.markdown(_report({"dirty": dirty, "cleaned": cleaned}))
    assert "7 pointings, 16 antennas, 24 channels, 4.0 h at 12 s (144,000 rows)" in md
    assert "image 360 px of 10arcsec" in md and "Two processes at once gave 1.80x" in md
    assert "| dirty (niter=0) | 80.0 | 84.0 | 60.0 | 72.0 | 6.0 | **1.33x** | 1.17x | 2 | 0 / 0 | 3 / 3 |" in md
    assert ("| cleaned (niter 300, threshold 10mJy) | 100.0 | 105.0 | 50.0 | 62.0 | 6.0 | **2.00x** | 1.69x | "
            "1 (expected 2) | 300 / 300 | 1 / 1 |") in md
    assert "| dirty (niter=0) | exact | exact | exact | exact | exact | exact | exact | exact (1e-05) |" in md
    assert ("| cleaned (niter 300, threshold 10mJy) | exact | 2.0e-06 | exact | exact | only in tclean | exact | "
            "exact | NOT EXACT (1e-04) |") in md


def _mpicasa(seconds=70.0, process=90.0, iterations=300, ok=True):
    return {"ok": ok, "seconds": seconds, "process_s": process, "iterations": iterations, "engine_s": seconds}


def test_the_mpicasa_row_compares_both_ways_and_needs_tclean_s_iterations():
    peer = mb.summarize_peer("cleaned", _tclean(), _pclean(), _mpicasa(), _compare())
    assert peer["verdict"] == "exact"
    assert peer["serial_over_mpicasa_call"] == pytest.approx(100.0 / 70.0)
    assert peer["mpicasa_over_pclean_call"] == pytest.approx(70.0 / 50.0)
    assert peer["mpicasa_over_pclean_process"] == pytest.approx(90.0 / 62.0)
    # Other iterations than serial tclean's, or products beyond the tolerance: not tclean's result.
    assert mb.summarize_peer("cleaned", _tclean(), _pclean(), _mpicasa(iterations=301), _compare())["verdict"] \
        == "NOT EXACT"
    off = {**PRODUCTS_EXACT, ".residual": 3e-3}
    assert mb.summarize_peer("cleaned", _tclean(), _pclean(), _mpicasa(), _compare(off))["verdict"] == "NOT EXACT"
    # A run that failed says so, with its error, instead of figures.
    failed = mb.summarize_peer("dirty", _tclean(), _pclean(), {"ok": False, "error": "mpirun exited 1"}, None)
    assert failed["verdict"].startswith("FAILED: mpirun exited 1")


def test_markdown_adds_the_mpicasa_table_only_when_it_ran():
    dirty = mb.summarize("dirty", _tclean(80.0, 84.0, 0, 3), _pclean(60.0, 72.0, 0, 3), _compare())
    assert "mpicasa" not in mb.markdown(_report({"dirty": dirty}))
    dirty["mpicasa"] = mb.summarize_peer("dirty", _tclean(80.0, 84.0, 0, 3), _pclean(60.0, 72.0, 0, 3),
                                         _mpicasa(75.0, 96.0, 0), _compare())
    md = mb.markdown(_report({"dirty": dirty}))
    assert "| dirty (niter=0) | 75.0 | 96.0 | 1.07x | 0.88x | **1.25x** | 1.33x | exact | 0 | exact (1e-05) |" in md
