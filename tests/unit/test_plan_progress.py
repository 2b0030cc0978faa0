"""The progress reporter shared by the cube and continuum engines."""

from __future__ import annotations

import io
import logging

from pclean_provider.engine.progress import Progress


def test_one_log_line_per_unit_and_a_bar(caplog):
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="pclean_provider.progress"):
        with Progress(3, desc="pclean cube", unit="sub-cube", bar=True, file=out) as bar:
            bar.advance("channels 0-3")
            bar.advance("channels 4-7")
            bar.advance("channels 8-9")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("pclean cube: sub-cube 1/3 done, ETA") and lines[0].endswith("channels 0-3")
    assert "3/3 done - channels 8-9" in lines[2] and "ETA" not in lines[2]
    text = out.getvalue()
    assert "3/3" in text and "pclean cube" in text


def test_no_bar_without_a_terminal_request(caplog):
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="pclean_provider.progress"):
        Progress(2, desc="x", bar=False, file=out).advance("a")
    assert out.getvalue() == ""
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("x: sub-cube 1/2 done") and line.endswith(" - a")


def test_unknown_total_counts_without_denominator(caplog):
    with caplog.at_level(logging.INFO, logger="pclean_provider.progress"):
        Progress(0, desc="pclean continuum", unit="major cycle").advance("peak 0.1 Jy/beam")
    assert caplog.records[0].getMessage() == "pclean continuum: major cycle 1 done - peak 0.1 Jy/beam"
