"""The declared session protocol holds: each kind of session has one method per operation it accepts,
and refuses the others by name (no CASA needed: the classes are inspected, not built)."""

from __future__ import annotations

import pytest

from pclean_provider.casa.cube_session import CubeSession
from pclean_provider.casa.imager_session import PartImager
from pclean_provider.casa.session_protocol import (
    CONTINUUM_PART_OPERATIONS,
    CUBE_SESSION_OPERATIONS,
    Operation,
    PartFailure,
)


@pytest.mark.parametrize(("kind", "table"), [(CubeSession, CUBE_SESSION_OPERATIONS),
                                             (PartImager, CONTINUUM_PART_OPERATIONS)])
def test_every_accepted_operation_has_its_method(kind, table):
    assert kind.operations == table
    for operation in table:
        assert callable(getattr(kind, operation.value, None)), f"{kind.__name__} lacks {operation.value}"


def test_an_operation_outside_the_kind_is_refused_naming_it():
    class Spec:
        label, workdir = "part 1/2", "."

    part = PartImager.__new__(PartImager)
    part.spec = Spec()
    with pytest.raises(PartFailure, match="part 1/2: unknown operation 'minor_cycle'"):
        part.run(Operation.MINOR_CYCLE)
    with pytest.raises(PartFailure, match="unknown operation 'rm -rf'"):
        part.handler("rm -rf")


def test_every_operation_is_used_by_some_kind():
    assert set(Operation) == CUBE_SESSION_OPERATIONS | CONTINUUM_PART_OPERATIONS
