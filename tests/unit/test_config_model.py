"""PcleanConfig: flat <-> grouped mapping, tclean keyword arguments, YAML and JSON round trips."""

from __future__ import annotations

import os

import pytest

from pclean_provider.config import (
    FLAT_NAMES,
    SECTIONS,
    TCLEAN_GROUPS,
    TCLEAN_NAMES,
    ClusterSpec,
    PcleanConfig,
    flat_defaults,
)


@pytest.fixture
def ms(tmp_path):
    path = tmp_path / "target.ms"
    path.mkdir()
    return path


def test_every_group_exists_and_flat_names_are_unique():
    assert list(TCLEAN_GROUPS) == ["selection", "image", "spectral", "gridding", "weighting",
                                   "deconvolution", "iteration", "normalization", "misc"]
    assert SECTIONS["cluster"] is ClusterSpec
    total = sum(len(model.model_fields) for model in SECTIONS.values())
    assert len(FLAT_NAMES) == total
    # auto-multithresh knobs live with deconvolution
    for name in ("sidelobethreshold", "noisethreshold", "lownoisethreshold", "negativethreshold",
                 "smoothfactor", "minbeamfrac", "cutthreshold", "growiterations", "dogrowprune",
                 "minpercentchange", "fastnoise"):
        assert FLAT_NAMES[name] == "deconvolution"


def test_defaults_are_tcleans_for_a_sample():
    d = flat_defaults()
    assert d["imsize"] == [100]
    assert d["cell"] == []
    assert d["specmode"] == "mfs"
    assert d["deconvolver"] == "hogbom"
    assert d["nterms"] == 2
    assert d["weighting"] == "natural" and d["robust"] == 0.5
    assert d["threshold"] == 0.0 and d["niter"] == 0 and d["nmajor"] == -1
    assert d["uvtaper"] == [""]
    assert d["datacolumn"] == "corrected"
    assert d["usemask"] == "user" and d["growiterations"] == 75
    assert d["parallel"] is False and d["concat_mode"] == "auto" and d["cube_chunksize"] == -1
    assert d["threads_per_worker"] == 1


def test_from_flat_puts_each_name_in_its_group(ms):
    cfg = PcleanConfig.from_flat(vis=str(ms), imagename="out/img", niter=50, specmode="cube",
                                 robust=-0.5, weighting="briggs", parallel=True, nworkers=3,
                                 cube_chunksize=2, slurm_queue="debug")
    assert cfg.iteration.niter == 50
    assert cfg.spectral.specmode == "cube" and cfg.is_cube
    assert cfg.weighting.robust == -0.5 and cfg.weighting.weighting == "briggs"
    assert cfg.extras.parallel is True and cfg.extras.cube_chunksize == 2
    assert cfg.cluster.nworkers == 3 and cfg.cluster.slurm_queue == "debug"
    flat = cfg.to_flat()
    assert set(flat) == set(FLAT_NAMES)
    assert flat["niter"] == 50 and flat["nworkers"] == 3


def test_from_flat_accepts_a_mapping_and_keywords_together():
    cfg = PcleanConfig.from_flat({"niter": 5, "gain": 0.2}, niter=7)
    assert cfg.iteration.niter == 7 and cfg.iteration.gain == 0.2


@pytest.mark.parametrize("specmode, cube", [("mfs", False), ("cont", False), ("cube", True),
                                            ("cubedata", True), ("cubesource", True)])
def test_is_cube(specmode, cube):
    assert PcleanConfig.from_flat(specmode=specmode).is_cube is cube


def test_the_spec_modes_are_written_once_and_the_cube_engine_reads_them():
    """Which modes exist is the specmode field's type; the continuum-plane, cube and cube-engine modes
    are subsets of it, and the cube engine refuses a cube the config accepts but it does not make."""
    from typing import get_args

    from pclean_provider.config.groups import (
        CUBE_ENGINE_SPECMODES,
        CUBE_SPECMODES,
        MFS_SPECMODES,
        Specmode,
        Spectral,
    )
    from pclean_provider.engine.cube.preflight import check_cube_inputs
    from pclean_provider.engine.imaging_errors import PreflightError

    modes = set(get_args(Spectral.model_fields["specmode"].annotation))
    assert modes == set(get_args(Specmode))
    assert set(CUBE_ENGINE_SPECMODES) < set(CUBE_SPECMODES) < modes and set(MFS_SPECMODES) < modes
    assert not set(MFS_SPECMODES) & set(CUBE_SPECMODES)
    for specmode in set(CUBE_SPECMODES) - set(CUBE_ENGINE_SPECMODES):
        with pytest.raises(PreflightError, match=f"specmode='{specmode}': the cube engine makes"):
            check_cube_inputs(PcleanConfig.from_flat(specmode=specmode))


def test_tclean_kwargs_are_exactly_tcleans_names_and_paths_are_absolute(ms, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = PcleanConfig.from_flat(vis="target.ms", imagename="products/img", parallel=True, nworkers=2,
                                 keep_subcubes=True, startmodel="model.im", mask="circle[[32pix,32pix],5pix]")
    kwargs = cfg.tclean_kwargs()
    assert set(kwargs) == set(TCLEAN_NAMES)
    assert len(kwargs) == 92
    assert not {"nworkers", "keep_subcubes", "cube_chunksize", "concat_mode", "cluster_type"} & set(kwargs)
    # pclean's parallel is Dask; tclean's parallel (MPI) is never asked for
    assert kwargs["parallel"] is False
    assert kwargs["vis"] == str(ms)
    assert kwargs["imagename"] == os.path.join(str(tmp_path), "products", "img")
    assert kwargs["startmodel"] == os.path.join(str(tmp_path), "model.im")
    # region text is not a path
    assert kwargs["mask"] == "circle[[32pix,32pix],5pix]"


def test_tclean_kwargs_absolutise_an_existing_mask_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.mask").mkdir()
    assert PcleanConfig.from_flat(mask="my.mask").tclean_kwargs()["mask"] == str(tmp_path / "my.mask")


def test_vis_list_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.ms").mkdir()
    (tmp_path / "b.ms").mkdir()
    cfg = PcleanConfig.from_flat(vis=["a.ms", "b.ms"])
    assert cfg.selection.vis == [str(tmp_path / "a.ms"), str(tmp_path / "b.ms")]


def _varied_config(ms) -> PcleanConfig:
    return PcleanConfig.from_flat(
        vis=str(ms), imagename="/data/out/img", imsize=[64, 48], cell=["1.5arcsec", 2.0], spw=["0", "1:2~5"],
        specmode="cube", nchan=8, start="1.4GHz", width=2, restfreq=["1.42040575GHz"],
        deconvolver="multiscale", scales=[0, 5, 15], weighting="briggs", robust=1.0,
        uvtaper=["10arcsec"], niter=100, threshold="0.1mJy", restoringbeam="common",
        usemask="auto-multithresh", noisethreshold=4.25, phasecenter=0, observation=1,
        parallel=True, concat_mode="virtual", nworkers=2, memory_limit="4GB",
        slurm_job_extra_directives=["--exclusive"],
    )


def test_yaml_round_trip_keeps_every_value_and_type(ms):
    cfg = _varied_config(ms)
    text = cfg.to_yaml(header="round trip")
    assert text.startswith("# round trip\n")
    back = PcleanConfig.from_yaml(text)
    assert back == cfg
    assert back.to_flat() == cfg.to_flat()
    assert isinstance(back.spectral.width, int) and isinstance(back.image.phasecenter, int)
    assert back.selection.spw == ["0", "1:2~5"]
    assert back.image.cell == ["1.5arcsec", "2.0arcsec"]


def test_json_round_trip(ms):
    cfg = _varied_config(ms)
    back = PcleanConfig.model_validate_json(cfg.model_dump_json())
    assert back == cfg
    assert back.tclean_kwargs() == cfg.tclean_kwargs()


def test_json_round_trip_where_the_data_is_not_visible(tmp_path):
    ms = tmp_path / "gone.ms"
    ms.mkdir()
    text = PcleanConfig.from_flat(vis=str(ms)).model_dump_json()
    ms.rmdir()
    back = PcleanConfig.model_validate_json(text, context={"check_paths": False})
    assert back.selection.vis == str(ms)


def test_flat_yaml_is_read_as_well_as_grouped():
    cfg = PcleanConfig.from_yaml("niter: 12\nweighting: briggs\ncluster:\n  nworkers: 4\n")
    assert cfg.iteration.niter == 12
    assert cfg.weighting.weighting == "briggs"
    assert cfg.cluster.nworkers == 4


def test_numbers_in_selection_strings_become_strings():
    cfg = PcleanConfig.from_yaml("spw: 0\nfield: 3\n")
    assert cfg.selection.spw == "0" and cfg.selection.field == "3"


def test_replace_revalidates():
    cfg = PcleanConfig.from_flat(specmode="cube", nchan=10)
    sub = cfg.replace(start=4, nchan=2)
    assert (sub.spectral.start, sub.spectral.nchan) == (4, 2)
    assert cfg.spectral.nchan == 10


def test_mixed_cell_list_gets_units_because_tclean_refuses_mixed_lists():
    assert PcleanConfig.from_flat(cell=["1arcsec", 2.0]).image.cell == ["1arcsec", "2.0arcsec"]
    assert PcleanConfig.from_flat(cell=[1, 2]).image.cell == [1.0, 2.0]


def test_image_helpers():
    cfg = PcleanConfig.from_flat(imsize=64, cell="0.1arcmin")
    assert cfg.image.shape() == (64, 64)
    assert cfg.image.cell_arcsec() == pytest.approx((6.0, 6.0))
    assert PcleanConfig.from_flat(imsize=[64, 32]).image.shape() == (64, 32)
    assert PcleanConfig().image.cell_arcsec() is None


def test_every_parameter_has_a_description_for_help():
    missing = [name for section, model in SECTIONS.items() for name, field in model.model_fields.items()
               if not (field.description or "").strip()]
    assert missing == []


@pytest.mark.parametrize("preset", ["quicklook_continuum", "vlass_mtmfs", "spectral_line_cube"])
def test_presets_round_trip_through_yaml_and_json(preset):
    from pclean_provider.config import load_config

    cfg = load_config(presets=[preset])
    assert PcleanConfig.from_yaml(cfg.to_yaml()) == cfg
    assert PcleanConfig.model_validate_json(cfg.model_dump_json()) == cfg
