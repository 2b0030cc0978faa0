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
    ("pclean_provider.engine.imaging_errors", "ImagingInputError", ("imsize=[0, 0]: must be positive",)),
    ("pclean_provider.engine.continuum.preflight", "ContinuumInputError", ("specmode='cube': not continuum",)),
    ("pclean_provider.engine.imaging_errors", "PreflightError", ("spw='7': not in the MeasurementSet",)),
    ("pclean_provider.engine.cube.plan", "PlanError", ("cube_chunksize=0: must be -1 or >= 1",)),
    ("pclean_provider.casa.cube_grid", "CubeGridError", ("start='9GHz': outside the data",)),
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


def _reject_selection():
    from pclean_provider.casa.ms_selection import SelectionError

    raise SelectionError("spw='9': matches nothing")


def _fail_plainly():
    raise ValueError("a plain ValueError")


def test_an_input_error_on_a_dask_worker_is_recognised_through_the_scheduler(tmp_path):
    """A worker in its own process: the scheduler judges the pickled error and hands back a verdict."""
    from distributed import Client, LocalCluster

    from pclean_provider.compute.dask_work import PublishedWork

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      local_directory=str(tmp_path / "dask")) as cluster, \
            Client(cluster, set_as_default=False) as client:
        work = PublishedWork(client)
        verdicts = {}
        for key, func in (("pclean-t-d-r-bad-m0-try1", _reject_selection), ("pclean-t-d-r-bug-m0-try1", _fail_plainly)):
            future = work.submit(key, str(tmp_path / f"{key}.json"), func)
            with pytest.raises(ValueError):
                future.result(timeout=60)
            status = work.status(key)
            assert status.state == "error"
            verdicts[key] = status.input_error
            work.release(key)
    assert verdicts == {"pclean-t-d-r-bad-m0-try1": True, "pclean-t-d-r-bug-m0-try1": False}
