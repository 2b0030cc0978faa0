"""The failures both kinds of imaging share: a part that failed, a request that cannot run.

A cube's parts are sub-cube sessions and a continuum run's parts are row partitions; either kind
fails the same way and says which it is (``imaging``: "cube" or "continuum"), so a message names
the part of the run the user started.
"""

from __future__ import annotations

from pclean_provider.errors import PcleanInputError


class ImagingPartError(RuntimeError):
    """One part of a cube or continuum run failed; no product is built from the other parts."""

    def __init__(self, part: int, nparts: int, operation: str, reason: str, imaging: str) -> None:
        self.part = part
        self.nparts = nparts
        self.operation = operation
        self.reason = reason
        self.imaging = imaging
        super().__init__(f"{imaging} part {part + 1}/{nparts} failed during {operation}: {reason}")


class ImagingInputError(PcleanInputError):
    """A cube or continuum request the engine refuses (names the parameter and the fix)."""


class PreflightError(PcleanInputError):
    """Bad input found by a cube or continuum preflight (the message names the parameter and the fix)."""
