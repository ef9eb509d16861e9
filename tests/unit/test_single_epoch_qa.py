from __future__ import annotations

from cosmodm_ops.config.schema import QAConfig
from cosmodm_ops.qa import checks as Q


def test_check_directions_and_skip():
    assert Q.check("x", 1.0, 2.0)["verdict"] == "pass"
    assert Q.check("x", 3.0, 2.0)["verdict"] == "fail"
    assert Q.check("n", 3, 10, upper=False)["verdict"] == "fail"
    skipped = Q.check("x", None, 2.0, reason="no refs")
    assert skipped["verdict"] == "skip" and skipped["reason"] == "no refs"
    assert Q.check("x", float("nan"), 2.0)["verdict"] == "skip"


def test_exposure_summary_flags_clouds_by_zeropoint_deficit():
    qa = QAConfig()
    ccds = [{"fwhm_arcsec": 1.0, "zeropoint_1s": 25.5, "n_stars": 40, "astrom_rms_mas": 20, "masked_fraction": 0.01},
            {"fwhm_arcsec": 1.2, "zeropoint_1s": 25.6, "n_stars": 30, "astrom_rms_mas": 25, "masked_fraction": 0.02}]
    s = Q.exposure_summary(ccds, nominal_zp_1s=26.0, n_ccds_total=2)
    assert s["fwhm_arcsec"] == 1.1 and s["n_stars"] == 70
    assert abs(s["zeropoint_deficit_mag"] - 0.45) < 1e-9
    verdicts = {c["name"]: c["verdict"] for c in Q.exposure_checks(s, qa)}
    assert verdicts == {"seeing_arcsec": "pass", "astrom_rms_mas": "pass", "n_stars": "pass",
                        "zeropoint_deficit_mag": "fail", "masked_fraction": "pass", "good_ccd_fraction": "pass"}


def test_ccd_checks_use_config_thresholds():
    qa = QAConfig(min_stars_per_ccd=5, max_seeing_arcsec=1.5)
    checks = {c["name"]: c for c in Q.ccd_checks({"n_stars": 6, "fwhm_arcsec": 1.6, "masked_fraction": 0.0}, qa)}
    assert checks["n_stars"]["verdict"] == "pass" and checks["n_stars"]["threshold"] == 5
    assert checks["fwhm_arcsec"]["verdict"] == "fail"
    assert checks["astrom_rms_mas"]["verdict"] == "skip"
