"""Fixtures several CASA test modules share: a two-worker cluster per test process (continuum) or per
module (cube parity), and the line MS."""

from __future__ import annotations

import pytest

from tests.run_cache import simulated


@pytest.fixture(scope="session")
def _two_worker_cluster(casa_runtime, tmp_path_factory):
    """A local Dask cluster of two workers for the whole test process, shared by the continuum
    modules rather than made per module: each start costs the cluster and both workers' CASA import,
    and the tests keep nothing on it between runs (each run closes its own parts; a worker a test
    loses is restarted by its nanny)."""
    from pclean_provider.compute import open_cluster
    from pclean_provider.config.cluster import ClusterSpec

    scratch = tmp_path_factory.mktemp("dask")
    with open_cluster(ClusterSpec(nworkers=2, local_directory=str(scratch))) as handle:
        yield handle


@pytest.fixture
def cluster(_two_worker_cluster):
    """The process's two-worker cluster, with both workers up (a test before may have lost one)."""
    _two_worker_cluster.client.wait_for_workers(2, timeout=120)
    return _two_worker_cluster


@pytest.fixture(scope="module")
def client(casa_runtime):
    """A two-worker cluster of the module's own, for the cube parity tests: whether a partly covered
    edge channel receives any data depends, at the mHz level of CASA's frame conversion, on what the
    worker process did with casatools before (measured: a worker that had imaged the continuum
    modules' MS filled the first channel of a gap selection that tclean in a fresh process leaves
    empty). Workers that have imaged only cubes of the module match the fresh tclean references."""
    from pclean_provider.compute import open_cluster
    from pclean_provider.config.cluster import ClusterSpec

    with open_cluster(ClusterSpec(nworkers=2)) as handle:
        yield handle.client


@pytest.fixture(scope="module")
def line_ms(casa_runtime):
    """16 x 1 MHz channels, a continuum sky plus a spectral line: cleaning differs per channel."""
    return simulated("line", nchan=16, antennas=8, hours=0.5, integration_s=60, noise_jy=0.01, seed=5,
                     spectral_line=True).ms


@pytest.fixture(scope="module")
def spw_widths_ms(casa_runtime):
    """Two spws whose channels are 1 MHz and 0.5 MHz wide."""
    return simulated("spw-widths", nchan=8, nspw=2, spw_chan_widths_hz=[1e6, 5e5], antennas=8, hours=0.5,
                     integration_s=60, noise_jy=0.01, seed=21, spectral_line=True).ms
