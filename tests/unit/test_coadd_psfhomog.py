from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from cosmodm_ops.coadd import psfhomog as ph
from cosmodm_ops.coadd import synthetic as syn
from tests.support import real_file

MODELS = [
    "piff/DECam_00241238_01_psfcat.psf",
    "esheldon_psfex/test_psfcat.psf",
    "galsim/DECam_00154912_12_psfcat.psf",
    "legacypipe/decam-00431608-N10-psfex.fits",
]


def _star_fwhms(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, half: int = 15) -> np.ndarray:
    out = []
    for x, y in zip(xs, ys, strict=True):
        stamp = image[y - half : y + half + 1, x - half : x + half + 1]
        out.append(ph.psf_fwhm(stamp, center=(half, half)))
    return np.array(out)


@pytest.mark.parametrize("name", MODELS)
def test_real_psfex_models(name):
    model = ph.read_psfex(real_file(name))
    assert model.poldeg == 2 and model.basis.shape[0] == 6
    psf = ph.psf_at(model, 1000.0, 2000.0)
    n = psf.shape[0]
    assert n % 2 == 1 and psf.sum() == pytest.approx(1.0)
    yy, xx = np.mgrid[0:n, 0:n]
    assert abs((psf * xx).sum() - n // 2) < 0.5 and abs((psf * yy).sum() - n // 2) < 0.5
    # PSF_SAMP resampling: the stamp spans the model's extent in image pixels
    assert n == 2 * int(np.floor(model.basis.shape[-1] // 2 * model.samp)) + 1
    fwhm = ph.psf_fwhm(psf)
    assert 2.5 < fwhm < 6.0
    # PSFEx's PSF_FWHM comes from the sample stars' FWHM_IMAGE, larger than the model's core
    assert 0.6 * model.fwhm < fwhm <= 1.05 * model.fwhm


def test_moffat_fwhm_and_kernel_to_target():
    for fwhm, beta in [(4.0, 2.5), (5.5, 3.5)]:
        assert ph.psf_fwhm(ph.moffat_psf(fwhm, beta, 41)) == pytest.approx(fwhm, rel=1e-6)
    model = ph.read_psfex(real_file("galsim/DECam_00154912_12_psfcat.psf"))
    psf = ph.psf_at(model, 1024.0, 2048.0, 41)
    target = ph.moffat_psf(1.3 * ph.psf_fwhm(psf), 2.5, 41)
    kern = ph.matching_kernel(psf, target)
    assert kern.sum() == pytest.approx(1.0, abs=1e-12)  # flux conservation
    conv = fftconvolve(psf, kern, mode="same")
    resid = np.sqrt(((conv - target) ** 2).sum() / (target**2).sum())
    assert resid < 0.015
    assert ph.psf_fwhm(conv) == pytest.approx(ph.psf_fwhm(target), rel=0.01)


def test_homogenized_field_has_uniform_fwhm():
    shape = (1024, 512)
    model = syn.psfex_like_model(shape, fwhm_range=(3.6, 4.8))
    image, xs, ys = syn.psf_field_image(shape, lambda x, y: ph.psf_at(model, x + 1, y + 1), spacing=64)
    before = _star_fwhms(image, xs, ys)
    assert before.max() / before.min() > 1.2  # the input PSF varies by 30% over the image
    target = ph.moffat_psf(6.5, 2.5, 41)
    weight = np.full(shape, 4.0, np.float32)
    image0 = image.copy()
    out, _wout = ph.homogenize(image, weight, model, target, cells=(8, 4))
    np.testing.assert_array_equal(image, image0)  # the input is not modified
    after = _star_fwhms(out, xs, ys)
    assert after.max() / after.min() - 1 <= 0.02
    assert np.median(after) == pytest.approx(6.5, rel=0.02)
    inner = (xs > 60) & (xs < shape[1] - 60) & (ys > 60) & (ys < shape[0] - 60)
    assert abs(out.sum() / image.sum() - 1) < 0.01  # flux conserved (stars away from edges dominate)
    fluxes = [out[y - 20 : y + 21, x - 20 : x + 21].sum() for x, y in zip(xs[inner], ys[inner], strict=True)]
    assert np.allclose(fluxes, 1e5, rtol=0.03)


def test_real_model_over_a_full_ccd():
    model = ph.read_psfex(real_file("galsim/DECam_00154912_12_psfcat.psf"))
    shape = (4096, 2048)
    image, xs, ys = syn.psf_field_image(
        shape, lambda x, y: ph.psf_at(model, x + 1, y + 1, 31), spacing=384, margin=64
    )
    fw_in = [
        ph.psf_fwhm(ph.psf_at(model, x, y))
        for x, y in [(1, 1), (2048, 1), (1, 4096), (2048, 4096), (1024, 2048)]
    ]
    target_fwhm = 1.25 * max(fw_in)
    target = ph.moffat_psf(target_fwhm, 2.5, 41)
    out = ph.apply_kernels(image, ph.cell_kernels(model, shape, target, (16, 8)))
    after = _star_fwhms(out, xs, ys)
    assert after.max() / after.min() - 1 <= 0.02
    assert np.median(after) == pytest.approx(target_fwhm, rel=0.02)


def test_weight_propagation_and_masks():
    rng = np.random.default_rng(5)
    shape = (512, 512)
    sigma = 3.0
    image = rng.normal(0, sigma, shape).astype(np.float32)
    weight = np.full(shape, 1 / sigma**2, np.float32)
    weight[200:210, 300:310] = 0.0  # a masked patch
    image[200:210, 300:310] = 1e6  # with garbage in it
    model = syn.psfex_like_model(shape, fwhm_range=(3.5, 4.0))
    out, wout = ph.homogenize(image, weight, model, ph.moffat_psf(5.0, 2.5, 41), cells=(4, 4))
    assert np.all(wout[203:207, 303:307] == 0)
    assert np.all(wout[:150] > 0) and np.all(np.isfinite(out))
    assert np.abs(out[wout > 0]).max() < 100  # the garbage did not leak into good pixels
    region = (slice(30, 150), slice(30, 480))
    predicted = np.sqrt(np.median(1 / wout[region]))
    assert out[region].std() == pytest.approx(predicted, rel=0.05)
    assert predicted < sigma / 3  # smoothing lowers the per-pixel noise


def test_target_fwhm_and_errors(tmp_path):
    assert ph.target_fwhm([4.0, 5.0, np.nan, 4.5]) == 4.5
    with pytest.raises(ph.PSFHomogError):
        ph.target_fwhm([])
    bad = tmp_path / "x.psf"
    bad.write_bytes(b"nope")
    with pytest.raises(ph.PSFHomogError, match="cannot open"):
        ph.read_psfex(bad)


def test_band_target_is_median_moffat():
    from cosmodm_ops.config import load_config

    beta = load_config("demo").coadd.moffat_beta
    shape = (512, 512)
    models = [syn.psfex_like_model(shape, fwhm_range=(f, f)) for f in (3.0, 4.0, 6.0)]
    target, fwhm = ph.band_target(models, shape, beta)
    assert fwhm == pytest.approx(4.0, rel=0.01)
    assert ph.psf_fwhm(target) == pytest.approx(fwhm, rel=1e-6) and target.shape[0] == 2 * 16 + 1
    _, f2 = ph.band_target(models, shape, beta, fwhm=7.0)
    assert f2 == 7.0
