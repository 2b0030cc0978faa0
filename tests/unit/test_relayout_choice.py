"""relayout_ms: True and False as given; 'auto' (the default) copies only for a cleaned cube in
enough sessions for the reads to have grown (ms_copies.AUTO_MIN_SESSIONS)."""

from __future__ import annotations

import pytest

from pclean_provider.config import PcleanConfig
from pclean_provider.config.errors import ConfigError
from pclean_provider.engine.cube.ms_copies import AUTO_MIN_SESSIONS, wants_copies


@pytest.mark.parametrize(("setting", "nsessions", "niter", "expected"), [
    ("auto", AUTO_MIN_SESSIONS, 100, True),
    ("auto", AUTO_MIN_SESSIONS - 1, 100, False),  # 2-3 sessions: the copy's gain is within the noise
    ("auto", 8, 0, False),                         # a dirty cube: two passes over the data
    (True, 2, 0, True),
    (False, 8, 100, False),
    (True, 1, 100, False),                         # one session reads only its own channels anyway
])
def test_when_the_sessions_read_copies(setting, nsessions, niter, expected):
    assert wants_copies(setting, nsessions, niter) is expected


def test_the_default_is_auto_and_booleans_still_parse():
    def relayout(**kw):
        return PcleanConfig.from_flat(vis="x.ms", imagename="y", specmode="cube", check_paths=False, **kw).extras.relayout_ms

    assert relayout() == "auto"
    assert relayout(relayout_ms="true") is True and relayout(relayout_ms=False) is False
    with pytest.raises(ConfigError, match="relayout_ms"):
        relayout(relayout_ms="sometimes")
