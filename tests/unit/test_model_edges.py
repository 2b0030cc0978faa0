"""The edge planes a cube session exports for its neighbours' margins: which planes a neighbour gets."""

from __future__ import annotations

import numpy as np
import pytest

from pclean_provider.casa.cube_session import CubeSessionError, ModelEdges


def _edges() -> ModelEdges:
    # Own channels 10-19, width 2: blocks 10-11 and 18-19, each plane filled with its channel number.
    block = lambda first: np.stack([np.full((4, 4, 1), float(first + i)) for i in range(2)], axis=3)  # noqa: E731
    return ModelEdges("Jy/pixel", 3, [(10, block(10)), (18, block(18))])


def test_a_margin_gets_the_planes_of_its_channels():
    edges = _edges()
    assert edges.planes(18, 20)[0, 0, 0].tolist() == [18.0, 19.0]  # the next session's lower margin
    assert edges.planes(10, 11)[0, 0, 0].tolist() == [10.0]  # the previous session's upper margin, width 1
    assert edges.planes(19, 20).shape == (4, 4, 1, 1)


def test_planes_outside_the_exported_edges_are_refused():
    with pytest.raises(CubeSessionError, match="channels 12-13"):
        _edges().planes(12, 14)
