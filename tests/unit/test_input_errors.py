"""Every "the input is wrong" error shares one base class, recognisable across a process boundary."""

from __future__ import annotations

import importlib
import pickle

import pytest

from pclean_provider.errors import PcleanInputError, error_lineage, is_input_error, lineage_of_pickled_error

# (module, class, constructor arguments) of every error that means the input is wrong.
INPUT_ERRORS = [
    ("pclean_provider.config.errors", "ConfigError", ("nchan=-2: must be >= 1",)),
    ("pclean_provider.config.casa_bridge", "BridgeError", ("gridder='x': not supported",)),
    ("pclean_provider.casa.ms_selection", "SelectionError", ("spw='9': matches nothing",)),
    ("pclean_provider.casa.msinfo", "NotAMeasurementSetError", ("/data/night.ms", "no table.dat")),
    ("pclean_provider.casa.simulator", "SimulationError", ("antennas=2: need at least 3",)),
    ("pclean_provider.engine.continuum", "ContinuumInputError", ("specmode='cube': not continuum",)),
    ("pclean_provider.pipeline.qa", "QaInputError", ("kind='x' is not valid",)),
    ("pclean_provider.pipeline.archive", "ArchiveError", ("images is empty",)),
    ("pclean_provider.pipeline.ingest", "MsRejected", ("no table.dat",)),
]


@pytest.mark.parametrize("module, name, args", INPUT_ERRORS, ids=[e[1] for e in INPUT_ERRORS])
def test_input_errors_share_the_base_and_survive_pickling(module, name, args):
    cls = getattr(importlib.import_module(module), name)
    error = cls(*args)
    assert isinstance(error, PcleanInputError) and isinstance(error, ValueError)
    assert is_input_error(error) and is_input_error(cls)
    # Dask pickles a worker's exception; the client and the scheduler must get the same one back.
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == str(error)
    lineage = lineage_of_pickled_error(pickle.dumps(error))
    assert lineage == error_lineage(error) and lineage[0] == f"{module}.{name}"
    assert is_input_error(lineage)


def test_other_errors_are_not_input_errors():
    for error in (RuntimeError("worker died"), ValueError("a plain ValueError"), KeyError("x")):
        assert not is_input_error(error)
        assert not is_input_error(lineage_of_pickled_error(pickle.dumps(error)))
    assert not is_input_error(None)


def test_unreadable_pickle_gives_no_lineage():
    assert lineage_of_pickled_error(b"not a pickle") is None
    assert lineage_of_pickled_error(pickle.dumps({"not": "an exception"})) is None
    assert not is_input_error(lineage_of_pickled_error(b"not a pickle"))


def test_a_class_name_alone_is_refused():
    # A name cannot tell a subclass of PcleanInputError from another class of the same name.
    with pytest.raises(TypeError, match="lineage"):
        is_input_error("ConfigError")
