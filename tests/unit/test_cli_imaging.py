"""The imaging command line: options generated from the models, layering, --dump-config, errors."""

from __future__ import annotations

import re
import sys
import types

import pytest
import yaml

from pclean_provider.cli import imaging
from pclean_provider.cli.main import main as pclean_main
from pclean_provider.config import FLAT_NAMES, PcleanConfig, flat_defaults


def _run(capsys, *argv, subcommands=None):
    code = imaging.main(list(argv), subcommands=subcommands)
    out, err = capsys.readouterr()
    return code, out, err


def _normalised(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_parameter_with_its_model_default(capsys):
    code, out, _ = _run(capsys, "--help", subcommands={"simulate": ("x", "write a simulated MeasurementSet")})
    assert code == 0
    text = _normalised(out)
    defaults = flat_defaults()
    assert set(defaults) == set(FLAT_NAMES)
    for name, default in defaults.items():
        option = f" --{name}[ ,]" if not isinstance(default, bool) else f" --{name}, --no-{name}[ ,]"
        found = re.search(option, text)
        assert found, f"--{name} missing from --help"
        # the first default after the option's help entry is its own
        tail = text[found.end():]
        entry = tail[tail.index("[default: ") + len("[default: "):]
        entry = entry[: entry.find(" --")] if " --" in entry else entry
        shown = entry[: entry.rfind("]")]
        assert shown == _normalised(repr(default)), name
    assert "simulate write a simulated MeasurementSet" in text
    for group in ("data selection", "image definition", "spectral axis", "weighting",
                  "deconvolution and masking", "iteration control", "normalization", "pclean extras",
                  "Dask cluster"):
        assert group in out


def test_help_from_the_pclean_entry_point(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(pclean_main(["--help"]))
    assert exit_info.value.code == 0
    assert "--niter" in capsys.readouterr().out


def test_dump_config_with_presets_files_and_options(capsys, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("iteration:\n  niter: 42\n  gain: 0.05\ncluster:\n  nworkers: 3\n")
    code, out, err = _run(capsys, "--preset", "quicklook_continuum", "--preset", "vlass_mtmfs", "--config",
                          str(site), "--niter", "0", "--imsize", "64", "48", "--cell", "1.5arcsec",
                          "--spw", "0", "--scales", "0", "5", "--no-parallel", "--keep-subcubes",
                          "--threshold", "0.1mJy", "--dump-config")
    assert code == 0, err
    assert out.startswith("# pclean configuration (defaults < preset quicklook_continuum < preset "
                          "vlass_mtmfs < file ")
    cfg = PcleanConfig.from_yaml(out)
    assert cfg.deconvolution.deconvolver == "mtmfs"  # second preset wins over the first
    assert cfg.iteration.niter == 0  # option sets it back to the default over the file's 42
    assert cfg.iteration.gain == 0.05  # from the file
    assert cfg.cluster.nworkers == 3
    assert cfg.image.imsize == [64, 48]
    assert cfg.image.cell == "1.5arcsec"
    assert cfg.selection.spw == "0"
    assert cfg.deconvolution.scales == [0, 5]
    assert cfg.extras.keep_subcubes is True and cfg.extras.parallel is False
    assert cfg.iteration.threshold == "0.1mJy"
    grouped = yaml.safe_load(out)
    assert set(grouped) == {"selection", "image", "spectral", "gridding", "weighting", "deconvolution",
                            "iteration", "normalization", "misc", "extras", "cluster"}


def test_option_values_are_typed_per_field(capsys):
    code, out, _ = _run(capsys, "--cell", "0.5", "--imsize", "128", "--phasecenter", "2", "--start", "3",
                        "--width", "1.5MHz", "--restoringbeam", "--uvtaper", "5arcsec", "--nworkers", "none",
                        "--field", "0", "--dump-config")
    assert code == 0
    flat = PcleanConfig.from_yaml(out).to_flat()
    assert flat["cell"] == 0.5 and flat["imsize"] == 128 and flat["phasecenter"] == 2
    assert flat["start"] == 3 and flat["width"] == "1.5MHz"
    assert flat["restoringbeam"] == [] and flat["uvtaper"] == ["5arcsec"]
    assert flat["nworkers"] is None and flat["field"] == "0"


def test_unknown_option_suggests_and_exits_2(capsys):
    code, out, err = _run(capsys, "--nitre", "5")
    assert code == 2 and out == ""
    assert "nitre" in err and "did you mean 'niter'" in err


def test_abbreviations_are_not_guessed(capsys):
    code, _, err = _run(capsys, "--nit", "5", "--dump-config")
    assert code == 2 and "did you mean 'niter'" in err


@pytest.mark.parametrize("argv, parameter", [
    (["--deconvolver", "mtmfs", "--specmode", "cube"], "deconvolver"),
    (["--nterms", "0"], "nterms"),
    (["--imsize", "-5"], "imsize"),
    (["--cell", "eight"], "cell"),
    (["--threshold", "lots"], "threshold"),
    (["--vis", "/definitely/not/here.ms"], "vis"),
    (["--niter", "x"], "niter"),
])
def test_bad_values_exit_2_naming_the_parameter(capsys, argv, parameter):
    code, out, err = _run(capsys, *argv, "--dump-config")
    assert code == 2 and out == ""
    assert err.startswith("pclean: error: ") and parameter in err
    assert "Traceback" not in err and "pydantic" not in err


def test_imaging_needs_vis_and_imagename(capsys):
    code, _, err = _run(capsys, "--niter", "5")
    assert code == 2 and "vis and imagename must be set" in err


def test_runs_the_engine_with_the_merged_config(capsys, tmp_path, monkeypatch):
    ms = tmp_path / "t.ms"
    ms.mkdir()
    seen = {}

    def fake_run(cfg, progress=False):  # the engine itself is tested with real CASA elsewhere
        seen["cfg"], seen["progress"] = cfg, progress
        return types.SimpleNamespace(imagename=cfg.image.imagename, specmode="mfs", iterations=12,
                                     seconds=1.0, products={"image": cfg.image.imagename + ".image"})

    fake_api = types.ModuleType("pclean_provider.engine.api")
    fake_api.run = fake_run
    monkeypatch.setitem(sys.modules, "pclean_provider.engine.api", fake_api)
    code, out, err = _run(capsys, "--preset", "quicklook_continuum", "--vis", str(ms), "--imagename",
                          str(tmp_path / "img"), "--niter", "12")
    assert code == 0, err
    assert seen["progress"] is True
    assert seen["cfg"].iteration.niter == 12 and seen["cfg"].deconvolution.deconvolver == "hogbom"
    assert str(tmp_path / "img.image") in out


def test_the_summary_says_when_a_parallel_cube_was_imaged_in_this_process(capsys, tmp_path, monkeypatch):
    ms = tmp_path / "t.ms"
    ms.mkdir()
    reason = "imaged in this process, not on the cluster: serial tclean is estimated at 2.9 s (...)"

    def fake_run(cfg, progress=False):
        return types.SimpleNamespace(imagename=cfg.image.imagename, specmode="cube", iterations=0, seconds=1.0,
                                     products={}, in_process_reason=reason)

    fake_api = types.ModuleType("pclean_provider.engine.api")
    fake_api.run = fake_run
    monkeypatch.setitem(sys.modules, "pclean_provider.engine.api", fake_api)
    code, out, err = _run(capsys, "--vis", str(ms), "--imagename", str(tmp_path / "img"), "--specmode", "cube",
                          "--parallel", "--in-process-below-s", "5")
    assert code == 0, err
    assert f"pclean: {reason}" in out


def test_version_prints_the_installed_version(capsys):
    from pclean_provider.cli.main import main
    from pclean_provider.version import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pclean {__version__}"
