"""The single-epoch RAW path: camera ingest and detrending of one raw CCD.

Two entry points, called by :mod:`cosmodm_ops.single_epoch.runner` and
:mod:`cosmodm_ops.single_epoch.ccd`:

* :func:`raw_exposure_plan` (parent process, before any work): checks that the raw
  exposure is readable, that every CCD of the camera is there with the raw shape of
  the camera layout and the header keys the detrend needs, and that the calibration
  folder has the files of the exposure's band with one HDU per CCD. Anything wrong is
  a :class:`~cosmodm_ops.single_epoch.inputs.BadInputError` naming the file, the HDU
  and the key (exit 65: do not retry).
* :func:`ingest_and_detrend` (worker process, one CCD): reads the CCD's raw HDU, and
  only the amplifier columns of the other CCDs that leak into it (cross-CCD
  crosstalk), its calibration HDUs, and returns the detrended CCD (the same dict as
  the detrended path's reader).

The arithmetic is in the pure function :func:`detrend_raw_ccd` (arrays in, new
arrays out; the raw array is not modified), usable from a notebook.

Conventions (see ``RAW_FORMAT.md`` in the briefs, and :mod:`cosmodm_ops.single_epoch.rawccd`):

* crosstalk: victim += f(source), source in ADU above its overscan; within a CCD the
  source column is mirrored (the two amplifiers read in opposite directions); across
  CCDs it is mirrored when the amplifier names differ. ``f(s) = c s`` up to the
  file's non-linear onset ``s_nl``, and ``p1 s + p2 s^2 + p3 s^3`` above it (DECam's
  coefficient file, read as :mod:`cosmodm_ops.cameras.layout` and the simulator read it;
  decam-mini is linear).
* image (e-) = ``((raw - overscan) x gain - bias) / flat x starflat x area``, where
  ``area`` is the relative pixel area from the WCS (median 1): after a dome flat the sky
  is flat, so a point source's flux is low by the pixel's relative area; multiplying
  by it restores point-source photometry.
* weight = 1 / ((sky x D + rn^2) / D^2) with ``D = flat / (starflat x area)`` the
  divisor applied to the raw electrons; 0 on bad, saturated, bleed and edge pixels.
* mask bits: :data:`cosmodm_ops.single_epoch.detrend.MASK_BITS`.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io import fits as afits

from cosmodm_ops.config import CameraConfig, Config
from cosmodm_ops.fits import clean_header
from cosmodm_ops.single_epoch.detrend import (
    MASK_BITS,
    DetrendConfig,
    detect_cosmic_rays,
    pixel_area_grid,
    relative_pixel_area,
    robust_sky,
)
from cosmodm_ops.single_epoch.inputs import BadInputError, ExposureInfo, exposure_info
from cosmodm_ops.single_epoch.rawccd import (
    CcdSections,
    _row_median,
    ccd_sections,
    detrend_ccd_inplace,
)

__all__ = [
    "CALIB_FILES",
    "RAW_CCD_KEYS",
    "CrosstalkTerm",
    "RawCalib",
    "RawCcd",
    "RawDetrendResult",
    "camera_ccds",
    "crosstalk_signal",
    "crosstalk_terms",
    "detrend_raw_ccd",
    "find_calib_files",
    "ingest_and_detrend",
    "raw_exposure_plan",
    "source_adu",
]

log = logging.getLogger(__name__)

#: Header keys every raw CCD HDU must carry (electronics per amplifier and the trimmed-frame WCS).
RAW_CCD_KEYS = ("CCDNUM", "GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB", "CTYPE1", "CTYPE2",
                "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")

#: Calibration files in the calib folder: role -> (file name pattern, required). ``{band}`` is the exposure's band;
#: a ``.fz`` twin (tile-compressed) is accepted too.
CALIB_FILES: dict[str, tuple[str, bool]] = {
    "bias": ("bias.fits", True),
    "flat": ("flat_{band}.fits", True),
    "starflat": ("starflat_{band}.fits", False),
    "bpm": ("bpm.fits", True),
}

#: Raw keys that describe the raw frame, not the detrended CCD (dropped from the output header).
_RAW_ONLY_KEYS = ("GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB", "DATASEC", "DATASECA",
                  "DATASECB", "BIASSECA", "BIASSECB", "TRIMSEC", "PRESECA", "PRESECB", "POSTSECA", "POSTSECB",
                  "LTV1", "LTV2", "LTM1_1", "LTM2_2", "BZERO", "BSCALE")

#: Weight is zero on pixels with these bits.
_ZERO_WEIGHT = MASK_BITS["BADPIX"] | MASK_BITS["SATURATED"] | MASK_BITS["BLEED"] | MASK_BITS["EDGE"]


# ----------------------------------------------------------------------------------------------------------------
# camera description: CCD list and crosstalk terms


def _focal_plane(camera: CameraConfig) -> Any:
    from cosmodm_ops.cameras.layout import LayoutError, focal_plane

    try:
        return focal_plane(camera)
    except (LayoutError, OSError) as err:
        msg = f"camera {camera.name}: {err}"
        raise BadInputError(msg) from err


def camera_ccds(camera: CameraConfig) -> list[tuple[str, int]]:
    """(EXTNAME, CCDNUM) of every science CCD of the camera, in camera-config order
    (:func:`cosmodm_ops.cameras.layout.focal_plane`: inline ``ccds`` or the ``ccd_table`` file)."""
    return [(c.name, c.ccdnum) for c in _focal_plane(camera).ccds]


@dataclass(frozen=True)
class CrosstalkTerm:
    """victim amplifier (CCDNUM, amp name) picks up :func:`crosstalk_signal` of the source amplifier."""

    victim: tuple[int, str]
    source: tuple[int, str]
    coeff: float
    nl_onset: float = float("inf")
    nl_poly: tuple[float, ...] = ()


def crosstalk_terms(camera: CameraConfig) -> tuple[CrosstalkTerm, ...]:
    """The camera's crosstalk terms (inline ``crosstalk`` plus the ``crosstalk_file``, parsed by
    :mod:`cosmodm_ops.cameras.layout`, the same reader the simulator uses)."""
    out = []
    for t in _focal_plane(camera).crosstalk:
        nl = t.src_nl is not None and bool(t.poly)
        out.append(CrosstalkTerm(victim=(t.victim_ccd, t.victim_amp), source=(t.source_ccd, t.source_amp),
                                 coeff=float(t.coeff), nl_onset=float(t.src_nl) if nl else float("inf"),
                                 nl_poly=tuple(float(p) for p in t.poly) if nl else ()))
    return tuple(out)


def crosstalk_signal(source_adu: np.ndarray, term: CrosstalkTerm) -> np.ndarray:
    """ADU that ``term`` adds to the victim for a source ``source_adu`` (ADU above overscan), float32."""
    s = np.asarray(source_adu, np.float32)
    out = np.float32(term.coeff) * s
    if term.nl_poly and np.isfinite(term.nl_onset):
        hi = s > term.nl_onset
        if hi.any():
            src = s[hi].astype(np.float64)
            nl = sum(p * src ** (k + 1) for k, p in enumerate(term.nl_poly))
            out[hi] = nl.astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the pure detrend


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
    sec = ccd.sec
    ny, nx = calib.bias.shape
    half = nx // 2
    history: list[str] = []
    # D = flat / (starflat x area): the divisor of the raw electrons (in place: a DECam CCD is 32 MiB per array)
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
            hit = yy
            vx = (half - 1 - xx) + cols[vside].start
            image[yy, vx] -= extra * gof[yy, vx]
            history.append(f"cosmodm detrend: non-linear crosstalk from {hit.size} source pixels")
    for vside, adu in ccd.external_adu:
        image[:, cols[vside]] -= adu * gof[:, cols[vside]]
    if ccd.external_adu:
        history.append(f"cosmodm detrend: crosstalk from {len(ccd.external_adu)} amplifier(s) of other CCDs")
    del gof, bof

    # mask
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
    sky, noise = robust_sky(image[::2, ::2], mask[::2, ::2])  # a quarter of the pixels is plenty
    bad = (mask & MASK_BITS["BADPIX"]) != 0
    if bad.any():
        # bad columns hold junk: interpolate along rows (weight stays 0) so that neither SExtractor's background
        # nor the cosmic-ray finder sees an edge where a star crosses a bad column
        _interpolate_rows(image, bad, fill=np.float32(sky))
    if cfg.find_cosmic_rays:
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

    # weight: var = (sky electrons in the raw frame + rn^2) / D^2
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

    # saturation of the detrended image: the lowest level at which a pixel can saturate (99.9% of pixels,
    # on a 1-in-16 subsample: these are smooth maps, and a full percentile costs 0.2 s on a DECam CCD)
    good = ~bad[::4, ::4]
    sub_d, sub_b = divisor[::4, ::4], calib.bias[::4, ::4]
    sub_cols = (slice(0, half // 4 + (half % 4 > 0)), slice(half // 4 + (half % 4 > 0), None))
    sat_e = min(ccd.saturation[i] * ccd.gain[i] / float(np.percentile(sub_d[:, sub_cols[i]][good[:, sub_cols[i]]],
                                                                          99.9)) for i in (0, 1)) \
        - float(np.percentile(sub_b, 99.9))
    history.append(f"cosmodm detrend: sky {sky:.1f} e-, noise {noise:.2f} e-, {ny}x{nx}")
    return RawDetrendResult(image=image, weight=weight, mask=mask, sky=sky, sky_noise=noise,
                            readnoise=float(np.mean(ccd.readnoise)), saturate=float(sat_e), history=history)


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


# ----------------------------------------------------------------------------------------------------------------
# I/O: the plan (validation) and the per-CCD wrapper


def _sections(camera: CameraConfig, extname: str) -> CcdSections:
    flipped = any(extname.startswith(p) for p in camera.flipped_prefixes)
    return ccd_sections(camera.ccd_nx, camera.ccd_ny, camera.prescan, camera.overscan, camera.postscan_rows, flipped)


def find_calib_files(calib: str | os.PathLike[str], band: str) -> dict[str, Path | None]:
    """Paths of the calibration files for ``band`` (None for a missing optional file).

    Raises
    ------
    BadInputError
        The folder or a required file is missing.
    """
    folder = Path(calib)
    if not folder.is_dir():
        msg = f"{folder}: calibration folder not found (give --calib DIR with bias.fits, flat_<band>.fits, bpm.fits)"
        raise BadInputError(msg)
    out: dict[str, Path | None] = {}
    for role, (pattern, required) in CALIB_FILES.items():
        name = pattern.format(band=band)
        found = next((p for p in (folder / name, folder / f"{name}.fz") if p.exists()), None)
        if found is None and required:
            msg = f"{folder / name}: {role} file for band {band!r} not found (HDU -, key -); the raw path needs it"
            raise BadInputError(msg)
        out[role] = found
    return out


def _check_calib(path: Path, role: str, ccds: list[tuple[str, int]], shape: tuple[int, int]) -> None:
    try:
        with fitsio.FITS(str(path)) as f:
            names = {}
            for i, hdu in enumerate(f):
                name = hdu.get_extname()
                if name:
                    names[name.upper()] = i
            for extname, ccdnum in ccds:
                idx = names.get(extname.upper())
                if idx is None:
                    msg = (f"{path} HDU {extname!r}: key 'EXTNAME' = {extname!r} (CCDNUM {ccdnum}) not found: "
                           f"the {role} file has no HDU for this CCD")
                    raise BadInputError(msg)
                dims = tuple(f[idx].get_info().get("dims", ()))
                if dims != shape:
                    msg = (f"{path} HDU {idx} ({extname}): keys 'NAXIS2','NAXIS1' = {dims}, expected the trimmed "
                           f"shape {shape} of the camera")
                    raise BadInputError(msg)
                f[idx][-1:, -1:]
    except (OSError, ValueError) as err:
        msg = f"{path}: cannot read the {role} file (truncated or corrupt?): {err}"
        raise BadInputError(msg) from err


def raw_exposure_plan(raw: str | os.PathLike[str], calib: str | os.PathLike[str] | None, cfg: Config
                      ) -> tuple[list[tuple[int, str]], ExposureInfo, afits.Header, list[tuple[str, str]]]:
    """Validate a raw exposure and its calibration folder; the work plan of the exposure.

    Parameters
    ----------
    raw : path
        Raw exposure (multi-extension FITS, may be tile-compressed ``.fz``).
    calib : path
        Calibration folder (``bias.fits``, ``flat_<band>.fits``, ``bpm.fits``, optional ``starflat_<band>.fits``).
    cfg : Config
        The configuration; ``cfg.camera`` gives the raw layout.

    Returns
    -------
    hdus : list of (hdu index, EXTNAME)
        The camera's science CCDs in file order (other HDUs, e.g. guide CCDs, are left out).
    info : ExposureInfo
    primary : astropy Header
        The primary header.
    calib_inputs : list of (role, path)
        Calibration files for the manifest's inputs.

    Raises
    ------
    BadInputError
        Unreadable or truncated file, unknown or mismatched camera, missing CCD, wrong raw shape,
        missing header key, missing calibration file or HDU. The message names the file, HDU and key.
    """
    path = Path(raw)
    if not path.exists():
        msg = f"{path}: raw exposure not found"
        raise BadInputError(msg)
    if calib is None:
        msg = f"{path}: the raw path needs a calibration folder (--calib DIR)"
        raise BadInputError(msg)
    camera = cfg.camera
    ccds = camera_ccds(camera)
    hdus: list[tuple[int, str]] = []
    try:
        with fitsio.FITS(str(path)) as f:
            primary_hdr = f[0].read_header()
            index = {}
            for i, hdu in enumerate(f):
                name = hdu.get_extname()
                if name and hdu.get_exttype() == "IMAGE_HDU":
                    index[name.upper()] = i
            first = None
            for extname, ccdnum in ccds:
                i = index.get(extname.upper())
                if i is None:
                    msg = (f"{path} HDU {extname!r}: key 'EXTNAME' = {extname!r} (CCDNUM {ccdnum}) not found: "
                           f"the {camera.name} camera needs every CCD")
                    raise BadInputError(msg)
                hdr = f[i].read_header()
                for key in RAW_CCD_KEYS:
                    if key not in hdr:
                        msg = f"{path} HDU {i} ({extname}): header key {key!r} is missing; the raw path needs it"
                        raise BadInputError(msg)
                if int(hdr["CCDNUM"]) != ccdnum:
                    msg = (f"{path} HDU {i} ({extname}): key 'CCDNUM' = {hdr['CCDNUM']}, but camera "
                           f"{camera.name} has CCDNUM {ccdnum} for {extname}")
                    raise BadInputError(msg)
                dims = tuple(f[i].get_info().get("dims", ()))
                expect = _sections(camera, extname).raw_shape
                if dims != expect:
                    msg = (f"{path} HDU {i} ({extname}): keys 'NAXIS2','NAXIS1' = {dims}, expected the raw shape "
                           f"{expect} of camera {camera.name}")
                    raise BadInputError(msg)
                try:
                    f[i][-1:, -1:]  # a truncated file fails here, not in a worker
                except (OSError, ValueError) as err:
                    first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                    msg = f"{path} HDU {i} ({extname}): pixel data truncated or corrupt ({first_line})"
                    raise BadInputError(msg) from err
                if first is None:
                    first = hdr
                hdus.append((i, extname))
    except BadInputError:
        raise
    except (OSError, ValueError) as err:
        msg = f"{path}: cannot read FITS (truncated or corrupt?): {err}"
        raise BadInputError(msg) from err
    hdus.sort()
    primary = _to_astropy(primary_hdr)
    info = exposure_info(primary, path, _to_astropy(first) if first is not None else None)
    if info.camera != camera.name:
        msg = (f"{path} HDU 0: key 'CAMERA'/'INSTRUME' says camera {info.camera!r}, but the configured camera is "
               f"{camera.name!r} (pass --camera {info.camera} or fix the header)")
        raise BadInputError(msg)
    files = find_calib_files(calib, info.band)
    calib_inputs: list[tuple[str, str]] = []
    for role, cpath in files.items():
        if cpath is None:
            log.info("%s: no %s file for band %s: the zeropoint-flatness correction is skipped", calib, role,
                     info.band)
            continue
        _check_calib(cpath, role, ccds, (camera.ccd_ny, camera.ccd_nx))
        calib_inputs.append((role, str(cpath)))
    return hdus, info, primary, calib_inputs


def _to_astropy(hdr: Any) -> afits.Header:
    """fitsio header -> astropy Header (cards kept as they are; unparsable cards are skipped)."""
    out = afits.Header()
    for rec in hdr.records():
        name = rec.get("name")
        if not name or name in ("COMMENT", "HISTORY"):
            continue
        try:
            out[name] = (rec.get("value"), rec.get("comment") or "")
        except (ValueError, KeyError):
            continue
    return out


def _read_calib_hdu(path: str | None, extname: str, dtype: Any) -> np.ndarray | None:
    if path is None:
        return None
    with fitsio.FITS(path) as f:
        data = f[extname].read()
    return data if dtype is None else np.asarray(data, dtype=dtype)


def _external_crosstalk(raw_path: str, camera: CameraConfig, ccdnum: int, sides: tuple[str, str],
                        names: dict[int, str], terms: tuple[CrosstalkTerm, ...]
                        ) -> tuple[list[tuple[int, np.ndarray]], list[str]]:
    """Crosstalk ADU from other CCDs onto this CCD's amplifiers, one array per victim amplifier (reads only
    the source amplifiers' data and overscan columns)."""
    acc: dict[int, np.ndarray] = {}
    used: list[str] = []
    mine = [t for t in terms if t.victim[0] == ccdnum and t.source[0] != ccdnum and t.victim[1] in sides]
    if not mine:
        return [], used
    with fitsio.FITS(raw_path) as f:
        for t in mine:
            src_name = names.get(t.source[0])
            if src_name is None:
                continue  # a source CCD the camera does not have (e.g. a dead one): nothing to correct
            sec = _sections(camera, src_name)
            side = sec.amp_names.index(t.source[1])
            hdu = f[src_name]
            r = sec.rows
            s = hdu[r.start:r.stop, sec.data[side].start:sec.data[side].stop].astype(np.float32)
            s -= _row_median(hdu[r.start:r.stop, sec.overscan[side].start:sec.overscan[side].stop])[:, None]
            if t.victim[1] != t.source[1]:
                s = s[:, ::-1]
            v = sides.index(t.victim[1])
            sig = crosstalk_signal(s, t)
            del s
            if v in acc:
                acc[v] += sig
            else:
                acc[v] = sig
            used.append(f"{t.victim[0]}{t.victim[1]}<-{t.source[0]}{t.source[1]} {t.coeff:.3g}")
    return sorted(acc.items()), used


def ingest_and_detrend(spec: dict[str, Any]) -> dict[str, Any]:
    """Ingest and detrend one raw CCD (the worker side of the raw path).

    Parameters
    ----------
    spec : dict
        From the runner: ``raw`` (staged, decompressed raw file), ``hdu``, ``extname``, ``ccd`` (CCDNUM),
        ``band``, ``camera`` (CameraConfig as a dict), ``calib`` (folder) and optionally ``calib_files``
        (role -> staged path), ``primary_header`` (text).

    Returns
    -------
    dict
        ``image`` (float32 e-), ``weight`` (inverse variance, 0 where masked), ``mask`` (int32 bits), ``header``
        (astropy Header: trimmed-frame WCS, GAIN=1, RDNOISE, SATURATE [e-], CCDNUM, DETPOS, BUNIT, primary keys),
        ``readnoise``, ``saturate``.
    """
    camera = CameraConfig.model_validate(spec["camera"])
    extname, ccdnum, band = spec["extname"], int(spec["ccd"]), spec["band"]
    sec = _sections(camera, extname)
    files: dict[str, Any] = dict(spec.get("calib_files") or {})
    if not files:
        files = {k: (str(v) if v else None) for k, v in find_calib_files(spec["calib"], band).items()}
    with fitsio.FITS(spec["raw"]) as f:
        raw = f[spec["hdu"]].read()
    hdr = afits.getheader(spec["raw"], spec["hdu"])
    sides = sec.amp_names
    gain = tuple(float(hdr[f"GAIN{a}"]) for a in sides)
    rn = tuple(float(hdr[f"RDNOISE{a}"]) for a in sides)
    sat = tuple(float(hdr[f"SATURAT{a}"]) for a in sides)
    terms = crosstalk_terms(camera)
    xt = [0.0, 0.0]
    nl: list[tuple[int, CrosstalkTerm]] = []
    for t in terms:
        if t.victim[0] == ccdnum and t.source[0] == ccdnum and t.victim[1] != t.source[1] and t.victim[1] in sides:
            v = sides.index(t.victim[1])
            xt[v] += t.coeff
            if t.nl_poly:
                nl.append((v, t))
    names = {num: name for name, num in camera_ccds(camera)}
    external, used = _external_crosstalk(spec["raw"], camera, ccdnum, sides, names, terms)

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr)
    shape = (camera.ccd_ny, camera.ccd_nx)
    # the area on a coarse grid first: a TAN WCS over one CCD is uniform to ~1e-5, nothing to correct
    _, _, grid = pixel_area_grid(wcs, shape)
    spread = float(grid.max() - grid.min())
    area: np.ndarray | None = None
    area_note = ""
    if spread < 1e-4:
        area_note = f"cosmodm detrend: pixel area uniform to {spread:.1e}: not applied"
    else:
        area = relative_pixel_area(wcs, shape)
    starflat = _read_calib_hdu(files.get("starflat"), extname, np.float32)
    bpm = _read_calib_hdu(files.get("bpm"), extname, None)
    calib = RawCalib(bias=_read_calib_hdu(files["bias"], extname, np.float32),
                     flat=_read_calib_hdu(files["flat"], extname, np.float32), starflat=starflat,
                     bpm=None if bpm is None else bpm != 0, pixel_area=area)
    del bpm
    res = detrend_raw_ccd(RawCcd(raw=raw, sec=sec, gain=gain, readnoise=rn, saturation=sat, xtalk=(xt[0], xt[1]),
                                 xtalk_nl=nl, external_adu=external), calib)
    del calib, raw, external
    if area_note:
        res.history.insert(1, area_note)

    primary = afits.Header.fromstring(spec.get("primary_header", ""), sep="\n")
    header = clean_header(primary)
    for card in clean_header(hdr).cards:
        if card.keyword in ("HISTORY", "COMMENT") or card.keyword in _RAW_ONLY_KEYS:
            continue
        header[card.keyword] = (card.value, card.comment)
    header["BUNIT"] = ("electrons", "image unit")
    header["GAIN"] = (1.0, "[e-/e-] image is in electrons")
    header["RDNOISE"] = (res.readnoise, "[e-] read noise (mean of the amplifiers)")
    header["SATURATE"] = (res.saturate, "[e-] saturation level of the detrended image")
    header["CCDNUM"] = ccdnum
    header["DETPOS"] = (extname, "CCD name")
    for side, amp in enumerate(sides):
        header[f"ORIGGN{amp}"] = (gain[side], f"[e-/ADU] gain of amplifier {amp} (applied)")
    header["BIASFIL"] = Path(files["bias"]).name
    header["FLATFIL"] = Path(files["flat"]).name
    header["BPMFIL"] = Path(files["bpm"]).name if files.get("bpm") else "none"
    if starflat is None:
        header["STARFIL"] = ("none", "no star flat for this band: not applied")
        log.warning("%s: no starflat_%s file: the zeropoint-flatness correction is not applied (CCD %s)",
                    spec.get("calib"), band, extname)
        res.history.append(f"cosmodm detrend: no star flat for band {band}: zeropoint flatness not corrected")
    else:
        header["STARFIL"] = Path(files["starflat"]).name
    if used:
        res.history.append("cosmodm detrend: cross-CCD crosstalk " + ", ".join(used))
    header["HISTORY"] = f"cosmodm ingest: raw {Path(spec['raw']).name}[{spec['hdu']}] {extname}"
    for line in res.history:
        header["HISTORY"] = line
    return {"image": res.image, "weight": res.weight, "mask": res.mask, "header": header,
            "readnoise": res.readnoise, "saturate": res.saturate}

