"""What a coordinator may ask of a session it keeps on a worker, declared once for both kinds.

A session is CASA tooling built once in the process that holds it (`session_registry`) and told
one step at a time, by name, for the whole run. Two kinds exist:

- a continuum part (`imager_session.PartImager`): one `synthesisimager` over a row partition;
  the coordinator gathers the parts' images and runs the minor cycle itself;
- a cube session (`cube_session.CubeSession`): imager, normalizer and deconvolver of a contiguous
  channel range; it runs its own minor cycle under the cube's one iteration controller.

Every step either kind accepts is an `Operation`; `CONTINUUM_PART_OPERATIONS` and
`CUBE_SESSION_OPERATIONS` say which steps each kind accepts, and each session class has one method
per operation, named as the operation. `SessionOperations.run` dispatches for both: it refuses an
operation outside the kind's table and runs the method in the session's working directory (CASA
writes fixed-name scratch tables into the working directory). An operation returns text or None;
the registry wraps it in a `PartReply`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel


class Operation(StrEnum):
    """Every step a coordinator sends to a session, in the order tclean does them."""

    WEIGHT_DENSITY = "weight_density"  # the part's gridded weight density (its image's path)
    SET_WEIGHT_DENSITY = "set_weight_density"  # load a weight density (path=...) the coordinator summed
    MAKE_PSF = "make_psf"
    MAKE_PB = "make_pb"
    MAJOR_CYCLE = "major_cycle"  # lastcycle=...; the residual from the current model
    INIT_MINOR = "init_minor"  # the deconvolver's first statistics (initminorcycle record)
    SETUP_MASK = "setup_mask"
    MINOR_CYCLE = "minor_cycle"  # controls=... from the iteration controller; returns its record
    REVERT_AUTOMASK = "revert_automask"  # back to the mask the last minor cycle used
    REPLACE_DECONVOLVER = "replace_deconvolver"  # deconvolution=... (automask aligned to the cube)
    RESTORE_MODEL_BACKUP = "restore_model_backup"  # the model before an interrupted minor cycle
    RESTORE = "restore"
    PBCOR = "pbcor"
    PUBLISH = "publish"  # the session's own channels become its products


CONTINUUM_PART_OPERATIONS: frozenset[Operation] = frozenset({
    Operation.WEIGHT_DENSITY, Operation.SET_WEIGHT_DENSITY, Operation.MAKE_PSF, Operation.MAKE_PB,
    Operation.MAJOR_CYCLE,
})

CUBE_SESSION_OPERATIONS: frozenset[Operation] = frozenset({
    Operation.MAKE_PSF, Operation.MAKE_PB, Operation.MAJOR_CYCLE, Operation.INIT_MINOR, Operation.SETUP_MASK,
    Operation.MINOR_CYCLE, Operation.REVERT_AUTOMASK, Operation.REPLACE_DECONVOLVER,
    Operation.RESTORE_MODEL_BACKUP, Operation.RESTORE, Operation.PBCOR, Operation.PUBLISH,
})


class PartFailure(RuntimeError):
    """A session could not do what it was asked; the message names the session and the step."""


class PartReply(BaseModel):
    """What every session call returns across the process boundary (as JSON)."""

    run_id: str
    part: int
    operation: str
    seconds: float
    value: str | None = None
    host: str = ""
    pid: int = 0


class SessionSpec(Protocol):
    """What the registry reads from either kind's spec (`PartSpec`, `CubeSessionSpec`)."""

    run_id: str
    part: int
    workdir: str
    log_dir: str | None

    @property
    def label(self) -> str: ...


class Session(Protocol):
    """A session as the registry holds it."""

    spec: SessionSpec

    def run(self, operation: str, **kwargs: Any) -> str | None: ...

    def close(self) -> None: ...


class SessionOperations:
    """The one dispatch of both kinds of session: `operations` names what the kind accepts."""

    operations: ClassVar[frozenset[Operation]] = frozenset()
    spec: SessionSpec

    def run(self, operation: str, **kwargs: Any) -> str | None:
        handler = self.handler(operation)
        with contextlib.chdir(self.spec.workdir):
            return handler(**kwargs)

    def handler(self, operation: str) -> Callable[..., str | None]:
        if operation not in self.operations:
            raise PartFailure(f"{self.spec.label}: unknown operation {str(operation)!r}")
        return getattr(self, Operation(operation).value)
