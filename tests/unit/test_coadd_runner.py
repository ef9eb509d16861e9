"""Pure parts of the coadd runner and CLI: detection image, aperture-to-total correction, argument parsing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.coadd.catalogs import moffat_to_total as _moffat_to_total
from cosmodm_ops.coadd.cli import _overrides
from cosmodm_ops.coadd.detection import chi_mean, snr_mean
from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput, InputFile

pytestmark = pytest.mark.unit


def test_chi_mean_of_noise_is_standardized_whatever_the_number_of_bands():
    rng = np.random.default_rng(1)
    shape = (400, 400)
    sig = [2.0, 0.5, 1.0]
    imgs = [rng.normal(0, s, shape) for s in sig]
    wts = [np.full(shape, 1 / s**2) for s in sig]
    wts[2][:200] = 0.0  # the third band covers half the image: 2 bands there, 3 elsewhere
    det = chi_mean(imgs, wts)
    for part in (det[:200], det[200:]):
        assert abs(part.mean()) < 0.01 and part.std() == pytest.approx(1.0, rel=0.02)
    # a source stands out in proportion to its S/N summed in quadrature over the bands
    imgs[0][300, 300] += 10 * sig[0]
    imgs[1][300, 300] += 10 * sig[1]
    assert chi_mean(imgs, wts)[300, 300] > 10
    uncovered = chi_mean([imgs[0]], [np.zeros(shape)])
    assert not uncovered.any()


def test_snr_mean_is_a_unit_gaussian_on_the_sky_and_keeps_negative_peaks_negative():
    rng = np.random.default_rng(1)
    shape = (400, 400)
    sig = [2.0, 0.5, 1.0]
    imgs = [rng.normal(0, s, shape) for s in sig]
    wts = [np.full(shape, 1 / s**2) for s in sig]
    wts[2][:200] = 0.0  # 2 bands in the first half, 3 in the second
    det = snr_mean(imgs, wts)
    for part in (det[:200], det[200:]):
        assert abs(part.mean()) < 0.01 and part.std() == pytest.approx(1.0, rel=0.02)
        assert abs(np.median(part)) < 0.01  # symmetric: SExtractor's mode estimate of the sky is 0
    # S/N adds linearly: 10 sigma in each of the three bands -> 30 / sqrt(3) above the noise
    for b, s in enumerate(sig):
        imgs[b][300, 300] += 10 * s
        imgs[b][350, 350] -= 10 * s  # a negative "peak": CHI-MEAN makes it a source, the mean S/N does not
    det = snr_mean(imgs, wts)
    assert det[300, 300] == pytest.approx(30 / math.sqrt(3), abs=3.0)
    assert det[350, 350] < -10
    assert chi_mean(imgs, wts)[350, 350] > 10
    assert not snr_mean([imgs[0]], [np.zeros(shape)]).any()


def test_moffat_aperture_to_total():
    beta, fwhm = 2.5, 4.5
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    yy, xx = np.mgrid[-300:301, -300:301]
    prof = (1 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    inside = prof[xx**2 + yy**2 <= 10.0**2].sum() / prof.sum()
    assert _moffat_to_total(beta, fwhm) == pytest.approx(2.5 * math.log10(inside), abs=2e-3)
    assert _moffat_to_total(beta, fwhm) == pytest.approx(-0.0563, abs=1e-3)  # 5% of the light outside
    assert _moffat_to_total(None, fwhm) == 0.0


def test_overrides_and_inputs():
    tree = _overrides(["coadd.min_stars_per_image=3", "qa.repeatability_mmag=25.5", "coadd.detection_bands=[r, i]"],
                      "v2")
    assert tree == {"pipeline_version": "v2", "coadd": {"min_stars_per_image": 3, "detection_bands": ["r", "i"]},
                    "qa": {"repeatability_mmag": 25.5}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _overrides(["nonsense"], "v1")
    f = InputFile("image", __import__("pathlib").Path("/x"), "0" * 64, 1)
    with pytest.raises(CoaddBadInput, match=r"missing \['weight', 'psf', 'catalog'\]"):
        CoaddInput("00000001_c01", 1, 1, {"image": f})


def test_the_workflow_commands_parse():
    """``cosmodm_ops.workflows.coadd`` builds these argument lists; the CLI must accept them."""
    from cosmodm_ops.cli import build_parser

    p = build_parser()
    a = p.parse_args(["coadd", "run", "--tile", "T", "--band", "r", "--survey", "demo", "--version", "v1",
                      "--out", "/w/coadd/T/r"])
    assert (a.tile, a.band, a.survey, a.version, a.out) == ("T", "r", "demo", "v1", Path("/w/coadd/T/r"))
    b = p.parse_args(["coadd", "calibrate", "--tile", "T", "--bands", "g,r,i,z", "--coadds", "/w/coadd/T",
                      "--survey", "demo", "--version", "v1", "--out", "/w/coadd/T/calibrated", "--refcat", "/r.fits"])
    assert b.coadds == ["/w/coadd/T"] and b.bands == "g,r,i,z" and b.refcat == "/r.fits"


def test_scratch_moves_off_a_full_ramdisk(tmp_path, caplog):
    from cosmodm_ops.common import scratch_root as _scratch_root

    assert _scratch_root(tmp_path / "ram" / "x", 1, 0.99, tmp_path / "out") == tmp_path / "ram" / "x"
    with caplog.at_level("WARNING"):
        alt = _scratch_root(tmp_path / "ram", 10**18, 0.5, tmp_path / "out")
    assert alt == tmp_path / "out" / ".scratch" and "would fill" in caplog.text


def test_truth_is_scored_only_where_every_detection_band_has_data():
    from cosmodm_ops.coadd.truth import covered as _covered

    a = np.array([[1.0, 1.0, 0.9, 1e-4, 0.0]])
    b = np.array([[2.0, 0.1, 2.0, 2.0, 2.0]])
    assert _covered([a]).tolist() == [[True, True, True, False, False]]  # SWarp's tiny weights beyond the edges
    assert _covered([a, b]).tolist() == [[True, False, True, False, False]]
