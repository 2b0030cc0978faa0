"""The progress reporter and the progress file shared by the cube and continuum engines."""

from __future__ import annotations

import io
import json
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


def test_progress_file_records_read_back_as_their_messages(tmp_path):
    """What the one writer appends, the one reader (the trigger's and a waiting operator's tail) logs."""
    from pclean_provider.compute.dask_work import ProgressTail
    from pclean_provider.engine.progress import ProgressFile, format_progress_line

    path = tmp_path / "night.cube.progress.jsonl"
    path.write_text("left by an earlier run\n")
    writer = ProgressFile(str(path), "r1", "cube")
    writer.cycle("cube night: major cycle 0, 0 iterations, 1.0 s", cycle=0, iterations=0, elapsed_s=1.0)
    writer.stopped(2, "threshold")
    writer.finished("cube run r1 finished", {"iterations": 10})
    writer.failed(RuntimeError("part 2/2 lost"))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"run_id": "r1", "ev')  # still being written: not read yet

    records = [json.loads(line) for line in path.read_text().splitlines()[:-1]]
    assert [r["event"] for r in records] == ["cycle", "stopped", "finished", "failed"]
    assert all(r["run_id"] == "r1" and r["message"] for r in records)
    assert records[0]["cycle"] == 0 and records[2]["result"] == {"iterations": 10}
    assert records[3]["error"] == "RuntimeError: part 2/2 lost"
    lines = ProgressTail(str(path), format_progress_line).new_lines()
    assert lines == [r["message"] for r in records]
    assert lines[1] == "cube run r1 stopped: threshold (stop code 2)"
    assert format_progress_line("not json\n") == "not json"
