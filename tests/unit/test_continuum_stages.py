"""The continuum stage table: kinds summed in run order, dispatch overhead of part steps, shares."""

from __future__ import annotations

from pclean_provider.engine.continuum.stages import StageClock, stage_table, summed


class _Reply:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def test_repeated_stages_are_summed_in_run_order_with_dispatch_overhead():
    clock = StageClock()
    clock.add("restore", 0.5)
    clock.add("cluster start", 2.0)
    for cycle in range(3):
        clock.add("major cycle on parts", 1.0, cycle=cycle, where="parts", part_max_s=0.75)
    clock.add("minor cycle", 0.25, cycle=1)

    rows = summed(clock.stages)
    assert [r["stage"] for r in rows] == ["cluster start", "major cycle on parts", "minor cycle", "restore"]
    major = rows[1]
    assert major["count"] == 3 and major["seconds"] == 3.0 and major["dispatch_s"] == 0.75
    assert rows[2]["dispatch_s"] is None

    table = stage_table(clock.stages, elapsed_s=5.0)
    # Cluster start is before the engine's clock: not in "other", which is what no stage explains.
    assert "other" in table and "  1.25" in table.splitlines()[-2]
    assert table.splitlines()[-1].split()[-1] == "5.00"


def test_on_parts_keeps_the_longest_part():
    clock = StageClock()
    replies = clock.on_parts("psf", lambda: [_Reply(0.1), _Reply(0.3)])
    assert len(replies) == 2
    (stage,) = clock.stages
    assert stage.where == "parts" and stage.part_max_s == 0.3 and stage.seconds >= 0.0


def test_command_line_report_prints_the_stage_table(capsys):
    from types import SimpleNamespace

    from pclean_provider.cli.imaging import _report

    clock = StageClock()
    clock.add("open parts", 0.5, where="parts", part_max_s=0.4)
    clock.add("major cycle on parts", 2.0, cycle=0, where="parts", part_max_s=1.9)
    result = SimpleNamespace(products={".image": "/x/y.image"}, imagename="/x/y", specmode="mfs", iterations=3,
                             seconds=3.0, continuum={"elapsed_s": 3.0,
                                                     "stages": [s.model_dump(mode="json") for s in clock.stages]})
    _report(result)
    out = capsys.readouterr().out
    assert "continuum stages" in out and "major cycle on parts" in out and "total (engine)" in out
