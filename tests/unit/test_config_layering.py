"""load_config: defaults < presets < files < overrides, and resetting a value to its default."""

from __future__ import annotations

import pytest

from pclean_provider.config import ConfigError, PcleanConfig, find_preset, list_presets, load_config
from pclean_provider.data import PRESETS, packaged_dir


def _write(path, text):
    path.write_text(text)
    return path


def test_shipped_presets_exist_and_validate():
    presets = list_presets()
    assert {"quicklook_continuum", "vlass_mtmfs", "spectral_line_cube"} <= set(presets)
    for name, path in presets.items():
        assert path.read_text().startswith("#"), f"preset {name} needs a comment header"
        load_config(presets=[name])


def test_vlass_preset_content():
    cfg = load_config(presets=["vlass_mtmfs"])
    assert cfg.deconvolution.deconvolver == "mtmfs" and cfg.deconvolution.nterms == 2
    assert cfg.weighting.weighting == "briggs" and cfg.weighting.robust == 1.0
    assert cfg.gridding.gridder == "wproject"
    assert not cfg.is_cube


def test_cube_preset_content():
    cfg = load_config(presets=["spectral_line_cube"])
    assert cfg.is_cube
    assert cfg.deconvolution.deconvolver == "hogbom"
    assert cfg.deconvolution.restoringbeam == "common"
    assert cfg.weighting.robust == 0.5


def test_layer_order(tmp_path):
    first = _write(tmp_path / "first.yaml", "iteration:\n  niter: 111\n  gain: 0.2\n")
    second = _write(tmp_path / "second.yaml", "niter: 222\n")
    cfg = load_config(presets=["quicklook_continuum"], files=[first, second])
    assert cfg.iteration.niter == 222  # second file beats first file beats the preset's 500
    assert cfg.iteration.gain == 0.2  # only the first file sets it
    assert cfg.deconvolution.deconvolver == "hogbom"  # from the preset
    assert cfg.sources["niter"] == f"file {second}"
    assert cfg.sources["gain"] == f"file {first}"
    assert cfg.sources["deconvolver"] == "preset quicklook_continuum"
    cfg = load_config(presets=["quicklook_continuum"], files=[first, second], overrides={"niter": 333})
    assert cfg.iteration.niter == 333
    assert cfg.sources["niter"] == "override"


def test_presets_apply_in_order():
    a = load_config(presets=["vlass_mtmfs", "quicklook_continuum"])
    b = load_config(presets=["quicklook_continuum", "vlass_mtmfs"])
    assert a.deconvolution.deconvolver == "hogbom"
    assert b.deconvolution.deconvolver == "mtmfs"


def test_a_later_layer_can_set_a_value_back_to_its_default(tmp_path):
    default = PcleanConfig()
    reset = _write(tmp_path / "reset.yaml", "niter: 0\nweighting: natural\ngridder: standard\n")
    cfg = load_config(presets=["vlass_mtmfs"], files=[reset])
    assert cfg.iteration.niter == default.iteration.niter == 0
    assert cfg.weighting.weighting == "natural"
    assert cfg.gridding.gridder == "standard"
    # also through overrides, for a value the preset changed
    cfg = load_config(presets=["vlass_mtmfs"], overrides={"robust": 0.5, "deconvolver": "hogbom"})
    assert cfg.weighting.robust == 0.5 and cfg.deconvolution.deconvolver == "hogbom"


def test_overrides_may_be_grouped():
    cfg = load_config(overrides={"iteration": {"niter": 9}, "cluster": {"nworkers": 2}})
    assert cfg.iteration.niter == 9 and cfg.cluster.nworkers == 2


def test_presets_dir_environment_comes_first(tmp_path, monkeypatch):
    mine = tmp_path / "presets"
    mine.mkdir()
    _write(mine / "quicklook_continuum.yaml", "# site override\nniter: 7\n")
    _write(mine / "site_only.yaml", "# site preset\nnchan: 3\nspecmode: cube\n")
    monkeypatch.setenv("PCLEAN_PRESETS_DIR", str(mine))
    assert find_preset("quicklook_continuum") == mine / "quicklook_continuum.yaml"
    assert load_config(presets=["quicklook_continuum"]).iteration.niter == 7
    assert load_config(presets=["site_only.yaml"]).spectral.nchan == 3
    # packaged presets are still found after the environment's
    assert find_preset("vlass_mtmfs") == packaged_dir(PRESETS) / "vlass_mtmfs.yaml"


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError) as err:
        load_config(presets=["vlass"])
    assert "vlass_mtmfs" in str(err.value) and err.value.parameter == "preset"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_config(files=[tmp_path / "nope.yaml"])
    assert err.value.parameter == "config"


def test_bad_yaml_file(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "niter: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(files=[bad])


def test_unknown_key_in_a_file_names_the_file_and_suggests(tmp_path):
    bad = _write(tmp_path / "typo.yaml", "iteration:\n  nitre: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(files=[bad])
    message = str(err.value)
    assert "nitre" in message and "'niter'" in message and "typo.yaml" in message


def test_key_in_the_wrong_group(tmp_path):
    bad = _write(tmp_path / "wrong.yaml", "image:\n  niter: 5\n")
    with pytest.raises(ConfigError, match="belongs to group 'iteration'"):
        load_config(files=[bad])


def test_bad_value_in_a_layer_names_the_parameter(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "imsize: [0, 64]\n")
    with pytest.raises(ConfigError) as err:
        load_config(presets=["quicklook_continuum"], files=[bad])
    assert err.value.parameter == "imsize"


def test_pclean_presets_lists_each_name_with_the_file_applied(tmp_path, monkeypatch, capsys):
    from pclean_provider.cli.main import main

    mine = tmp_path / "presets"
    mine.mkdir()
    _write(mine / "vlass_mtmfs.yaml", "# site copy\nniter: 5\n")
    monkeypatch.setenv("PCLEAN_PRESETS_DIR", str(mine))
    assert main(["presets"]) == 0
    listed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert listed["vlass_mtmfs"] == str(mine / "vlass_mtmfs.yaml")
    assert listed["quicklook_continuum"] == str(packaged_dir(PRESETS) / "quicklook_continuum.yaml")
