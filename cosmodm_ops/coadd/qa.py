"""QA of the coadd steps: the checks, the summary and the image table of ``qa.json`` (pure: values in, dicts out).

A check is :func:`cosmodm_ops.qa.checks.check`'s ``{"name", "value", "threshold", "verdict"}``;
:func:`check` adds informational ones (``threshold=None``: verdict ``info``, or ``skip``
without a value). The band functions build what :func:`cosmodm_ops.coadd.band.run_band`
records; the tile functions what :func:`cosmodm_ops.coadd.tile.calibrate_tile` records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosmodm_ops.coadd.abscal import AbsoluteCalibration
from cosmodm_ops.coadd.homogenize import HomogenizedInputs
from cosmodm_ops.coadd.inputs import CoaddInput
from cosmodm_ops.coadd.psf import ImagePSF
from cosmodm_ops.coadd.zeropoints import RelativeZeropoints
from cosmodm_ops.config.schema import CoaddConfig, QAConfig

__all__ = [
    "band_checks",
    "band_images",
    "band_summary",
    "check",
    "locus_record",
    "tile_checks",
    "tile_summary",
    "verdict",
]


def check(name: str, value: float | None, threshold: float | None, *, upper: bool = True,
          reason: str | None = None) -> dict[str, Any]:
    """A QA check; ``threshold=None`` makes it informational."""
    if threshold is not None:
        from cosmodm_ops.qa.checks import check as threshold_check

        return threshold_check(name, value, threshold, upper=upper, reason=reason)
    ok = value is not None and not (isinstance(value, float) and not math.isfinite(value))
    out: dict[str, Any] = {"name": name, "value": float(value) if ok else None, "threshold": None,
                           "verdict": "info" if ok else "skip"}
    if reason:
        out["reason"] = reason
    return out


def verdict(checks: Sequence[Mapping[str, Any]]) -> str:
    """``fail`` when any check failed, else ``pass``."""
    return "fail" if any(c["verdict"] == "fail" for c in checks) else "pass"


def _fwhm_samples(homog: HomogenizedInputs, key: str) -> np.ndarray:
    return np.array([s[key] for s in homog.samples]) if homog.samples else np.array([np.nan])


def band_checks(zps: RelativeZeropoints, homog: HomogenizedInputs, *, target_arcsec: float, coverage: float,
                qa: QAConfig) -> list[dict[str, Any]]:
    """The checks of one band's coadd: repeatability, images used and removed, PSF uniformity, coverage."""
    from cosmodm_ops.qa.checks import psf_fwhm_spread, psf_uniformity_check

    rep = zps.repeatability
    checks = [
        check("repeatability_mmag", rep.bright_mmag if rep is not None else None, qa.repeatability_mmag,
              reason=zps.note if rep is None else (None if rep.n_bright_pairs else "no bright star pairs")),
        check("n_images_used", float(len(zps.used)), 1.0, upper=False),
        check("n_images_removed", float(len(zps.removed)), None),
        check("n_images_not_homogenized", float(len(homog.not_homogenized)), None),
        check("psf_fwhm_target_arcsec", target_arcsec, None),
        check("psf_fwhm_spread_before", psf_fwhm_spread(_fwhm_samples(homog, "before")), None),
        psf_uniformity_check(_fwhm_samples(homog, "after"), qa),
        check("coverage_fraction", coverage, None),
    ]
    if rep is not None and not zps.passed and rep.n_bright_pairs:
        checks[0]["reason"] = (f"still above the threshold after removing {len(zps.removed)} image(s) "
                               f"(limit {zps.settings.max_removed_fraction:.0%} of the inputs)")
    return checks


def band_summary(tile: str, band: str, *, n_inputs: int, n_skipped: int, zps: RelativeZeropoints,
                 psfs: Mapping[int, ImagePSF], homog: HomogenizedInputs, target_arcsec: float, coverage: float,
                 co: CoaddConfig, checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of one band's ``qa.json`` (and of its report), with the verdict of ``checks``."""
    from cosmodm_ops.qa.checks import psf_fwhm_spread

    rep = zps.repeatability
    fwhm_in = np.array([p.fwhm for p in psfs.values()])
    after = _fwhm_samples(homog, "after")
    summary = {
        "tile": tile, "band": band, "n_inputs": n_inputs, "n_used": len(zps.used), "n_removed": len(zps.removed),
        "n_skipped": n_skipped, "n_not_homogenized": len(homog.not_homogenized),
        "repeatability_mmag": rep.bright_mmag if rep is not None else None,
        "repeatability_sys_mmag": rep.bright_sys_mmag if rep is not None else None,
        "n_bright_pairs": rep.n_bright_pairs if rep is not None else 0,
        "magzero": co.magzero, "psf_fwhm_target_arcsec": target_arcsec, "moffat_beta": co.moffat_beta,
        "psf_fwhm_in_median_arcsec": float(np.median(fwhm_in)), "psf_fwhm_in_min_arcsec": float(fwhm_in.min()),
        "psf_fwhm_in_max_arcsec": float(fwhm_in.max()),
        "psf_fwhm_after_median_arcsec": float(np.nanmedian(after)) if homog.samples else None,
        "psf_fwhm_spread_before": psf_fwhm_spread(_fwhm_samples(homog, "before")),
        "psf_fwhm_spread_after": psf_fwhm_spread(after),
        "coverage_fraction": coverage, "photcal_note": zps.note,
    }
    summary["verdict"] = verdict(checks)
    return summary


def band_images(inputs: Sequence[CoaddInput], n_stars: Sequence[int], zps: RelativeZeropoints, fscale: np.ndarray,
                psfs: Mapping[int, ImagePSF], homog: HomogenizedInputs) -> list[dict[str, Any]]:
    """One row per input image: zeropoint, flux scale, FWHM, sky, whether used and why removed."""
    used = set(zps.used)
    removed_names = {r["name"]: r["reason"] for r in zps.removed}
    images = []
    for i, inp in enumerate(inputs):
        psf = psfs.get(i)
        sky, noise = homog.sky.get(i, (None, None))
        images.append({"name": inp.name, "expnum": inp.expnum, "ccd": inp.ccd, "n_stars": n_stars[i],
                       "zeropoint": float(zps.zeropoints[i]), "zeropoint_err": float(zps.errors[i]),
                       "flxscale": float(fscale[i]), "used": i in used, "removed": removed_names.get(inp.name),
                       "fwhm_arcsec": psf.fwhm if psf is not None else None, "sky": sky, "sky_noise": noise,
                       "image": str(inp.files["image"].path)})
    return images


def tile_checks(cal: AbsoluteCalibration, bands: Sequence[str], zps: Mapping[str, float], sizes: Mapping[str, int],
                comp: Mapping[str, Any] | None, comp_notes: Mapping[str, str], *,
                qa: QAConfig) -> list[dict[str, Any]]:
    """The checks of a tile's calibration: locus scatter and stars, zeropoints, objects, completeness.

    ``comp`` is None without a truth catalogue (no completeness checks), else band -> CompletenessResult.
    """
    checks: list[dict[str, Any]] = []
    loc = cal.result
    if loc is not None:
        for plane, value in loc.scatter.items():
            checks.append(check(f"locus_scatter_{plane.replace(' vs ', '_').replace('-', '')}", value,
                                qa.max_locus_scatter_mag))
        checks.append(check("n_locus_stars", float(loc.n_used), 20.0, upper=False))
        checks.append(check("locus_absolute", float(loc.absolute), None, reason=cal.reason))
    else:
        checks.append(check("n_locus_stars", None, 20.0, upper=False, reason=cal.reason))
    for b in bands:
        checks.append(check(f"zeropoint_{b}", zps[b], None))
        checks.append(check(f"n_objects_{b}", float(sizes[b]), None))
    for b in bands if comp is not None else ():
        res = comp.get(b)
        for level in ("mag90", "mag50"):
            checks.append(check(f"completeness_{level}_{b}", getattr(res, level, None), None,
                                reason=comp_notes.get(b)))
    return checks


def measured_fraction(cats: Mapping[str, Any], det_bands: Sequence[str], snr_min: float = 5.0) -> dict[str, Any]:
    """How many detections have a MAG_AUTO (< 90) in every band, of all and of those above the detection limit.

    "Above the detection limit": the detection's S/N in the detection image, estimated from
    the catalogs as ``sum_b FLUX_AUTO_b / FLUXERR_AUTO_b / sqrt(n)`` over the detection bands
    (the mean S/N the detection image adds), is at least ``snr_min``.
    """
    first = cats[next(iter(cats))]
    measured = np.ones(len(first), bool)
    for cat in cats.values():
        measured &= np.asarray(cat["MAG_AUTO"], float) < 90
    dets = [b for b in det_bands if b in cats] or list(cats)
    snr = sum(np.asarray(cats[b]["FLUX_AUTO"], float) / np.maximum(np.asarray(cats[b]["FLUXERR_AUTO"], float),
                                                                   1e-30) for b in dets) / np.sqrt(len(dets))
    above = snr >= snr_min
    n, n_above = len(measured), int(above.sum())
    return {"n_detections": n, "n_measured_all_bands": int(measured.sum()),
            "fraction_measured": float(measured.mean()) if n else None, "detection_snr_min": snr_min,
            "n_above_limit": n_above, "n_above_limit_measured": int((measured & above).sum()),
            "fraction_measured_above_limit": float(measured[above].mean()) if n_above else None}


def tile_summary(tile: str, bands: Sequence[str], det_bands: Sequence[str], cal: AbsoluteCalibration, *,
                 zps: Mapping[str, float], apcorr: Mapping[str, float], sizes: Mapping[str, int],
                 comp: Mapping[str, Any], magzero: float, checks: Sequence[Mapping[str, Any]],
                 measured: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a tile's ``qa.json`` (and of its report), with the verdict of ``checks``."""
    loc = cal.result
    summary: dict[str, Any] = {
        "tile": tile, "bands": ",".join(bands), "detection_bands": ",".join(det_bands),
        "n_objects": sizes[bands[0]], "magzero": magzero, "locus_reason": cal.reason,
        "locus_absolute": loc.absolute if loc is not None else False,
        "n_locus_stars": loc.n_used if loc is not None else 0, "n_with_j": cal.n_with_j,
    }
    for b in bands:
        summary[f"zeropoint_{b}"] = zps[b]
        summary[f"dzp_{b}"] = cal.dzp[b]
        summary[f"apcorr_{b}"] = apcorr[b]
        if loc is not None and b in loc.errors:
            summary[f"dzp_err_{b}"] = loc.errors[b]
    if loc is not None:
        summary.update({f"locus_scatter {k}": v for k, v in loc.scatter.items()})
    for b, res in comp.items():
        summary[f"completeness_mag90_{b}"] = res.mag90
        summary[f"completeness_mag50_{b}"] = res.mag50
    if measured is not None:
        summary["fraction_measured"] = measured["fraction_measured"]
        summary["fraction_measured_above_limit"] = measured["fraction_measured_above_limit"]
    summary["verdict"] = verdict(checks)
    return summary


def locus_record(cal: AbsoluteCalibration) -> dict[str, Any] | None:
    """The ``locus`` block of a tile's ``qa.json`` (None without a fit)."""
    loc = cal.result
    if loc is None:
        return None
    return {"zeropoints": loc.zeropoints, "errors": loc.errors, "colour_shifts": loc.colour_shifts,
            "scatter": loc.scatter, "absolute": loc.absolute, "n_stars": loc.n_stars, "n_used": loc.n_used,
            "n_with_j": loc.n_with_j, "converged": loc.converged}
