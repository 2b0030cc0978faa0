"""The product-suffix table matches what CASA 6's tclean writes (listed from real runs)."""

from __future__ import annotations

import pytest

from pclean_provider import products

# Directory listings of real tclean runs (64 px, niter=20 unless said), suffix by suffix.
SEEN = {
    "hogbom mfs": (dict(deconvolver="hogbom", niter=20),
                   ".image .mask .model .pb .psf .residual .sumwt"),
    "hogbom mfs pbcor": (dict(deconvolver="hogbom", niter=20, pbcor=True),
                         ".image .image.pbcor .mask .model .pb .psf .residual .sumwt"),
    "hogbom mfs niter=0": (dict(deconvolver="hogbom"), ".image .model .pb .psf .residual .sumwt"),
    "hogbom cube mosaic": (dict(deconvolver="hogbom", niter=20, gridder="mosaic"),
                           ".image .mask .model .pb .psf .residual .sumwt .weight"),
    "mtmfs nterms=1": (dict(deconvolver="mtmfs", nterms=1, niter=20),
                       ".image.tt0 .mask .model.tt0 .pb.tt0 .psf.tt0 .residual.tt0 .sumwt.tt0"),
    "mtmfs nterms=2": (dict(deconvolver="mtmfs", nterms=2, niter=20),
                       ".alpha .alpha.error .image.tt0 .image.tt1 .mask .model.tt0 .model.tt1 .pb.tt0 .psf.tt0 "
                       ".psf.tt1 .psf.tt2 .residual.tt0 .residual.tt1 .sumwt.tt0 .sumwt.tt1 .sumwt.tt2"),
    "mtmfs nterms=2 niter=0": (dict(deconvolver="mtmfs", nterms=2),
                               ".alpha .alpha.error .image.tt0 .image.tt1 .model.tt0 .model.tt1 .pb.tt0 .psf.tt0 "
                               ".psf.tt1 .psf.tt2 .residual.tt0 .residual.tt1 .sumwt.tt0 .sumwt.tt1 .sumwt.tt2"),
    "mtmfs nterms=2 pbcor": (dict(deconvolver="mtmfs", nterms=2, niter=20, pbcor=True),
                             ".alpha .alpha.error .image.tt0 .image.tt0.pbcor .image.tt1 .image.tt1.pbcor .mask "
                             ".model.tt0 .model.tt1 .pb.tt0 .pb.tt1 .psf.tt0 .psf.tt1 .psf.tt2 .residual.tt0 "
                             ".residual.tt1 .sumwt.tt0 .sumwt.tt1 .sumwt.tt2"),
    "mtmfs nterms=3 pbcor": (dict(deconvolver="mtmfs", nterms=3, niter=20, pbcor=True),
                             ".alpha .alpha.error .beta .image.tt0 .image.tt0.pbcor .image.tt1 .image.tt1.pbcor "
                             ".image.tt2 .image.tt2.pbcor .mask .model.tt0 .model.tt1 .model.tt2 .pb.tt0 .pb.tt1 "
                             ".pb.tt2 .psf.tt0 .psf.tt1 .psf.tt2 .psf.tt3 .psf.tt4 .residual.tt0 .residual.tt1 "
                             ".residual.tt2 .sumwt.tt0 .sumwt.tt1 .sumwt.tt2 .sumwt.tt3 .sumwt.tt4"),
}


@pytest.mark.parametrize("case", sorted(SEEN))
def test_products_for_matches_tclean(case):
    kwargs, listing = SEEN[case]
    assert products.products_for(**kwargs) == tuple(sorted(listing.split()))


def test_every_single_term_product_is_one_tclean_can_write():
    possible = set(products.products_for(niter=1, pbcor=True, gridder="mosaic"))
    assert set(products.SINGLE_TERM_PRODUCTS) == possible
    assert set(products.BEAM_PRODUCTS) <= possible and set(products.RESTORED_PRODUCTS) <= possible
    mtmfs = set(products.products_for("mtmfs", nterms=2, pbcor=True, niter=1))
    assert set(products.MTMFS_SCIENCE_PRODUCTS) <= mtmfs


def test_names(tmp_path):
    assert products.first_term(products.RESIDUAL, "mtmfs") == ".residual.tt0"
    assert products.first_term(products.RESIDUAL, "hogbom") == ".residual"
    base = str(tmp_path / "night")
    assert products.imagename_of(base + ".image.tt0") == base == products.imagename_of(base + ".image")
    assert products.imagename_of(base) == base
    (tmp_path / "night.image.tt0").mkdir()
    (tmp_path / "night.psf.tt0").mkdir()
    assert products.is_taylor_product(base)
    assert products.existing(base, products.MAIN_IMAGE_SUFFIXES) == [".image.tt0"]
    (tmp_path / "night.image").mkdir()
    assert not products.is_taylor_product(base)
    assert products.existing(base) == [".image"]


def test_remove_products_removes_only_named_product_folders(tmp_path):
    base = str(tmp_path / "night")
    for name in ("night.image", "night.residual", "night.ms", "night.imagery"):
        (tmp_path / name).mkdir()
    (tmp_path / "night.psf").write_text("a file, not an image")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "night.model").symlink_to(tmp_path / "elsewhere")
    removed = products.remove_products(base, (products.IMAGE, products.RESIDUAL, products.PSF, products.MODEL))
    assert sorted(removed) == [base + ".image", base + ".residual"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "night.imagery", "night.model", "night.ms",
                                                          "night.psf"]
