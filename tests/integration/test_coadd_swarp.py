from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.wcs import WCS

from cosmodm_ops.coadd.swarp import SwarpInput, color_png, flux_scales, run_swarp, swarp_command
from cosmodm_ops.coadd.synthetic import moffat_image
from cosmodm_ops.coadd.tiling import target_tile
from tests.support import need_binary

RA0, DEC0, SCALE = 40.0, -20.0, 0.263
STARS = [(40.004, -20.003), (39.995, -19.996), (40.0, -20.0)]


def _wcs(ra: float, dec: float, n: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = np.array([[-SCALE / 3600, 0], [0, SCALE / 3600]])
    w.wcs.set()
    return w


def _image(path: Path, ra: float, dec: float, flux_factor: float, seed: int, compress: bool) -> SwarpInput:
    n = 400
    w = _wcs(ra, dec, n)
    img = np.random.default_rng(seed).normal(0, 1.0, (n, n))
    for sra, sdec in STARS:
        x, y = w.all_world2pix([sra], [sdec], 0)
        img += 5000.0 * flux_factor * moffat_image((n, n), float(x[0]), float(y[0]), 4.0, 3.0)
    hdr = w.to_header()
    suffix = ".fits.fz" if compress else ".fits"
    im = path / f"im{seed}{suffix}"
    wt = path / f"wt{seed}{suffix}"
    from cosmodm_ops.fits import write_image

    write_image(im, img.astype(np.float32), hdr, compress=compress)
    write_image(wt, np.full((n, n), 1.0, np.float32), hdr, compress=compress)
    return SwarpInput(im, wt)


def test_command_is_rendered_from_the_tile():
    tile = target_tile("T1", RA0, DEC0, 0.04, SCALE)
    ins = [
        SwarpInput(Path("a.fits"), Path("a.wt.fits"), 1.0),
        SwarpInput(Path("b.fits"), Path("b.wt.fits"), 0.0),
    ]
    cmd = swarp_command(tile, ins, Path("o.fits"), Path("o.wt.fits"), workdir=Path("/tmp/w"))
    args = dict(zip(cmd[4::2], cmd[5::2], strict=True))
    assert cmd[:3] == ["SWarp", "a.fits", "-c"]  # the zero-scale image is left out
    assert args["-WEIGHT_TYPE"] == "MAP_WEIGHT" and args["-COMBINE_TYPE"] == "WEIGHTED"
    assert args["-RESAMPLING_TYPE"] == "LANCZOS3" and args["-PIXELSCALE_TYPE"] == "MANUAL"
    assert args["-IMAGE_SIZE"] == f"{tile.npix},{tile.npix}" and args["-WEIGHT_IMAGE"] == "a.wt.fits"
    assert args["-CENTER"] == "40.00000000,-20.00000000" and args["-FSCALE_DEFAULT"] == "1"
    np.testing.assert_allclose(flux_scales([30.0, 30.0 + 2.5 * np.log10(2), np.nan], 30.0), [1.0, 0.5, 0.0])


@pytest.mark.astromatic
@pytest.mark.parametrize("compress", [False, True])
def test_swarp_coadd_of_two_images_with_flux_scales(tmp_path: Path, compress: bool):
    need_binary("SWarp")
    a = _image(tmp_path, RA0, DEC0, 1.0, 1, compress)
    b = _image(tmp_path, RA0 + 0.003, DEC0 - 0.002, 2.0, 2, compress)  # zeropoint brighter by 2.5 log10(2)
    scales = flux_scales([30.0, 30.0 + 2.5 * np.log10(2.0)], 30.0)
    ins = [SwarpInput(a.image, a.weight, scales[0]), SwarpInput(b.image, b.weight, scales[1])]
    tile = target_tile("T1", RA0, DEC0, 0.04, SCALE)
    suffix = ".fits.fz" if compress else ".fits"
    res = run_swarp(
        tile,
        ins,
        tmp_path / f"coadd{suffix}",
        tmp_path / f"coadd.weight{suffix}",
        workdir=tmp_path / "w",
        compress=compress,
    )
    ext = 1 if compress else 0  # tile-compressed output: the image sits in HDU 1
    with fitsio.FITS(str(res.image)) as f:
        assert f[ext].is_compressed() == compress
        data, hdr = f[ext].read(), f[ext].read_header()
    assert data.shape == tile.shape
    assert hdr["CRVAL1"] == pytest.approx(RA0) and hdr["CRVAL2"] == pytest.approx(DEC0)
    ow = WCS(_astropy_header(res.image))
    for sra, sdec in STARS:
        x, y = ow.all_world2pix([sra], [sdec], 0)
        xi, yi = round(x[0]), round(y[0])
        yy, xx = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
        ap = (xx - x[0]) ** 2 + (yy - y[0]) ** 2 <= 15**2
        assert data[ap].sum() == pytest.approx(5000.0, rel=0.03)  # both images on the zeropoint of the first
        assert data[yi, xi] > 50
    weight = fitsio.read(str(res.weight), ext=ext)
    # the second image's weight is scaled by 1/FLXSCALE^2 = 4: overlap weight about 1 + 4
    assert np.median(weight[weight > 0]) == pytest.approx(5.0, rel=0.1)


def _astropy_header(path: Path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = hdul[1] if len(hdul) > 1 and hdul[0].data is None else hdul[0]
        return hdu.header.copy()


def test_color_png(tmp_path: Path):
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (64, 64))
    star = moffat_image((64, 64), 32, 32, 4, 3) * 1e4
    png = color_png(base + star, base + 0.5 * star, base + 0.2 * star, tmp_path / "rgb.png")
    import matplotlib.image as mpimg

    rgb = mpimg.imread(png)
    assert rgb.shape[:2] == (64, 64)
    centre = rgb[32, 32, :3]
    assert centre[0] >= centre[1] >= centre[2] and centre[0] > 0.5  # a red star
    assert rgb[5, 5, :3].mean() < 0.3  # dark sky
