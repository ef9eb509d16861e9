"""The Lupton et al. (2004) asinh RGB of three bands (cosmodm_ops.qa.pseudocolour), against the formula."""

from __future__ import annotations

import numpy as np
import pytest

from cosmodm_ops.qa.pseudocolour import lupton_rgb, pick_bands, write_pseudocolour

pytestmark = pytest.mark.unit


def _field() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = (60, 80)
    r, g, b = (rng.normal(100.0, 1.0, shape) for _ in range(3))  # sky 100, noise 1
    r[10, 10] += 30.0   # a red source (only in the red band), bottom-left (row 10)
    b[50, 70] += 30.0   # a blue source
    for c, f in ((r, 3000.0), (g, 1500.0), (b, 750.0)):
        c[30, 40] += f  # a bright source with red:green:blue = 4:2:1 that saturates
    return r, g, b


def test_colours_and_orientation_follow_the_fluxes():
    r, g, b = _field()
    rgb = lupton_rgb(r, g, b, q=8.0)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    ny = rgb.shape[0]
    red_px, blue_px = rgb[ny - 1 - 10, 10], rgb[ny - 1 - 50, 70]  # row 0 of the PNG is the top (north up)
    assert red_px[0] > 100 and red_px[0] > 3 * max(red_px[1], red_px[2], 1)
    assert blue_px[2] > 100 and blue_px[2] > 3 * max(blue_px[0], blue_px[1], 1)
    # the saturated source keeps its hue: channels scaled together to a maximum of 255, ratio 4:2:1
    bright = rgb[ny - 1 - 30, 40].astype(float)
    assert bright[0] == 255
    assert bright[1] / bright[0] == pytest.approx(0.5, abs=0.01)
    assert bright[2] / bright[0] == pytest.approx(0.25, abs=0.01)


def test_asinh_scaling_matches_lupton_formula():
    r = np.array([[0.0, 1.0, 2.0]])
    g = np.array([[0.0, 1.0, 0.0]])
    b = np.array([[0.0, 1.0, 1.0]])
    q, stretch = 3.0, 10.0
    rgb = lupton_rgb(r, g, b, q=q, stretch=stretch, minimum=[0.0, 0.0, 0.0])
    mean = (r + g + b) / 3.0
    for j in (1, 2):
        scale = np.arcsinh(q * mean[0, j] / stretch) / (q * mean[0, j])
        for k, c in enumerate((r, g, b)):
            assert rgb[0, j, k] == int(c[0, j] * scale * 255 + 0.5)
    assert tuple(rgb[0, 0]) == (0, 0, 0)


def test_no_data_is_black_and_bad_shapes_are_refused():
    r, g, b = _field()
    g[:5, :] = np.nan
    rgb = lupton_rgb(r, g, b)
    assert not rgb[-5:].any()  # bottom rows of the data = last rows of the image
    with pytest.raises(ValueError, match="one shape"):
        lupton_rgb(r, g[:10], b)


def test_band_choice():
    assert pick_bands(["g", "r", "i", "z"]) == ["i", "r", "g"]
    assert pick_bands(["r", "i", "z", "y"]) == ["z", "i", "r"]
    assert pick_bands(["g", "r"]) is None


def test_writer_makes_a_pseudocolour_product(tmp_path):
    from matplotlib.image import imread

    from cosmodm_ops.fits import file_sha256

    r, g, b = _field()
    tags = {"survey": "ps1", "camera": "gpc1", "stage": "coadd", "version": "v2", "kind": "coadd_catalog",
            "tile": "T1", "band": "r", "ccd": None, "night": None, "exposure": None}
    p = write_pseudocolour({"i": r, "r": g, "g": b}, ["i", "r", "g"], {"i": 30.0, "r": 30.0, "g": 30.0},
                           tmp_path / "T1_pseudocolour.png", tmp_path, tags)
    assert p.kind == "pseudocolour" and p.path == "T1_pseudocolour.png"
    assert p.tags["kind"] == "pseudocolour" and p.tags["band"] == "gri"
    assert (p.tags["survey"], p.tags["version"], p.tags["tile"]) == ("ps1", "v2", "T1")
    assert p.sha256 == file_sha256(tmp_path / p.path)
    img = imread(tmp_path / p.path)
    assert img.shape[:2] == (60, 80)
    assert np.array_equal((img[..., :3] * 255).round().astype(np.uint8), lupton_rgb(r, g, b))


def test_band_coadds_bring_the_plain_coadd_for_the_pseudocolour_image(tmp_path):
    """read_band_coadds: the band job's non-homogenized ``coadd`` product (optional, checksum verified)."""
    from cosmodm_ops.coadd.inputs import CoaddBadInput, read_band_coadds
    from cosmodm_ops.fits import file_sha256, write_image
    from cosmodm_ops.manifest import Manifest, ManifestProduct, write_manifest

    def band_job(band: str, with_plain: bool) -> None:
        folder = tmp_path / band
        folder.mkdir()
        prods = []
        for kind in ("coadd_homog", "coadd_homog_weight") + (("coadd",) if with_plain else ()):
            p = write_image(folder / f"T_{band}_{kind}.fits", np.ones((8, 8), np.float32), None)
            prods.append(ManifestProduct(kind=kind, tags={"tile": "T", "band": band, "kind": kind}, path=p.name,
                                         sha256=file_sha256(p), size=p.stat().st_size))
        write_manifest(Manifest(tags={"tile": "T", "band": band}, products=prods), folder / "manifest.json")

    band_job("r", True)
    band_job("i", False)
    found = read_band_coadds([tmp_path], ["r", "i"], "T")
    assert found["r"].plain == (tmp_path / "r" / "T_r_coadd.fits").resolve()
    assert [i.role for i in found["r"].inputs] == ["coadd_homog", "coadd_homog_weight", "coadd"]
    assert found["i"].plain is None and len(found["i"].inputs) == 2
    (tmp_path / "r" / "T_r_coadd.fits").write_bytes(b"changed")
    with pytest.raises(CoaddBadInput, match="T_r_coadd.fits: missing or its sha256 differs"):
        read_band_coadds([tmp_path], ["r", "i"], "T")
