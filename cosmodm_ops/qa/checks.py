"""Single-epoch and coadd QA checks: pure functions from measured values to verdicts (thresholds from config ``qa``).

A check is ``{"name", "value", "threshold", "verdict"}`` with verdict ``pass``, ``fail``
or ``skip`` (a value that could not be measured; ``reason`` says why). Nothing here
reads files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cosmodm_ops.config.schema import QAConfig

__all__ = ["EXPOSURE_INFO", "ccd_checks", "check", "exposure_checks", "exposure_info", "exposure_summary",
           "psf_fwhm_spread", "psf_uniformity_check"]

#: exposure-level medians over the CCDs recorded as informational checks (the survey pages read these, not
#: every CCD's rows: a 62-CCD exposure has 20x the rows of its one summary)
EXPOSURE_INFO = ("zeropoint_1s", "sky_e", "sky_noise_e")


def check(name: str, value: float | None, threshold: float, *, upper: bool = True,
          reason: str | None = None) -> dict[str, Any]:
    """One check: ``value <= threshold`` (``upper``) or ``value >= threshold`` passes; None/NaN skips."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        out: dict[str, Any] = {"name": name, "value": None, "threshold": threshold, "verdict": "skip"}
        if reason:
            out["reason"] = reason
        return out
    ok = value <= threshold if upper else value >= threshold
    out = {"name": name, "value": float(value), "threshold": threshold, "verdict": "pass" if ok else "fail"}
    if reason:
        out["reason"] = reason
    return out


def ccd_checks(values: Mapping[str, Any], qa: QAConfig) -> list[dict[str, Any]]:
    """Checks of one CCD from its measured values.

    ``values`` keys: n_stars, fwhm_arcsec, ellipticity, sky_e, sky_noise_e, astrom_rms_mas,
    astrom_matches, zeropoint_1s, masked_fraction; ``*_reason`` keys explain skipped values.
    Sky, noise, ellipticity and match counts are recorded as informational checks
    (threshold None, verdict 'info').
    """
    out = [
        check("n_stars", values.get("n_stars"), qa.min_stars_per_ccd, upper=False),
        check("fwhm_arcsec", values.get("fwhm_arcsec"), qa.max_seeing_arcsec, reason=values.get("fwhm_reason")),
        check("astrom_rms_mas", values.get("astrom_rms_mas"), qa.max_astrometric_rms_mas,
              reason=values.get("astrom_reason")),
        check("masked_fraction", values.get("masked_fraction"), qa.max_masked_fraction),
    ]
    for name in ("ellipticity", "sky_e", "sky_noise_e", "astrom_matches", "zeropoint_1s", "apcorr_mag"):
        v = values.get(name)
        entry: dict[str, Any] = {"name": name, "value": None if v is None else float(v), "threshold": None,
                                 "verdict": "info" if v is not None else "skip"}
        if values.get(f"{name}_reason"):
            entry["reason"] = values[f"{name}_reason"]
        out.append(entry)
    return out


def _median(vals: Sequence[float]) -> float | None:
    good = sorted(v for v in vals if v is not None and math.isfinite(v))
    if not good:
        return None
    n = len(good)
    return good[n // 2] if n % 2 else 0.5 * (good[n // 2 - 1] + good[n // 2])


def exposure_summary(ccd_values: Sequence[Mapping[str, Any]], *, nominal_zp_1s: float | None,
                     n_ccds_total: int) -> dict[str, Any]:
    """Exposure summary from the CCDs that finished: medians and the zeropoint deficit (mag, >0 = fainter)."""
    zp = _median([v.get("zeropoint_1s") for v in ccd_values])
    return {
        "n_ccds": n_ccds_total,
        "n_ccds_ok": len(ccd_values),
        "fwhm_arcsec": _median([v.get("fwhm_arcsec") for v in ccd_values]),
        "ellipticity": _median([v.get("ellipticity") for v in ccd_values]),
        "astrom_rms_mas": _median([v.get("astrom_rms_mas") for v in ccd_values]),
        "n_stars": int(sum(v.get("n_stars") or 0 for v in ccd_values)),
        "zeropoint_1s": zp,
        "zeropoint_nominal_1s": nominal_zp_1s,
        "zeropoint_deficit_mag": (nominal_zp_1s - zp) if (zp is not None and nominal_zp_1s is not None) else None,
        "masked_fraction": _median([v.get("masked_fraction") for v in ccd_values]),
        "sky_e": _median([v.get("sky_e") for v in ccd_values]),
        "sky_noise_e": _median([v.get("sky_noise_e") for v in ccd_values]),
        "good_ccd_fraction": (len(ccd_values) / n_ccds_total) if n_ccds_total else 0.0,
    }


def exposure_checks(summary: Mapping[str, Any], qa: QAConfig, *, zp_reason: str | None = None,
                    astrom_reason: str | None = None) -> list[dict[str, Any]]:
    """Exposure-level gates: seeing, astrometric RMS, star count, zeropoint deficit (clouds), masked fraction."""
    n_ok = max(int(summary.get("n_ccds_ok") or 0), 1)
    return [
        check("seeing_arcsec", summary.get("fwhm_arcsec"), qa.max_seeing_arcsec),
        check("astrom_rms_mas", summary.get("astrom_rms_mas"), qa.max_astrometric_rms_mas, reason=astrom_reason),
        check("n_stars", summary.get("n_stars"), qa.min_stars_per_ccd * n_ok, upper=False),
        check("zeropoint_deficit_mag", summary.get("zeropoint_deficit_mag"), qa.max_zeropoint_deficit_mag,
              reason=zp_reason),
        check("masked_fraction", summary.get("masked_fraction"), qa.max_masked_fraction),
        check("good_ccd_fraction", summary.get("good_ccd_fraction"), qa.min_good_ccd_fraction, upper=False),
    ]


def exposure_info(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The exposure's median zeropoint, sky and sky noise as informational checks (threshold None, verdict
    ``info``; ``skip`` when no CCD measured it): archived as exposure-level QA rows beside the gates."""
    out = []
    for name in EXPOSURE_INFO:
        v = summary.get(name)
        ok = v is not None and math.isfinite(v)
        out.append({"name": name, "value": float(v) if ok else None, "threshold": None,
                    "verdict": "info" if ok else "skip"})
    return out


def psf_fwhm_spread(fwhm: Sequence[float]) -> float | None:
    """Relative spread ``(max - min) / median`` of PSF FWHM samples (NaN ignored); None without samples."""
    good = [float(v) for v in fwhm if v is not None and math.isfinite(v)]
    med = _median(good)
    if not good or not med:
        return None
    return (max(good) - min(good)) / med


def psf_uniformity_check(fwhm_after: Sequence[float], qa: QAConfig) -> dict[str, Any]:
    """Coadd gate: the homogenized PSF FWHM over the tile varies by at most ``qa.max_psf_fwhm_spread``.

    ``fwhm_after`` are the FWHM (any unit) of the homogenized PSF sampled over every input
    image (the runner takes a 3 x 3 grid per image).
    """
    spread = psf_fwhm_spread(fwhm_after)
    return check("psf_fwhm_spread_after", spread, qa.max_psf_fwhm_spread,
                 reason=None if spread is not None else "no PSF samples on the homogenized images")
