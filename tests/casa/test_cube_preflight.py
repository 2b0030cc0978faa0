"""Bad cube input fails before any cluster starts, naming the parameter and the fix."""

from __future__ import annotations

import os

import pytest

# The Dask clusters here are plaintext on loopback; what is tested is not the transport.
pytestmark = [pytest.mark.casa, pytest.mark.usefixtures("plaintext_dask_allowed")]

# Nothing listens here: reaching the cluster step would raise SchedulerUnreachable instead of our error.
DEAD_SCHEDULER = "tcp://127.0.0.1:9"


@pytest.fixture(scope="module")
def ms(casa_runtime, tmp_path_factory):
    from pclean_provider.casa.simulator import simulate_ms

    return simulate_ms(tmp_path_factory.mktemp("pre") / "pre.ms", nchan=8, antennas=6, hours=0.2, seed=5).ms


def _run(tmp_path, **kw):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.api import run

    args = dict(imagename=str(tmp_path / "out"), specmode="cube", imsize=[32, 32], cell="20arcsec",
                parallel=True, scheduler_address=DEAD_SCHEDULER)
    args.update(kw)
    cfg = PcleanConfig.from_flat(args, check_paths=False)
    return run(cfg)


def _error(tmp_path, **kw) -> str:
    from pclean_provider.config import ConfigError
    from pclean_provider.engine.imaging_errors import PreflightError

    with pytest.raises((PreflightError, ConfigError)) as info:
        _run(tmp_path, **kw)
    return str(info.value)


def test_missing_ms(tmp_path):
    msg = _error(tmp_path, vis=str(tmp_path / "nowhere.ms"))
    assert "vis" in msg and "nowhere.ms" in msg


def test_folder_that_is_not_an_ms(tmp_path):
    fake = tmp_path / "fake.ms"
    fake.mkdir()
    msg = _error(tmp_path, vis=str(fake))
    assert "vis" in msg and "not a MeasurementSet" in msg


def test_spw_selection_matching_nothing(ms, tmp_path):
    msg = _error(tmp_path, vis=ms, spw="7")
    assert "spw" in msg


def test_field_selection_matching_nothing(ms, tmp_path):
    msg = _error(tmp_path, vis=ms, field="NO_SUCH_FIELD")
    assert "field" in msg


def test_nchan_beyond_the_data_is_not_refused(ms, tmp_path):
    """tclean images channels beyond (or between) the selected data and leaves them blank, so
    preflight passes them (tests/casa/test_cube_edges.py compares such a cube with tclean's)."""
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.cube.preflight import check_cube_inputs

    for extra in (dict(nchan=50), dict(nchan=4, start=30), dict(spw="0:1~2;5~6", start=1, nchan=7)):
        check_cube_inputs(PcleanConfig.from_flat(dict(vis=ms, imagename=str(tmp_path / "out"), specmode="cube",
                                                      imsize=[32, 32], cell="20arcsec", **extra)))


def test_cube_with_mfs_only_deconvolver(ms, tmp_path):
    msg = _error(tmp_path, vis=ms, deconvolver="mtmfs", nterms=2)
    assert "deconvolver" in msg and "mtmfs" in msg


def test_existing_products_are_not_overwritten(ms, tmp_path):
    (tmp_path / "out.image").mkdir()
    msg = _error(tmp_path, vis=ms)
    assert "imagename" in msg and os.path.isdir(tmp_path / "out.image")


def test_virtual_concat_without_kept_subcubes(ms, tmp_path):
    msg = _error(tmp_path, vis=ms, concat_mode="virtual", keep_subcubes=False)
    assert "keep_subcubes" in msg
