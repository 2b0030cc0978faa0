"""The configuration models against the installed casatasks.tclean: same names, same defaults."""

from __future__ import annotations

import inspect

import pytest

from pclean_provider.config import TCLEAN_NAMES, PcleanConfig, flat_defaults
from tests.conftest import casa_available, require

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def tclean_signature(casa_runtime):
    require("casatasks", casa_available(), "run `make setup`")
    import casatasks

    return inspect.signature(casatasks.tclean)


def test_tclean_kwargs_has_exactly_tcleans_parameters(tclean_signature):
    expected = set(tclean_signature.parameters)
    assert set(TCLEAN_NAMES) == expected
    assert set(PcleanConfig().tclean_kwargs()) == expected


def test_defaults_match_tclean(tclean_signature):
    defaults = flat_defaults()
    kwargs = PcleanConfig().tclean_kwargs()
    mismatched = {}
    for name, parameter in tclean_signature.parameters.items():
        theirs = parameter.default
        for ours in (defaults[name], kwargs[name]):
            if ours != theirs or type(ours) is not type(theirs):
                mismatched[name] = (ours, theirs)
    assert mismatched == {}


def _tclean_schema() -> dict:
    """casatasks' own type/allowed-value schema for tclean (generated from its XML, local to __call__)."""
    import importlib

    # `casatasks.tclean` the attribute is the task object; the module is only reachable this way.
    task_module = importlib.import_module("casatasks.tclean")

    source = inspect.getsource(task_module._tclean.__call__)
    line = next(text for text in source.splitlines() if text.strip().startswith("schema = "))
    return eval(line.split("=", 1)[1], vars(task_module))  # noqa: S307 - casatasks' own literal


@pytest.mark.parametrize("preset", [None, "quicklook_continuum", "vlass_mtmfs", "spectral_line_cube"])
def test_casatasks_schema_accepts_our_values(tclean_signature, tmp_path, preset):
    # The same check tclean runs on its arguments before imaging, on defaults, presets and a varied config.
    from casatools.typecheck import CasaValidator

    from pclean_provider.config import load_config

    ms = tmp_path / "x.ms"
    ms.mkdir()
    (tmp_path / "y.ms").mkdir()
    varied = dict(vis=[str(ms), str(tmp_path / "y.ms")], field=["0", "1"], imsize=[64, 48],
                  cell=["1arcsec", 2.0], nchan=4, scales=[0, 3], robust=0.0, threshold="0.1mJy",
                  uvtaper=["5arcsec"], start=1, width="2MHz", spw=["0", "0"], phasecenter=0, observation=0,
                  restfreq=["1.42GHz"], pointingoffsetsigdev=[1.0, 2.0], restoringbeam=["5arcsec"],
                  mask=["a.mask", "b.mask"], specmode="cube", deconvolver="multiscale")
    overrides = {"vis": str(ms), "imagename": str(tmp_path / "img"), **(varied if preset is None else {})}
    kwargs = load_config(presets=[preset] if preset else [], overrides=overrides).tclean_kwargs()
    validator = CasaValidator()
    assert validator.validate(kwargs, _tclean_schema()), validator.errors


def test_casatasks_schema_is_really_checked(tclean_signature, tmp_path):
    # Guard for the test above: the schema does refuse a bad value.
    from casatools.typecheck import CasaValidator

    kwargs = PcleanConfig().tclean_kwargs()
    kwargs["deconvolver"] = "nonsense"
    assert not CasaValidator().validate(kwargs, _tclean_schema())
