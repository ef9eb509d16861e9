"""Stage ``locus``: the absolute calibration of a tile's bands by stellar-locus regression with a 2MASS J anchor.

Stars are objects point-like (``|SPREAD_MODEL|`` and S/N cuts) in the reference band (the
first detection band, else r) and good in g, r, i and z; their MAG_PSF plus each band's
total correction (:func:`cosmodm_ops.coadd.catalogs.total_correction`) and, when a reference
catalog is given, J of the nearest reference star go to
:func:`cosmodm_ops.coadd.locus.fit_locus`. The band's zeropoint is then
``coadd.magzero + dzp``. Without g, r, i and z (or with too few stars) there is no fit:
``dzp`` stays 0 and ``reason`` says why.

:func:`run` is pure (catalogs and the reference stars in memory); :func:`calibrate` reads the
reference catalog (:func:`read_refcat_j`) when the fit needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmodm_ops.coadd.inputs import CoaddBadInput

__all__ = ["GRIZ", "AbsoluteCalibration", "calibrate", "locus_stars", "read_refcat_j", "run"]

log = logging.getLogger(__name__)

#: The bands the stellar-locus fit needs.
GRIZ = ("g", "r", "i", "z")


@dataclass
class AbsoluteCalibration:
    """Outcome of the locus stage.

    Attributes
    ----------
    dzp : dict str -> float
        Correction per band (mag), added to every MAG_*; 0 without a fit.
    result : LocusResult or None
        The fit (None when there was none).
    reason : str or None
        Why there is no fit, or why it is relative to r only.
    n_with_j : int
        Stars with a reference J magnitude.
    """

    dzp: dict[str, float]
    result: Any = None
    reason: str | None = None
    n_with_j: int = 0

    @property
    def absolute(self) -> bool:
        """The zeropoints are absolute (a fit anchored on J)."""
        return self.result is not None and self.result.absolute


def read_refcat_j(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ra, dec, mag_J) of a photometric reference catalog, or None without a J column."""
    import fitsio

    try:
        data = fitsio.read(str(path), ext=1)
    except (OSError, ValueError) as err:
        msg = f"{path} HDU 1: cannot read the photometric reference catalog: {err}"
        raise CoaddBadInput(msg) from err
    names = {n.lower(): n for n in data.dtype.names}
    if "ra" not in names or "dec" not in names:
        msg = f"{path} HDU 1: columns 'ra' and 'dec' are needed (have {list(names)})"
        raise CoaddBadInput(msg)
    jcol = names.get("mag_j") or names.get("j") or names.get("jmag")
    if jcol is None:
        return None
    j = np.asarray(data[jcol], float)
    j[~np.isfinite(j) | (j > 90) | (j <= 0)] = np.nan
    return np.asarray(data[names["ra"]], float), np.asarray(data[names["dec"]], float), j


def locus_stars(cats: Mapping[str, np.ndarray], ref_band: str, apcorr: Mapping[str, float], *,
                spread_model_max: float, snr_min: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                  np.ndarray, np.ndarray]:
    """The stars of the locus fit: (mags, errs, ra, dec), mags and errs per band of g, r, i, z.

    A star is point-like with S/N >= ``snr_min`` in ``ref_band`` and has MAG_PSF < 90 and
    FLAGS <= 3 in every band; magnitudes are MAG_PSF + ``apcorr``, errors at least 5 mmag.
    """
    ref = cats[ref_band]
    star = (np.abs(ref["SPREAD_MODEL"]) < spread_model_max) & \
        (1.0857 / np.maximum(ref["MAGERR_PSF"], 1e-6) >= snr_min)
    for b in GRIZ:
        star &= (cats[b]["MAG_PSF"] < 90) & (cats[b]["FLAGS"] <= 3)
    mags = {b: cats[b]["MAG_PSF"][star].astype(float) + apcorr[b] for b in GRIZ}
    errs = {b: np.maximum(cats[b]["MAGERR_PSF"][star].astype(float), 0.005) for b in GRIZ}
    return mags, errs, ref["ALPHAWIN_J2000"][star].astype(float), ref["DELTAWIN_J2000"][star].astype(float)


def run(cats: Mapping[str, np.ndarray], det_bands: Sequence[str], apcorr: Mapping[str, float], *,
        spread_model_max: float, snr_min: float, match_radius_arcsec: float,
        ref_j: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        ref_note: str | None = None) -> AbsoluteCalibration:
    """The locus fit of the tile's catalogs (pure).

    Parameters
    ----------
    cats : dict band -> ndarray
        The dual-image catalogs (SExtractor columns).
    det_bands : sequence of str
        Detection bands; the first (else r) selects the stars.
    apcorr : dict band -> float
        MAG_PSF -> total corrections (mag).
    ref_j : (ra, dec, mag_J) or None
        The reference stars (deg, deg, mag); None: no J anchor.
    ref_note : str or None
        Why there is no J anchor although a reference catalog was given.
    """
    from cosmodm_ops.coadd.locus import LocusError, fit_locus, match_reference

    out = AbsoluteCalibration(dzp=dict.fromkeys(cats, 0.0), reason=ref_note)
    ref_band = det_bands[0] if det_bands[0] in cats else "r"
    mags, errs, ra, dec = locus_stars(cats, ref_band, apcorr, spread_model_max=spread_model_max, snr_min=snr_min)
    if ref_j is not None:
        mags["J"] = match_reference(ra, dec, *ref_j, radius_arcsec=match_radius_arcsec)
        errs["J"] = np.full(len(ra), 0.03)
        out.n_with_j = int(np.isfinite(mags["J"]).sum())
    try:
        out.result = fit_locus(mags, errs, anchor="J")
    except LocusError as err:
        out.reason = f"no stellar-locus fit: {err}"
    else:
        out.dzp.update(out.result.zeropoints)
        if not out.result.absolute and out.reason is None:
            out.reason = f"only {out.n_with_j} stars with J: zeropoints relative to r"
    return out


def calibrate(cats: Mapping[str, np.ndarray], det_bands: Sequence[str], apcorr: Mapping[str, float],
              refcat: str | os.PathLike[str] | None, *, spread_model_max: float, snr_min: float,
              match_radius_arcsec: float, label: str) -> AbsoluteCalibration:
    """The locus stage: reads ``refcat`` (J) when g, r, i and z are all there, then :func:`run`."""
    if not all(b in cats for b in GRIZ):
        out = AbsoluteCalibration(dzp=dict.fromkeys(cats, 0.0),
                                  reason=f"stellar-locus fit needs g, r, i and z; have {','.join(cats)}")
    else:
        ref_j, note = None, None
        if refcat is not None:
            ref_j = read_refcat_j(refcat)
            if ref_j is None:
                note = f"{refcat}: no mag_J column: calibration relative to r only"
        out = run(cats, det_bands, apcorr, spread_model_max=spread_model_max, snr_min=snr_min,
                  match_radius_arcsec=match_radius_arcsec, ref_j=ref_j, ref_note=note)
    if out.reason:
        log.warning("%s: %s", label, out.reason)
    return out
