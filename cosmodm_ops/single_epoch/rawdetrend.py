"""The pure detrend of one raw CCD: raw ADU in, detrended electrons, weight and mask out.

:func:`detrend_raw_ccd` takes arrays (:class:`RawCcd`, :class:`RawCalib`) and returns new ones
(:class:`RawDetrendResult`); the raw array is not modified. Usable from a notebook; the file I/O is in
:func:`cosmodm_ops.single_epoch.raw.ingest_and_detrend`.

* image (e-) = ``((raw - overscan) x gain - bias) / flat x starflat x area``, where ``area`` is the
  relative pixel area from the WCS (median 1): after a dome flat the sky is flat, so a point source's flux
  is low by the pixel's relative area; multiplying by it restores point-source photometry.
* weight = 1 / ((sky x D + rn^2) / D^2) with ``D = flat / (starflat x area)`` the divisor applied to the
  raw electrons; 0 on bad, saturated, bleed and edge pixels.
* mask bits: :data:`cosmodm_ops.single_epoch.detrend.MASK_BITS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosmodm_ops.single_epoch.detrend import MASK_BITS, DetrendConfig, detect_cosmic_rays, robust_sky
from cosmodm_ops.single_epoch.rawcamera import CrosstalkTerm, crosstalk_signal
from cosmodm_ops.single_epoch.rawccd import CcdSections, _row_median, detrend_ccd_inplace

__all__ = ["RawCalib", "RawCcd", "RawCcdUnusable", "RawDetrendResult", "detrend_raw_ccd", "raw_pixel_problem",
           "source_adu"]

#: The ADC's largest value: raw pixels there are digitally saturated.
ADC_MAX = 65535
#: A raw CCD with more than this fraction of NaN or saturated pixels has nothing left to measure.
_UNUSABLE_FRACTION = 0.5


class RawCcdUnusable(ValueError):
    """A raw CCD with no signal to process (dead, failed readout, saturated): that CCD fails, the others go on."""


def raw_pixel_problem(raw: np.ndarray) -> str | None:
    """Why a raw CCD (ADU, overscan included) cannot be processed, or None. Pure; the array is not modified.

    Dead or unread CCDs come out constant, failed conversions as NaN, light leaks or a very bright star
    at the ADC maximum; each would otherwise fail later as "too few stars" with the cause hidden.
    """
    finite = np.isfinite(raw)
    if finite.mean() < 1 - _UNUSABLE_FRACTION:
        return (f"{100 * (1 - finite.mean()):.0f}% of the raw pixels are NaN or infinite (failed readout or "
                "conversion): check the raw file's origin")
    values = raw[finite]
    saturated = float((values >= ADC_MAX).mean())
    if saturated > _UNUSABLE_FRACTION:
        return (f"{100 * saturated:.0f}% of the raw pixels are at the ADC maximum {ADC_MAX} ADU: saturated CCD "
                "(light leak, a very bright source or a shutter failure)")
    if values.min() == values.max():
        return f"every raw pixel equals {values.min():g} ADU (dead CCD or failed readout): check the camera log"
    return None

#: Weight is zero on pixels with these bits.
_ZERO_WEIGHT = MASK_BITS["BADPIX"] | MASK_BITS["SATURATED"] | MASK_BITS["BLEED"] | MASK_BITS["EDGE"]


@dataclass(frozen=True)
class RawCcd:
    """One raw CCD and its electronics, sides in trimmed-frame order (0 = left amplifier).

    Attributes
    ----------
    raw : ndarray, shape ``sec.raw_shape``
        Raw ADU (BZERO applied), any integer or float dtype. Not modified.
    sec : CcdSections
    gain, readnoise, saturation : (left, right)
        e-/ADU, e-, ADU above overscan.
    xtalk : (left <- right, right <- left)
        Linear crosstalk coefficients within the CCD (mirrored columns).
    xtalk_nl : list of (victim side, CrosstalkTerm)
        Within-CCD terms with a non-linear part above the onset (the linear part is in ``xtalk``).
    external_adu : list of (victim side, ndarray (ny, nx/2))
        Crosstalk from other CCDs, ADU already mapped onto the victim amplifier's trimmed columns.
    """

    raw: np.ndarray
    sec: CcdSections
    gain: tuple[float, float]
    readnoise: tuple[float, float]
    saturation: tuple[float, float]
    xtalk: tuple[float, float] = (0.0, 0.0)
    xtalk_nl: list[tuple[int, CrosstalkTerm]] = field(default_factory=list)
    external_adu: list[tuple[int, np.ndarray]] = field(default_factory=list)


@dataclass(frozen=True)
class RawCalib:
    """Calibration arrays of one CCD in the trimmed frame: bias (e-, after overscan), dome flat, star flat
    (optional), bad-pixel map (nonzero = bad, optional), relative pixel area (optional)."""

    bias: np.ndarray
    flat: np.ndarray
    starflat: np.ndarray | None = None
    bpm: np.ndarray | None = None
    pixel_area: np.ndarray | None = None


@dataclass
class RawDetrendResult:
    """Detrended CCD: image (float32 e-), weight (float32 e-^-2), mask (int32 bits), sky and its noise (e-),
    read noise (mean of the amplifiers, e-), saturation level of the detrended image (e-), history lines."""

    image: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    sky: float
    sky_noise: float
    readnoise: float
    saturate: float
    history: list[str] = field(default_factory=list)


def _overscan_levels(raw: np.ndarray, sec: CcdSections) -> tuple[np.ndarray, np.ndarray]:
    return _row_median(raw[sec.rows, sec.overscan[0]]), _row_median(raw[sec.rows, sec.overscan[1]])


def source_adu(raw: np.ndarray, sec: CcdSections, side: int, rows: slice | None = None) -> np.ndarray:
    """ADU above the row-by-row overscan of one amplifier (trimmed frame columns), float32, shape (ny, nx/2)."""
    level = _row_median(raw[sec.rows, sec.overscan[side]])
    data = raw[sec.rows, sec.data[side]].astype(np.float32)
    data -= level[:, None]
    return data if rows is None else data[rows]



def detrend_raw_ccd(ccd: RawCcd, calib: RawCalib, config: DetrendConfig | None = None) -> RawDetrendResult:
    """Raw ADU -> detrended electrons, weight and mask for one CCD (pure: new arrays, inputs untouched).

    Steps: crosstalk within the CCD (linear, dense on bright rows: :func:`detrend_ccd_inplace`),
    its non-linear part, crosstalk from other CCDs, row-by-row overscan, trim, gain, bias, dome flat,
    star flat, pixel area; mask (bad pixels, saturation + bleed along columns, cosmic rays, edges);
    inverse-variance weight.
    """
    cfg = config or DetrendConfig()
    ny, nx = calib.bias.shape
    history: list[str] = []
    divisor, bad_flat = _divisor(calib, cfg, history)
    image = _electrons(ccd, calib, divisor, history)
    mask = _raw_mask(ccd, calib, bad_flat, cfg, history)
    sky, noise = robust_sky(image[::2, ::2], mask[::2, ::2])  # a quarter of the pixels is plenty
    bad = (mask & MASK_BITS["BADPIX"]) != 0
    if bad.any():
        # bad columns hold junk: interpolate along rows (weight stays 0) so that neither SExtractor's background
        # nor the cosmic-ray finder sees an edge where a star crosses a bad column
        _interpolate_rows(image, bad, fill=np.float32(sky))
    if cfg.find_cosmic_rays:
        _mask_cosmic_rays(image, mask, sky, noise, cfg, history)
    weight = _weight(ccd, divisor, sky, mask)
    sat_e = _saturation_e(ccd, divisor, calib.bias, bad)
    history.append(f"cosmodm detrend: sky {sky:.1f} e-, noise {noise:.2f} e-, {ny}x{nx}")
    return RawDetrendResult(image=image, weight=weight, mask=mask, sky=sky, sky_noise=noise,
                            readnoise=float(np.mean(ccd.readnoise)), saturate=float(sat_e), history=history)


def _divisor(calib: RawCalib, cfg: DetrendConfig, history: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``D = flat / (starflat x area)``, the divisor of the raw electrons (1 where the flat is bad), and the
    bad-flat pixels (flat <= 0.05 or NaN)."""
    # in place: a DECam CCD is 32 MiB per array
    divisor = np.array(calib.flat, dtype=np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        bad_flat = ~(divisor > 0.05)  # also NaN
    if calib.starflat is not None:
        np.divide(divisor, calib.starflat, out=divisor, where=calib.starflat > 0.05)
        history.append("cosmodm detrend: multiplied by the star flat (zeropoint flatness)")
    if calib.pixel_area is not None and cfg.correct_pixel_area:
        divisor /= calib.pixel_area
        history.append("cosmodm detrend: multiplied by the relative pixel area from the WCS")
    divisor[bad_flat] = 1.0
    return divisor, bad_flat


def _electrons(ccd: RawCcd, calib: RawCalib, divisor: np.ndarray, history: list[str]) -> np.ndarray:
    """The detrended image (float32 e-, shape of the bias): crosstalk (within the CCD, its non-linear part,
    from other CCDs), overscan, trim, gain, bias, divisor."""
    sec = ccd.sec
    ny, nx = calib.bias.shape
    half = nx // 2
    # gain / D and bias / D (what precombine_calibration computes, without its temporaries)
    gof = np.empty((ny, nx), np.float32)
    gof[:, :half] = ccd.gain[0]
    gof[:, half:] = ccd.gain[1]
    gof /= divisor
    bof = np.array(calib.bias, dtype=np.float32, copy=True)
    bof /= divisor
    image = np.empty((ny, nx), np.float32)
    detrend_ccd_inplace(ccd.raw, image, sec, gof, bof, xtalk=ccd.xtalk)
    history.append(f"cosmodm detrend: crosstalk within the CCD (left<-right {ccd.xtalk[0]:.3g}, "
                   f"right<-left {ccd.xtalk[1]:.3g}), overscan per row, trim, gain "
                   f"{ccd.gain[0]:.4f}/{ccd.gain[1]:.4f}, bias, dome flat")
    del bof
    cols = (slice(0, half), slice(half, nx))
    # non-linear crosstalk (DECam: sources above ~40000 ADU): the part beyond the linear term
    for vside, term in ccd.xtalk_nl:
        sside = 1 - vside
        level = _row_median(ccd.raw[sec.rows, sec.overscan[sside]])
        # compare the integer raw with (level + onset) row by row: no float copy of the amplifier
        yy, xx = np.nonzero(ccd.raw[sec.rows, sec.data[sside]] > (level + np.float32(term.nl_onset))[:, None])
        if yy.size:
            s_hit = ccd.raw[sec.rows, sec.data[sside]][yy, xx].astype(np.float32) - level[yy]
            extra = crosstalk_signal(s_hit, term) - np.float32(term.coeff) * s_hit
            vx = (half - 1 - xx) + cols[vside].start
            image[yy, vx] -= extra * gof[yy, vx]
            history.append(f"cosmodm detrend: non-linear crosstalk from {yy.size} source pixels")
    for vside, adu in ccd.external_adu:
        image[:, cols[vside]] -= adu * gof[:, cols[vside]]
    if ccd.external_adu:
        history.append(f"cosmodm detrend: crosstalk from {len(ccd.external_adu)} amplifier(s) of other CCDs")
    return image


def _raw_mask(ccd: RawCcd, calib: RawCalib, bad_flat: np.ndarray, cfg: DetrendConfig, history: list[str]
              ) -> np.ndarray:
    """Mask bits (int32) before cosmic rays: bad pixels (map and bad flat), saturation and bleed along
    columns, the edges."""
    sec = ccd.sec
    ny, nx = calib.bias.shape
    half = nx // 2
    cols = (slice(0, half), slice(half, nx))
    mask = np.zeros((ny, nx), np.int32)
    if calib.bpm is not None:
        mask[calib.bpm != 0] |= MASK_BITS["BADPIX"]
    mask[bad_flat] |= MASK_BITS["BADPIX"]
    levels = _overscan_levels(ccd.raw, sec)
    saturated = np.zeros((ny, nx), bool)
    for side in (0, 1):
        tol = 5.0 * ccd.readnoise[side] / ccd.gain[side]
        thresh = levels[side] + (ccd.saturation[side] - tol)
        saturated[:, cols[side]] = ccd.raw[sec.rows, sec.data[side]] >= thresh[:, None]
    if saturated.any():
        mask[saturated] |= MASK_BITS["SATURATED"]
        sat_cols = np.nonzero(saturated.any(axis=0))[0]
        sub = saturated[:, sat_cols]
        from scipy import ndimage

        grown = ndimage.binary_dilation(sub, structure=np.ones((2 * cfg.bleed_grow_rows + 1, 1), bool))
        bleed = np.zeros_like(saturated)
        bleed[:, sat_cols] = grown & ~sub
        mask[bleed] |= MASK_BITS["BLEED"]
        history.append(f"cosmodm detrend: {int(saturated.sum())} saturated pixels, {int(bleed.sum())} bleed")
    e = cfg.edge_pixels
    if e > 0:
        for sl in ((slice(0, e), slice(None)), (slice(ny - e, ny), slice(None)),
                   (slice(None), slice(0, e)), (slice(None), slice(nx - e, nx))):
            mask[sl] |= MASK_BITS["EDGE"]
    return mask


def _mask_cosmic_rays(image: np.ndarray, mask: np.ndarray, sky: float, noise: float, cfg: DetrendConfig,
                      history: list[str]) -> None:
    """Set the CR bit in ``mask`` (in place) where :func:`detect_cosmic_rays` finds hits."""
    cr = detect_cosmic_rays(image, sky, noise, nsigma=cfg.cr_nsigma, sharpness=cfg.cr_sharpness)
    # within 2 pixels of saturated or bleed pixels (the steep flanks of a saturated star) the 3x3 median
    # is not a fair reference: no hits there (bad columns are interpolated, so hits next to them count)
    no_cr = (mask & (MASK_BITS["SATURATED"] | MASK_BITS["BLEED"])) != 0
    cr &= (mask & MASK_BITS["BADPIX"]) == 0
    yy, xx = np.nonzero(cr)
    if yy.size and no_cr.any():
        pad = np.pad(no_cr, 2)
        near = np.zeros(yy.size, bool)
        for dy in range(5):
            for dx in range(5):
                near |= pad[yy + dy, xx + dx]
        cr[yy[near], xx[near]] = False
    mask[cr] |= MASK_BITS["CR"]
    history.append(f"cosmodm detrend: {int(cr.sum())} cosmic-ray pixels masked")


def _weight(ccd: RawCcd, divisor: np.ndarray, sky: float, mask: np.ndarray) -> np.ndarray:
    """Inverse variance (float32 e-^-2): var = (sky electrons in the raw frame + rn^2) / D^2; 0 where masked."""
    nx = divisor.shape[1]
    half = nx // 2
    rn2 = np.empty((1, nx), np.float32)
    rn2[0, :half] = ccd.readnoise[0] ** 2
    rn2[0, half:] = ccd.readnoise[1] ** 2
    weight = divisor * np.float32(max(sky, 0.0))
    weight += rn2
    weight /= divisor
    weight /= divisor
    np.maximum(weight, np.float32(1e-12), out=weight)
    np.reciprocal(weight, out=weight)
    weight[(mask & _ZERO_WEIGHT) != 0] = 0.0
    return weight


def _saturation_e(ccd: RawCcd, divisor: np.ndarray, bias: np.ndarray, bad: np.ndarray) -> float:
    """Saturation of the detrended image (e-): the lowest level at which a pixel can saturate.

    99.9% of pixels, on a 1-in-16 subsample: these are smooth maps, and a full percentile costs 0.2 s on a
    DECam CCD.
    """
    half = divisor.shape[1] // 2
    good = ~bad[::4, ::4]
    sub_d, sub_b = divisor[::4, ::4], bias[::4, ::4]
    sub_cols = (slice(0, half // 4 + (half % 4 > 0)), slice(half // 4 + (half % 4 > 0), None))
    return min(ccd.saturation[i] * ccd.gain[i] / float(np.percentile(sub_d[:, sub_cols[i]][good[:, sub_cols[i]]],
                                                                         99.9)) for i in (0, 1)) \
        - float(np.percentile(sub_b, 99.9))


def _interpolate_rows(image: np.ndarray, bad: np.ndarray, fill: np.float32) -> None:
    """Replace ``image[bad]`` in place by linear interpolation between the nearest good pixels of the same row
    (the nearest good pixel at a row end; ``fill`` in a row with no good pixel).

    Works run by run of columns holding bad pixels: a maximal run is bounded by all-good columns, so its window
    (one column more on each side) holds every pixel the interpolation needs, and memory stays small.
    """
    cols = np.nonzero(bad.any(axis=0))[0]
    if cols.size == 0:
        return
    breaks = np.nonzero(np.diff(cols) > 1)[0]
    starts = np.r_[cols[0], cols[breaks + 1]]
    stops = np.r_[cols[breaks], cols[-1]] + 1
    for c0_run, c1_run in zip(starts, stops, strict=True):
        c0, c1 = max(int(c0_run) - 1, 0), min(int(c1_run) + 1, image.shape[1])
        sub, sbad = image[:, c0:c1], bad[:, c0:c1]
        n = sub.shape[1]
        ar = np.arange(n, dtype=np.int32)[None, :]
        left = np.maximum.accumulate(np.where(sbad, -1, ar), axis=1)
        right = np.minimum.accumulate(np.where(sbad, n, ar)[:, ::-1], axis=1)[:, ::-1]
        yy, xx = np.nonzero(sbad)
        lx, rx = left[yy, xx], right[yy, xx]
        has_l, has_r = lx >= 0, rx < n
        lv = np.where(has_l, sub[yy, np.clip(lx, 0, n - 1)], 0.0)
        rv = np.where(has_r, sub[yy, np.clip(rx, 0, n - 1)], 0.0)
        t = np.where(has_l & has_r, (xx - lx) / np.maximum(rx - lx, 1), 0.0)
        val = np.where(has_l & has_r, lv + t * (rv - lv), np.where(has_l, lv, np.where(has_r, rv, fill)))
        sub[yy, xx] = val.astype(np.float32)

