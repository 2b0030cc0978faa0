"""The bound of one target's imaging (pipeline/imaging_timeout.py): pinned, or grown with the cube and the
MS, never beyond its ceiling, and it says how it was reached."""

from __future__ import annotations

import pytest

from pclean_provider.pipeline.imaging_timeout import ImagingTimeout
from pclean_provider.pipeline.pipeline_template import load_templates


def test_the_bound_grows_with_the_cube_and_the_ms():
    policy = ImagingTimeout()
    small, _ = policy.bound(256, 256, 8, 1e8)
    cube, how = policy.bound(4096, 4096, 1000, 1e8)
    big_ms, _ = policy.bound(256, 256, 8, 1e11)
    assert small < cube and small < big_ms
    assert cube == pytest.approx((60 + 60 * 4096 * 4096 * 1000 * 4 / 1e9 + 15 * 0.1) * 60)
    assert "4096x4096x1000" in how and "imaging_timeout" in how


def test_pinned_and_capped():
    assert ImagingTimeout(minutes=45).bound(8192, 8192, 10**5, 1e12)[0] == 45 * 60
    seconds, how = ImagingTimeout(most_minutes=600).bound(8192, 8192, 10**5, 1e12)
    assert seconds == 600 * 60 and "capped" in how


def test_every_shipped_template_bounds_its_imaging():
    for t in load_templates():
        assert 0 < t.imaging_timeout.bound(640, 640, 8, 2e6)[0] < 2 * 3600
