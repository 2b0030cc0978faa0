"""Pure planning logic of the cube engine: channel splits, niter shares, memory, concat modes."""

from __future__ import annotations

import json

import pytest

from pclean_provider.casa.cube_grid import CubeGrid
from pclean_provider.engine.cube.concat import ConcatError, resolve_mode
from pclean_provider.engine.cube.memory import estimate_subcube_bytes, max_channels_that_fit, parse_memory
from pclean_provider.engine.cube.plan import PlanError, plan_from_grid, share_niter, split_channels
from pclean_provider.engine.models import CubePlan, SubcubeSpec


def sizes(ranges):
    return [b - a for a, b in ranges]


def test_one_subcube_per_worker_even_and_uneven():
    assert split_channels(24, 2) == [(0, 12), (12, 24)]
    assert sizes(split_channels(10, 3)) == [4, 3, 3]
    assert split_channels(10, 3)[-1] == (7, 10)


def test_more_workers_than_channels_gives_one_channel_each():
    assert split_channels(5, 40) == [(i, i + 1) for i in range(5)]


def test_chunksize_channels_each_last_shorter():
    assert sizes(split_channels(16, 2, cube_chunksize=5)) == [5, 5, 5, 1]
    assert sizes(split_channels(16, 2, cube_chunksize=1)) == [1] * 16
    assert sizes(split_channels(3, 2, cube_chunksize=10)) == [3]


def test_memory_cap_splits_further():
    assert sizes(split_channels(24, 2, max_chunk=5)) == [5, 5, 5, 5, 4]
    assert sizes(split_channels(24, 2, cube_chunksize=8, max_chunk=3)) == [3] * 8


@pytest.mark.parametrize("nchan,nworkers,chunk", [(1, 1, -1), (7, 3, -1), (100, 8, 7), (13, 2, 1), (9, 50, -1)])
def test_ranges_cover_every_channel_once(nchan, nworkers, chunk):
    ranges = split_channels(nchan, nworkers, chunk)
    assert ranges[0][0] == 0 and ranges[-1][1] == nchan
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert len(ranges) <= nchan


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_chunksize_named(bad):
    with pytest.raises(PlanError, match="cube_chunksize"):
        split_channels(10, 2, cube_chunksize=bad)


def test_niter_is_shared_not_repeated():
    shares = share_niter(100, [8, 8])
    assert shares == [50, 50] and sum(shares) == 100
    shares = share_niter(10, [5, 5, 5, 1])
    assert sum(shares) == 10
    assert shares[3] <= shares[0]
    assert share_niter(0, [3, 3]) == [0, 0]
    assert sum(share_niter(7, [1] * 16)) == 7


def test_memory_estimate_grows_and_fits():
    small = estimate_subcube_bytes(1, [128, 128])
    big = estimate_subcube_bytes(64, [128, 128])
    assert big > small
    n = max_channels_that_fit(2 * 1024**3, [2048, 2048])
    assert n >= 1
    assert estimate_subcube_bytes(n, [2048, 2048]) <= 0.8 * 2 * 1024**3
    assert estimate_subcube_bytes(n + 1, [2048, 2048]) > 0.8 * 2 * 1024**3


def test_parse_memory():
    assert parse_memory("0") is None
    assert parse_memory("4GB") == 4 * 1000**3
    assert parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory(1024) == 1024


def test_concat_mode_rules():
    assert resolve_mode("auto", keep_subcubes=True) == "paged"
    assert resolve_mode("auto", keep_subcubes=False) == "movevirtual"
    with pytest.raises(ConcatError, match="keep_subcubes"):
        resolve_mode("virtual", keep_subcubes=False)
    with pytest.raises(ConcatError, match="keep_subcubes"):
        resolve_mode("movevirtual", keep_subcubes=True)


def _grid(n=10):
    freqs = [1.4e9 + 0.123456789 + i * 999907.1310553551 for i in range(n)]
    return CubeGrid(nchan=n, frequencies_hz=freqs, width_hz=999907.1310553551, frame="LSRK",
                    restfreq_hz=1.4e9)


def test_plan_from_grid_specs_are_exact_and_json(tmp_path):
    kwargs = {"vis": "rel.ms", "imagename": str(tmp_path / "cube"), "specmode": "cube", "nchan": -1,
              "start": "", "width": "", "outframe": "", "restfreq": [], "niter": 100, "imsize": [64, 64],
              "stokes": "I", "restoringbeam": "common"}
    plan = plan_from_grid(kwargs, _grid(10), nworkers=3)
    assert [s.nchan for s in plan.specs] == [4, 3, 3]
    assert sum(s.niter for s in plan.specs) == 100
    spec = plan.specs[1]
    # the sub-cube starts exactly on the CASA grid's channel 4, written so the double round-trips
    assert float(spec.tclean_kwargs["start"][:-2]) == _grid().frequencies_hz[4]
    assert float(spec.tclean_kwargs["width"][:-2]) == 999907.1310553551
    assert spec.tclean_kwargs["nchan"] == 3 and spec.tclean_kwargs["outframe"] == "LSRK"
    assert spec.tclean_kwargs["restoringbeam"] == ""
    # the first sub-cube keeps the user's start/width (tclean's own edge-channel handling)
    assert plan.specs[0].tclean_kwargs["start"] == "" and plan.specs[0].tclean_kwargs["nchan"] == 4
    assert spec.tclean_kwargs["niter"] == spec.niter
    # relative vis resolved in the caller's cwd at planning time
    assert spec.vis.startswith("/") and spec.tclean_kwargs["vis"] == spec.vis
    # folder names differ per range: products of two plans cannot mix
    assert len({s.subcube_dir for s in plan.specs}) == 3
    assert len({s.product_basename for s in plan.specs}) == 3
    again = CubePlan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert SubcubeSpec.model_validate(json.loads(spec.model_dump_json())) == spec
