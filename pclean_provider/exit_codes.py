"""The exit codes of the ``pclean`` command and its subcommands, named in one place.

Every subcommand and every Airflow task that reads a subcommand's exit code uses these names, so a
code's meaning is looked up here rather than repeated as a bare number. The numbers are the ones
users script against and stay as they are:

====  ===========================================================================================
code  meaning
====  ===========================================================================================
0     ``OK``: done (ingest: broken MSs quarantined is still success; qa: reports written, also for
      an empty product)
1     ``FAILED``: the step failed (imaging error, a cluster or SLURM error, a full archive,
      ``archive verify`` found a mismatch, or an uncaught error); presets ``NONE_FOUND``
2     ``BAD_INPUT``: wrong arguments, template, configuration or input; a retry fails the same way
3     one code, four meanings, one per subcommand (they collide, see below):
      ingest ``REJECTED`` (the MS named with ``--vis`` cannot be imaged), plan ``UNPLANNED`` (an MS
      could not be planned; the others were), qa ``REVIEW`` (with ``--exit-on-review``: the gate
      says review), cluster status ``NOT_RUNNING``
4     ingest ``READ_UNSTABLE`` (an MS could not be read reliably, or the quarantine or report
      area is full; nothing moved, a retry may succeed), cluster status ``NO_WORKERS``
====  ===========================================================================================

Codes 3 and 4 mean different things for different subcommands. They were published per command
before they were gathered here, and scripts test them, so the numbers stay and the collision is
resolved by the name instead: each subcommand has its own enum, and a code is read through the enum
of the command that returned it (``exit_name("plan", 3) == "UNPLANNED"``). A single enum with aliases
would give the value 3 one name for every command.

Standard library only, so the CLI, the Airflow tasks and anything below them can import it.
"""

from __future__ import annotations

from enum import IntEnum

# The codes every subcommand shares; each step's enum repeats them by value so that its members
# name all the codes that step can return.
OK, FAILED, BAD_INPUT = 0, 1, 2


class ImagingExit(IntEnum):
    """``pclean`` (imaging)."""

    OK = OK
    FAILED = FAILED  # the engine failed while imaging
    BAD_INPUT = BAD_INPUT  # the configuration, or what preflight found in the MS; nothing ran


class SimulateExit(IntEnum):
    """``pclean simulate``."""

    OK = OK
    BAD_INPUT = BAD_INPUT  # bad simulation parameters, an existing output, CASA not usable


class SubmitExit(IntEnum):
    """``pclean submit``."""

    OK = OK  # submitted (or, with --dry-run, the script printed)
    FAILED = FAILED  # sbatch refused or could not be run
    BAD_INPUT = BAD_INPUT  # the configuration


class PresetsExit(IntEnum):
    """``pclean presets``."""

    OK = OK
    NONE_FOUND = FAILED  # no preset in any searched directory: an installation without its data


class IngestExit(IntEnum):
    """``pclean ingest``."""

    OK = OK
    FAILED = FAILED
    # Bad arguments, a missing landing area, or a --spw/--field selection matching nothing in an MS
    # (nothing is moved).
    BAD_INPUT = BAD_INPUT
    REJECTED = 3  # the MS named with --vis cannot be imaged
    # An MS could not be read reliably (a flaky filesystem) or moved to a full quarantine area, or
    # the report could not be written: nothing is moved, and a retry may succeed.
    READ_UNSTABLE = 4


class PlanExit(IntEnum):
    """``pclean plan``."""

    OK = OK  # planned (an MS with nothing to image is a plan whose targets were all skipped)
    FAILED = FAILED
    BAD_INPUT = BAD_INPUT  # bad arguments, template or imaging parameters: every MS would fail alike
    UNPLANNED = 3  # an MS could not be planned (recorded per MS); the other MSs are planned


class QaExit(IntEnum):
    """``pclean qa``."""

    OK = OK  # the reports are written (also for an empty product, which scores 0 and goes to review)
    FAILED = FAILED
    BAD_INPUT = BAD_INPUT  # no product to judge, or unusable inputs
    REVIEW = 3  # only with --exit-on-review: the gate says review


class ArchiveExit(IntEnum):
    """``pclean archive publish|verify``."""

    OK = OK
    # publish: no space left (nothing published, earlier versions untouched); verify: a mismatch.
    FAILED = FAILED
    BAD_INPUT = BAD_INPUT  # publish refused the product (missing images, bad options)


class ClusterExit(IntEnum):
    """``pclean cluster up|down|status``."""

    OK = OK  # status: running with workers
    FAILED = FAILED  # a cluster error
    NOT_RUNNING = 3  # status: no cluster host runs
    # status: the host runs without a single worker; a monitoring check must see it as unhealthy.
    NO_WORKERS = 4


class MeasuresExit(IntEnum):
    """``pclean measures``."""

    OK = OK  # status shown (no MS observed after the measures end), or the update done
    FAILED = FAILED  # the update could not fetch or install the measures (no network, a full disk)
    BAD_INPUT = BAD_INPUT  # bad arguments, no such MS or folder, CASA not usable
    STALE = 3  # status --vis: an MS was observed after what the measures cover (the warning says what)


# The subcommands whose codes a caller (an Airflow task, a script) reads by name.
BY_COMMAND: dict[str, type[IntEnum]] = {
    "imaging": ImagingExit,
    "simulate": SimulateExit,
    "submit": SubmitExit,
    "presets": PresetsExit,
    "ingest": IngestExit,
    "plan": PlanExit,
    "qa": QaExit,
    "archive": ArchiveExit,
    "cluster": ClusterExit,
    "measures": MeasuresExit,
}


def exit_name(command: str, code: int) -> str:
    """What `code` means when `command` returned it: the member's name, or ``EXIT_<code>`` for a
    code the command does not define (a signal's negative code, an interpreter crash)."""
    try:
        return BY_COMMAND[command](code).name
    except ValueError:
        return f"EXIT_{code}"
