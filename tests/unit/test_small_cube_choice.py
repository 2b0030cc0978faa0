"""A parallel cube too small for a cluster of its own is imaged in this process: the estimate of serial
tclean's time (engine/cube/small_cube.py), the choice, and the parameter that sets it."""

from __future__ import annotations

import pytest

from pclean_provider.config import ConfigError, PcleanConfig
from pclean_provider.engine.cube import small_cube
from pclean_provider.engine.cube.small_cube import CubeWork, choose, estimate_serial_seconds, explain

DEFAULT = PcleanConfig().extras.in_process_below_s


def _work(nchan=10, px=128, rows=5_400, cleaned=False, gridder="standard", niter=None) -> CubeWork:
    return CubeWork(nchan=nchan, nx=px, ny=px, visibilities=rows * nchan, cleaned=cleaned, gridder=gridder,
                    niter=(200 if cleaned else 0) if niter is None else niter)


def test_default_threshold_is_the_cold_start_and_zero_is_allowed():
    assert DEFAULT == 5.0
    assert PcleanConfig.from_flat(in_process_below_s=0).extras.in_process_below_s == 0.0


@pytest.mark.parametrize("value", [-1, float("nan"), True])
def test_bad_threshold_names_the_parameter_and_the_fix(value):
    with pytest.raises(ConfigError) as err:
        PcleanConfig.from_flat(in_process_below_s=value)
    assert "in_process_below_s" in str(err.value)


def test_estimate_grows_with_data_channels_and_pixels():
    base = estimate_serial_seconds(_work())
    assert base > small_cube.SET_UP_S
    assert estimate_serial_seconds(_work(rows=50_000)) > base
    assert estimate_serial_seconds(_work(nchan=40)) > base
    assert estimate_serial_seconds(_work(px=512)) > base


def test_a_cleaned_cube_costs_the_cleaned_factor_and_a_mosaic_more():
    dirty = estimate_serial_seconds(_work())
    assert estimate_serial_seconds(_work(cleaned=True)) == pytest.approx(small_cube.CLEANED_FACTOR * dirty)
    assert 2.5 <= small_cube.CLEANED_FACTOR <= 3.5  # measured 2.8-2.9x
    for gridder in ("mosaic", "awproject", "wproject", "widefield"):
        assert estimate_serial_seconds(_work(gridder=gridder)) > dirty


def test_a_loose_niter_counts_as_a_deep_clean():
    shallow = estimate_serial_seconds(_work(cleaned=True, niter=small_cube.DEEP_NITER))
    deep = estimate_serial_seconds(_work(cleaned=True, niter=small_cube.DEEP_NITER + 1))
    assert deep == pytest.approx(shallow * small_cube.DEEP_CLEANED_FACTOR / small_cube.CLEANED_FACTOR)
    assert "deep" in _work(cleaned=True, niter=100_000).describe()


def test_the_bench_small_deep_clean_keeps_the_cluster():
    # bench/sizes.py's small cube: 32 channels of 256 px, 7,920 rows, niter 100000 to 10 mJy (6,796
    # iterations): serial 17.5 s, 1.32x whole process on 2 workers (bench/RESULTS.md, session 18).
    work = _work(nchan=32, px=256, rows=7_920, cleaned=True, niter=100_000)
    assert not choose(estimate_serial_seconds(work), 2, DEFAULT).in_process
    # With a shallow niter the same cube is estimated small: the user's niter is the only hint.
    assert choose(estimate_serial_seconds(_work(nchan=32, px=256, rows=7_920, cleaned=True)), 2, DEFAULT).in_process


def test_the_smallest_cube_stays_in_this_process_with_a_loose_niter():
    # 10 channels of 128 px cleaned to a threshold (205 iterations) whatever niter allows: 2.1 s serial.
    assert choose(estimate_serial_seconds(_work(cleaned=True, niter=100_000)), 2, DEFAULT).in_process


@pytest.mark.parametrize("cleaned", [False, True], ids=["dirty", "cleaned"])
def test_the_measured_small_cube_stays_in_this_process(cleaned):
    # bench_small_cube.py's cube: 10 channels of 128 px, 10 antennas for 1 h at 30 s (5,400 rows);
    # serial tclean 1.5 s dirty / 4.4 s cleaned, pclean on a new 2-worker cluster 10.6 / 15.2 s.
    work = _work(cleaned=cleaned)
    choice = choose(estimate_serial_seconds(work), 2, DEFAULT)
    assert choice.in_process and choice.saved_s < choice.start_up_s == DEFAULT


@pytest.mark.parametrize("cleaned", [False, True], ids=["dirty", "cleaned"])
def test_the_medium_cube_keeps_the_cluster(cleaned):
    # bench/sizes.py's medium cube: 128 channels of 512 px, 15,840 rows; cleaned: serial 226 s, 1.96x
    # on 2 workers.
    work = _work(nchan=128, px=512, rows=15_840, cleaned=cleaned)
    est = estimate_serial_seconds(work)
    choice = choose(est, 2, DEFAULT)
    assert not choice.in_process and choice.saved_s > DEFAULT, est


def test_the_bench_reads_cube_keeps_the_cluster():
    # bench_reads.py's shape a: 48 channels of 256 px, 24,300 rows, cleaned deep (serial 41-79 s; the
    # exact loop 1.06-1.30x on 2 workers): estimated far under its time, still above the threshold.
    work = _work(nchan=48, px=256, rows=24_300, cleaned=True)
    assert not choose(estimate_serial_seconds(work), 2, DEFAULT).in_process


def test_the_mosaic_cube_keeps_the_cluster_and_its_estimate_is_near_its_measured_time():
    # bench/RESULTS.md's 7-pointing mosaic cube: 24 channels of 360 px, 144,000 rows; serial dirty 83 s.
    work = _work(nchan=24, px=360, rows=144_000, gridder="mosaic")
    est = estimate_serial_seconds(work)
    assert 60 < est < 110 and not choose(est, 2, DEFAULT).in_process


def test_zero_always_uses_the_cluster():
    assert not choose(0.1, 2, 0.0).in_process
    assert not choose(0.1, 1, 0.0).in_process
    assert not choose(0.1, 2, 0.0, warm=True).in_process


def test_saving_is_serial_time_less_a_share_per_worker():
    assert choose(30.0, 2, 20.0).saved_s == pytest.approx(15.0)
    assert choose(30.0, 4, 20.0).saved_s == pytest.approx(22.5)
    assert choose(30.0, 2, 20.0).in_process and not choose(30.0, 4, 20.0).in_process
    # one session runs alone whatever the cluster: nothing to save
    one = choose(1000.0, 1, 20.0)
    assert one.in_process and one.saved_s == 0.0


def test_a_live_kept_cluster_counts_its_per_call_cost_only():
    warm = choose(5.0, 2, DEFAULT, warm=True)
    assert warm.start_up_s == small_cube.WARM_START_S and not warm.in_process  # saves 2.5 s > 2 s
    assert choose(3.0, 2, DEFAULT, warm=True).in_process  # saves 1.5 s < 2 s
    assert choose(3.0, 2, 1.0, warm=True).start_up_s == 1.0  # never above the caller's threshold
    cold = choose(5.0, 2, DEFAULT)
    assert cold.in_process and cold.start_up_s == DEFAULT


def test_the_reason_gives_the_figures_and_the_way_back():
    work = _work(cleaned=True)
    choice = choose(estimate_serial_seconds(work), 2, DEFAULT)
    text = explain(choice, work)
    assert f"{choice.estimated_serial_s:.1f} s" in text and f"{choice.saved_s:.1f} s" in text
    assert "5 s" in text and "10 channels of 128x128 px" in text and "cleaned" in text
    assert "in_process_below_s=0" in text
    warm = explain(choose(1.0, 2, DEFAULT, warm=True), work)
    assert "kept cluster" in warm and "2 s" in warm
    assert "does not split" in explain(choose(1.0, 1, DEFAULT), work)


def test_run_cube_takes_workers_as_the_sessions_that_run_side_by_side(tmp_path):
    """The engine's glue: the plan's channels and sessions, the preflight's rows, the config's image."""
    from pclean_provider.casa.ms_selection import SelectionInfo
    from pclean_provider.engine.cube.run import _small_cube_choice
    from pclean_provider.engine.models import CubePlan

    cfg = PcleanConfig.from_flat(specmode="cube", imsize=[128, 128], niter=100, parallel=True, nworkers=4)
    sel = SelectionInfo(vis="x.ms", nrows=10_800, spws=[0], fields=[0], nchan_selected=10, nspw_total=2)
    assert sel.visibilities() == 54_000  # rows are shared between the MS's two spws

    def plan(nsessions: int) -> CubePlan:
        return CubePlan(imagename=str(tmp_path / "c"), workdir=str(tmp_path / "c.subcubes"), nchan=10,
                        frequencies_hz=[1e9] * 10, width_hz=1e6, frame="LSRK", niter=100, niter_sharing="",
                        nworkers=4, cube_chunksize=-1, tclean_kwargs={"gridder": "standard"}, specs=[],
                        estimated_memory_bytes_per_subcube=0).model_copy(update={"specs": [None] * nsessions})

    choice, work = _small_cube_choice(cfg, plan(2), [sel], 4, warm=False)
    assert choice.nworkers == 2 and work.cleaned and work.visibilities == 54_000 and (work.nx, work.ny) == (128, 128)
    assert work == _work(cleaned=True, niter=100)
    choice, _ = _small_cube_choice(cfg, plan(8), [sel, sel], 4, warm=True)
    assert choice.nworkers == 4 and choice.warm
