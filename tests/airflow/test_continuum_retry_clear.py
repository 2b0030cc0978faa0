"""A retried continuum task starts afresh: its earlier try's images go, nothing else does."""

from __future__ import annotations


def test_earlier_try_products_are_removed_and_nothing_else(tmp_path):
    from pclean_provider.config import PcleanConfig
    from pclean_provider.operators.continuum import ContinuumImagingOperator, continuum_products

    base = tmp_path / "night.cont"
    (tmp_path / "night.ms").mkdir()
    cfg = PcleanConfig.from_flat(vis=str(tmp_path / "night.ms"), imagename=str(base), specmode="mfs",
                                 deconvolver="mtmfs", nterms=2, niter=100)
    ours = [".image.tt0", ".residual.tt1", ".model.tt0", ".psf.tt2", ".pb.tt0", ".alpha", ".mask",
            ".workdirectory"]
    for suffix in ours:
        (tmp_path / f"night.cont{suffix}").mkdir()
    (tmp_path / "night.cont.ms").mkdir()          # shares the prefix: not a product
    (tmp_path / "night.cont.log").write_text("x")  # a file beside the images
    op = ContinuumImagingOperator(task_id="continuum", scheduler_address="tcp://127.0.0.1:1",
                                  overrides={"vis": str(tmp_path / "night.ms"), "imagename": str(base)})
    op.clear_earlier_try(str(base), continuum_products(cfg))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["night.cont.log", "night.cont.ms", "night.ms"], left
