"""One writer per image name: a run that a newer run of the same name superseded publishes nothing.

A cleared or retried imaging task starts a new try while the older one may still run in CASA (its
Dask work was cancelled, its coordinator subprocess was not). Each run claims the image name when it
starts; the newer claim wins, and the older run, when it gets to publishing, discards its output.
Here the newer run's claim is made for real in the middle of the older run (at its first major
cycle, through the engine's own progress callback).
"""

from __future__ import annotations

import os

import pytest

from tests.casa.continuum_helpers import kwargs_for

pytestmark = pytest.mark.casa


def test_a_superseded_continuum_run_publishes_nothing(two_spw_ms, casa_runtime, tmp_path):
    from pclean_provider.atomic_files import DirClaim, SupersededWriteError
    from pclean_provider.config import PcleanConfig
    from pclean_provider.engine.continuum.run import run_continuum

    imagename = str(tmp_path / "cont")
    cfg = PcleanConfig.from_flat(imagename=imagename, **kwargs_for(two_spw_ms.ms, "hogbom", "briggs", 1))
    newer: list[DirClaim] = []

    def a_newer_try_starts(report) -> None:
        if not newer:
            newer.append(DirClaim(imagename))

    with pytest.raises(SupersededWriteError, match="newer try"):
        run_continuum(cfg, None, nparts=1, on_cycle=a_newer_try_starts)
    assert newer, "the run reached a major cycle before it was superseded"
    # Nothing of the older run: no product, no staging; the newer run's claim is still its own.
    assert [p for p in os.listdir(tmp_path) if not p.endswith(".progress.jsonl")] == ["cont.claim"]
    assert newer[0].owns()
    # The newer run then publishes as usual.
    result = run_continuum(cfg, None, nparts=1)
    assert result.iterations > 0 and os.path.isdir(imagename + ".image")
    assert not os.path.exists(imagename + ".claim")
