"""The one major/minor loop calls its steps in task_tclean's order (a fake steps object, no CASA)."""

from __future__ import annotations

import inspect

import pytest

from pclean_provider.engine.continuum.run import _ContinuumSteps
from pclean_provider.engine.cube.loop import _CubeSteps
from pclean_provider.engine.major_minor import ImagingSteps, run_major_minor


class FakeSteps:
    """Records every step; convergence checks answer from `stopcodes`, minor cycles from `iterations`."""

    def __init__(self, stopcodes: list[int] = (), iterations: list[int] = ()) -> None:
        self.calls: list[str] = []
        self.stopcodes = list(stopcodes)
        self.iterations = list(iterations)

    def make_psf(self) -> None:
        self.calls.append("psf")

    def make_pb(self) -> None:
        self.calls.append("pb")

    def major_cycle(self, *, clean_cycle: bool) -> None:
        self.calls.append("major" if clean_cycle else "dirty")

    def report_dirty_image(self, *, cleaning: bool) -> None:
        self.calls.append(f"report dirty cleaning={cleaning}")

    def check_convergence(self) -> int:
        self.calls.append("converged?")
        return self.stopcodes.pop(0)

    def update_mask(self) -> None:
        self.calls.append("mask")

    def minor_cycle(self) -> int:
        self.calls.append("minor")
        return self.iterations.pop(0)

    def report_cycle(self, cycle: int, stopcode: int) -> None:
        self.calls.append(f"report {cycle} stop={stopcode}")

    def end_cleaning(self, stopcode: int) -> None:
        self.calls.append(f"end stop={stopcode}")

    def restore(self) -> None:
        self.calls.append("restore")

    def pbcor(self) -> None:
        self.calls.append("pbcor")


BEFORE_LOOP = ["psf", "pb", "dirty", "report dirty cleaning=True", "converged?", "mask", "converged?"]


def test_niter_0_makes_the_dirty_image_and_restores_it_without_any_convergence_check():
    steps = FakeSteps()
    assert run_major_minor(steps, 0, pbcor=True) == 0
    assert steps.calls == ["psf", "pb", "dirty", "report dirty cleaning=False", "restore", "pbcor"]


def test_a_run_that_has_converged_at_once_cleans_nothing():
    # The first check's stop code is not used: the masks are set up after it.
    steps = FakeSteps(stopcodes=[7, 2])
    assert run_major_minor(steps, 100) == 2
    assert steps.calls == BEFORE_LOOP + ["report 0 stop=2", "end stop=2", "restore"]


def test_several_cycles_each_minor_then_major_then_mask_then_check_until_a_stop():
    steps = FakeSteps(stopcodes=[0, 0, 0, 0, 1], iterations=[10, 10, 10])
    assert run_major_minor(steps, 30, pbcor=True) == 1
    cycle = ["minor", "major", "mask", "converged?"]
    assert steps.calls == (BEFORE_LOOP + ["report 0 stop=0"]
                           + cycle + ["report 1 stop=0"]
                           + cycle + ["report 2 stop=0"]
                           + cycle + ["report 3 stop=1"]
                           + ["end stop=1", "restore", "pbcor"])


def test_a_minor_cycle_that_cleaned_nothing_ends_the_loop_without_a_major_cycle():
    steps = FakeSteps(stopcodes=[0, 0, 0, 0], iterations=[5, 0])
    assert run_major_minor(steps, 100, restoration=False, pbcor=True) == 0
    assert steps.calls == (BEFORE_LOOP + ["report 0 stop=0"]
                           + ["minor", "major", "mask", "converged?", "report 1 stop=0"]
                           + ["minor", "mask", "converged?", "report 2 stop=0"]
                           + ["end stop=0"])


def test_calcpsf_and_calcres_false_keep_the_earlier_psf_pb_and_residual():
    steps = FakeSteps(stopcodes=[0, 2])
    run_major_minor(steps, 10, calcpsf=False, calcres=False)
    assert steps.calls == ["report dirty cleaning=True", "converged?", "mask", "converged?", "report 0 stop=2",
                           "end stop=2", "restore"]


def test_pbcor_needs_restoration():
    steps = FakeSteps()
    run_major_minor(steps, 0, calcres=False, restoration=False, pbcor=True)
    assert steps.calls == ["psf", "pb", "report dirty cleaning=False"]


def _steps_of(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if not name.startswith("_") and callable(member)}


@pytest.mark.parametrize("adapter", [_CubeSteps, _ContinuumSteps, FakeSteps])
def test_every_imaging_mode_implements_every_step_with_its_signature(adapter):
    wanted = _steps_of(ImagingSteps)
    assert {"make_psf", "make_pb", "major_cycle", "check_convergence", "update_mask", "minor_cycle",
            "restore", "pbcor"} <= set(wanted)
    for name, signature in wanted.items():
        method = getattr(adapter, name, None)
        assert callable(method), f"{adapter.__name__} lacks {name}"
        assert list(inspect.signature(method).parameters) == list(signature.parameters), name
