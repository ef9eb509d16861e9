"""The coadd QA gate's PSF-uniformity check (threshold from config ``qa.max_psf_fwhm_spread``)."""

from __future__ import annotations

import math

import pytest

from cosmodm_ops.config import load_config
from cosmodm_ops.qa.checks import psf_fwhm_spread, psf_uniformity_check

pytestmark = pytest.mark.unit


def test_threshold_comes_from_config_and_is_two_percent():
    cfg = load_config("demo", site="local")
    assert cfg.qa.max_psf_fwhm_spread == 0.02
    tighter = load_config("demo", site="local", overrides={"qa": {"max_psf_fwhm_spread": 0.005}})
    assert psf_uniformity_check([1.0, 1.01], tighter.qa)["verdict"] == "fail"


def test_spread_is_max_minus_min_over_median_and_gates_at_the_threshold():
    qa = load_config("demo", site="local").qa
    assert psf_fwhm_spread([1.20, 1.21, 1.22]) == pytest.approx(0.02 / 1.21)
    ok = psf_uniformity_check([1.20, 1.21, 1.22, math.nan], qa)  # 1.65%: NaN samples are ignored
    assert ok["verdict"] == "pass" and ok["threshold"] == 0.02 and ok["value"] == pytest.approx(0.02 / 1.21)
    bad = psf_uniformity_check([1.18, 1.21, 1.22], qa)  # 3.3%
    assert bad["name"] == "psf_fwhm_spread_after" and bad["verdict"] == "fail"
    none = psf_uniformity_check([math.nan], qa)
    assert none["verdict"] == "skip" and "no PSF samples" in none["reason"]
    assert psf_fwhm_spread([]) is None
