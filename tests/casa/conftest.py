"""Fixtures several CASA test modules share (each module still gets its own, module-scoped)."""

from __future__ import annotations

import pytest

from tests.run_cache import simulated


@pytest.fixture(scope="module")
def client(casa_runtime):
    """A local Dask cluster of two workers: two sessions or parts, as the parity tests run them."""
    from pclean_provider.compute import open_cluster
    from pclean_provider.config.cluster import ClusterSpec

    with open_cluster(ClusterSpec(nworkers=2)) as handle:
        yield handle.client


@pytest.fixture(scope="module")
def line_ms(casa_runtime):
    """16 x 1 MHz channels, a continuum sky plus a spectral line: cleaning differs per channel."""
    return simulated("line", nchan=16, antennas=8, hours=0.5, integration_s=60, noise_jy=0.01, seed=5,
                     spectral_line=True).ms
