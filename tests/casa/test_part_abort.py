"""A part whose process CASA ends is reported in CASA's words, not as a lost worker.

The abort is CASA's own: two parts of a mosaic weighted per field load the SUM of their own weight
densities (what the continuum coordinator did for mosaics before it made the per-field density
itself), and CASA's makepsf then ends each part's process with an uncaught casacore
ArrayConformanceError. The coordinator must say so, with where to read more, and must not treat
it as a worker to replace.
"""

from __future__ import annotations

import os

import pytest

from tests.run_cache import simulated

pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def mosaic_ms(casa_runtime):
    return simulated("mosaic-continuum", nchan=4, fields=2, antennas=6, hours=0.25, integration_s=120,
                     noise_jy=0.01, seed=9).ms


def test_casa_ending_a_part_reaches_the_user_as_casa_s_message(mosaic_ms, casa_runtime, tmp_path):
    from pclean_provider.casa import continuum_parts as cp
    from pclean_provider.casa.deconvolver_session import CoordinatorTools
    from pclean_provider.casa.imager_session import open_part
    from pclean_provider.casa.records import encode_record
    from pclean_provider.compute import open_cluster
    from pclean_provider.config import PcleanConfig
    from pclean_provider.config.casa_bridge import casa_records_for
    from pclean_provider.config.cluster import ClusterSpec
    from pclean_provider.engine.imaging_errors import ImagingPartError
    from pclean_provider.engine.part_backends import DaskParts, PartsLost

    imagename = str(tmp_path / "mos")
    rec = casa_records_for(PcleanConfig.from_flat(
        vis=mosaic_ms, imagename=imagename, specmode="mfs", gridder="mosaic", mosweight=True, imsize=[32, 32],
        cell="45arcsec", weighting="briggs", robust=0.5, niter=0))
    selection = cp.check_selection(rec.selection)
    csys = cp.global_coordinates(selection, rec.image, rec.gridding)
    names = [cp.part_image_name(imagename, k) for k in range(2)]
    cp.part_workdir(imagename).mkdir(parents=True)
    specs = [cp.PartSpec(run_id="abort", part=k, nparts=2, selection=rows,
                         image=dict(rec.image, imagename=names[k], csys=encode_record(csys)),
                         gridding=dict(rec.gridding, imagename=names[k]), weighting=rec.weighting,
                         workdir=str(tmp_path / f"part{k + 1}"), log_dir=str(tmp_path / "logs"))
             for k, rows in enumerate(cp.partition_rows(selection, 2))]
    coord = CoordinatorTools(imagename=imagename, normalization=rec.normalization, deconvolution=rec.deconvolution,
                             iteration=rec.iteration, part_images=names, with_deconvolver=False,
                             with_iterbot=False)
    with open_cluster(ClusterSpec(nworkers=2)) as handle:
        backend = DaskParts(handle.client, "abort", 2, imaging="continuum", opener=open_part, poll_s=0.2)
        backend.open(specs)
        backend.run("weight_density")
        summed = coord.gather_weight_density(str(tmp_path / "wd" / "mos"))
        backend.run("set_weight_density", path=summed)
        with pytest.raises(ImagingPartError) as caught:
            backend.run("make_psf")

    err = caught.value
    assert not isinstance(err, PartsLost), "a part CASA ended is not a lost worker to replace"
    text = str(err)
    assert "make_psf" in text and "CASA ended the process" in text, text
    assert "ArrayConformanceError" in text and "reform()" in text, text
    assert "left the cluster" not in text, text
    # Where to read more: the part's captured output and its CASA log, both on disk.
    output = str(tmp_path / "logs" / f"casa-part{err.part + 1}.stderr")
    assert output in text and os.path.isfile(output)
    assert str(tmp_path / "logs" / f"casa-part{err.part + 1}.log") in text
