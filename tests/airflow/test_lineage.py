"""OpenLineage of the imaging operators: the MS in, the image products that exist out (names as the
provider gives file:// assets, so imaging, archive and the asset events meet in one graph). The live
standalone test reads the events of a real run back from the provider's file transport."""

from __future__ import annotations

from pathlib import Path

import tests.airflow.provider_env as provider_env  # noqa: F401 - must come before any Airflow import


def test_the_imaging_operator_names_the_ms_and_its_products(tmp_path):
    from pclean_provider.operators.cube import CubeImagingOperator
    from pclean_provider.operators.lineage import FILE_NAMESPACE, image_products

    ms = tmp_path / "night.ms"
    ms.mkdir()
    imagename = tmp_path / "out" / "night.cube"
    for suffix in (".image", ".residual", ".psf", ".pb", ".model", ".sumwt"):
        Path(str(imagename) + suffix).mkdir(parents=True)
    (tmp_path / "out" / "night.cube.progress.jsonl").write_text("")  # a file beside: not a product
    op = CubeImagingOperator(task_id="cube", scheduler_address="tcp://x:1",
                             overrides={"vis": str(ms), "imagename": str(imagename)})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(FILE_NAMESPACE, str(ms))]
    assert sorted(d.name for d in lineage.outputs) == sorted(image_products(str(imagename)))
    assert {Path(d.name).name for d in lineage.outputs} == {
        "night.cube.image", "night.cube.residual", "night.cube.psf", "night.cube.pb", "night.cube.model",
        "night.cube.sumwt"}


def test_no_parameters_no_lineage():
    from pclean_provider.operators.cube import CubeImagingOperator

    op = CubeImagingOperator(task_id="cube", scheduler_address="tcp://x:1", overrides=None)
    lineage = op.get_openlineage_facets_on_complete(None)
    assert (lineage.inputs, lineage.outputs) == ([], [])


def test_the_fanout_concat_names_the_ms_and_the_whole_cube(tmp_path):
    from pclean_provider.operators.cube import CubeConcatOperator

    ms = tmp_path / "night.ms"
    imagename = tmp_path / "out" / "night.cube"
    for suffix in (".image", ".residual"):
        Path(str(imagename) + suffix).mkdir(parents=True)
    plan = {"imagename": str(imagename), "tclean_kwargs": {"vis": str(ms)}, "specs": []}
    op = CubeConcatOperator(task_id="concat", scheduler_address="tcp://x:1", plan=plan, results=[])
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [str(ms)]
    assert sorted(Path(d.name).name for d in lineage.outputs) == ["night.cube.image", "night.cube.residual"]
