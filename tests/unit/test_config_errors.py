"""Bad input fails early with a ConfigError that names the parameter and says how to fix it."""

from __future__ import annotations

import pytest

from pclean_provider.config import ConfigError, PcleanConfig
from pclean_provider.config.quantities import parse_angle_arcsec, parse_flux_jy


def _error(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        PcleanConfig.from_flat(**kwargs)
    return err.value


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("typo, meant", [("nitre", "niter"), ("imszie", "imsize"), ("robustness", "robust"),
                                         ("deconvolve", "deconvolver"), ("nworker", "nworkers"),
                                         ("keep_subcube", "keep_subcubes")])
def test_unknown_parameter_suggests(typo, meant):
    err = _error(**{typo: 1})
    assert err.parameters == [typo]
    assert "unknown parameter" in str(err)
    assert f"did you mean '{meant}'" in str(err) or f"'{meant}'" in str(err)


def test_unknown_parameter_without_a_near_name():
    err = _error(zzzzqqq=1)
    assert "zzzzqqq" in str(err) and "did you mean" not in str(err)


@pytest.mark.parametrize("specmode", ["cube", "cubedata", "cubesource"])
def test_mtmfs_with_a_cube(specmode):
    err = _error(deconvolver="mtmfs", specmode=specmode)
    assert set(err.parameters) == {"deconvolver", "specmode"}
    assert "specmode='mfs'" in str(err)  # the fix


@pytest.mark.parametrize("nterms", [0, -1])
def test_nterms_below_one(nterms):
    err = _error(nterms=nterms)
    assert err.parameters == ["nterms"]
    assert str(err).startswith("nterms:")


@pytest.mark.parametrize("imsize", [0, -64, [64, 0], [0], [], [64, 64, 64]])
def test_imsize_not_positive(imsize):
    err = _error(imsize=imsize)
    assert err.parameters == ["imsize"]


@pytest.mark.parametrize("imsize", [64, [64], [64, 32]])
def test_imsize_accepts_int_or_pair(imsize):
    assert PcleanConfig.from_flat(imsize=imsize).image.imsize == imsize


@pytest.mark.parametrize("cell", ["8 parsec", "arcsec", "fast", "-1arcsec", 0, ["1arcsec", "x"], True])
def test_unparsable_cell(cell):
    err = _error(cell=cell)
    assert err.parameters == ["cell"]


@pytest.mark.parametrize("cell", ["8arcsec", "0.1arcmin", "1e-4rad", 8, 0.5, ["1arcsec", "2arcsec"], "3mas"])
def test_cell_accepted(cell):
    # Accepted and handed to tclean as given: CASA parses the quantity itself.
    assert PcleanConfig.from_flat(cell=cell).tclean_kwargs()["cell"] == cell


@pytest.mark.parametrize("threshold", ["0.1mJyy", "lots", "1 parsec", "-1mJy", -0.5])
def test_unparsable_threshold(threshold):
    err = _error(threshold=threshold)
    assert err.parameters == ["threshold"]


@pytest.mark.parametrize("threshold", ["0.1mJy", "0Jy", 0.0, 1, "2e-5Jy/beam", "10uJy"])
def test_threshold_accepted(threshold):
    assert PcleanConfig.from_flat(threshold=threshold).tclean_kwargs()["threshold"] == threshold


def test_vis_does_not_exist(tmp_path):
    err = _error(vis=str(tmp_path / "missing.ms"))
    assert err.parameters == ["vis"]
    assert "missing.ms" in str(err) and "pclean simulate" in str(err)


def test_vis_that_is_a_file(tmp_path):
    (tmp_path / "data.tar").write_text("x")
    err = _error(vis=str(tmp_path / "data.tar"))
    assert err.parameters == ["vis"] and "not a MeasurementSet" in str(err)


def test_one_vis_of_a_list_does_not_exist(tmp_path):
    (tmp_path / "a.ms").mkdir()
    err = _error(vis=[str(tmp_path / "a.ms"), str(tmp_path / "b.ms")])
    assert err.parameters == ["vis"] and "b.ms" in str(err) and "a.ms'" not in str(err)


def test_empty_vis_list():
    assert _error(vis=[]).parameters == ["vis"]


def test_vis_check_can_be_deferred(tmp_path):
    cfg = PcleanConfig.from_flat(vis=str(tmp_path / "later.ms"), check_paths=False)
    assert cfg.selection.vis.endswith("later.ms")


def test_type_errors_name_the_parameter_not_pydantic_internals():
    err = _error(niter="many")
    assert str(err) == "niter: 'many' is not valid; expected an integer"
    err = _error(imsize="big")
    assert err.parameters == ["imsize"]
    assert "imsize" in str(err) and "int_parsing" not in str(err) and "pydantic" not in str(err)


def test_literal_typo_suggests():
    err = _error(specmode="cubee")
    assert err.parameters == ["specmode"] and "did you mean 'cube'" in str(err)


def test_several_errors_are_reported_together():
    err = _error(niter="x", gain="y")
    assert set(err.parameters) == {"niter", "gain"}
    assert "2 problems" in str(err)


def test_other_refusals():
    assert _error(robust=2.5).parameters == ["robust"]
    assert _error(nchan=0).parameters == ["nchan"]
    assert _error(nmajor=-2).parameters == ["nmajor"]
    assert _error(cube_chunksize=0).parameters == ["cube_chunksize"]
    assert "weighting" in _error(weighting="briggsbwtaper", specmode="mfs").parameters
    assert "specmode" in _error(specmode="mvc", deconvolver="hogbom").parameters
    assert _error(interactive=True).parameters == ["interactive"]
    assert _error(concat_mode="copy").parameters == ["concat_mode"]
    assert _error(nworkers=0).parameters == ["nworkers"]


def test_model_validate_also_raises_config_error():
    with pytest.raises(ConfigError) as err:
        PcleanConfig.model_validate({"image": {"imsize": -1}})
    assert err.value.parameters == ["imsize"]
    with pytest.raises(ConfigError):
        PcleanConfig.model_validate_json('{"iteration": {"niter": "x"}}')


def test_require_runnable_names_missing_inputs():
    with pytest.raises(ConfigError) as err:
        PcleanConfig().require_runnable()
    assert err.value.parameters == ["vis", "imagename"]


def test_quantity_parsers():
    assert parse_angle_arcsec("8arcsec") == 8.0
    assert parse_angle_arcsec("0.1arcmin") == pytest.approx(6.0)
    assert parse_angle_arcsec("1deg") == 3600.0
    assert parse_angle_arcsec("1e-4rad") == pytest.approx(20.6264806)
    assert parse_flux_jy("0.1mJy") == pytest.approx(1e-4)
    assert parse_flux_jy("3uJy/beam") == pytest.approx(3e-6)
    with pytest.raises(ValueError):
        parse_flux_jy("3 Kelvin")
