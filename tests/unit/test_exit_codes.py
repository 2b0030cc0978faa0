"""The exit codes users script against keep their numbers, and a code reads by the command that returned it."""

from __future__ import annotations

from pclean_provider import exit_codes
from pclean_provider.exit_codes import ClusterExit, IngestExit, PlanExit, QaExit, exit_name


def test_the_published_numbers_stay():
    assert (IngestExit.OK, IngestExit.BAD_INPUT, IngestExit.REJECTED, IngestExit.READ_UNSTABLE) == (0, 2, 3, 4)
    assert (PlanExit.BAD_INPUT, PlanExit.UNPLANNED) == (2, 3)
    assert (QaExit.BAD_INPUT, QaExit.REVIEW) == (2, 3)
    assert (ClusterExit.FAILED, ClusterExit.NOT_RUNNING, ClusterExit.NO_WORKERS) == (1, 3, 4)


def test_the_shared_codes_mean_the_same_for_every_command():
    for command, codes in exit_codes.BY_COMMAND.items():
        assert codes(0).name == "OK", command
        for name, value in (("FAILED", 1), ("BAD_INPUT", 2)):
            if name in codes.__members__:
                assert codes[name] == value, command


def test_a_colliding_code_is_named_by_its_command():
    assert exit_name("ingest", 3) == "REJECTED" and exit_name("plan", 3) == "UNPLANNED"
    assert exit_name("qa", 3) == "REVIEW" and exit_name("cluster", 3) == "NOT_RUNNING"
    assert exit_name("archive", 3) == "EXIT_3" and exit_name("qa", -15) == "EXIT_-15"
