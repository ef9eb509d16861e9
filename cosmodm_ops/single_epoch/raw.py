"""The single-epoch RAW path: camera ingest and detrending of one raw CCD.

The raw path in four modules, each with one concern, and this one, its worker-side entry:

* :mod:`~cosmodm_ops.single_epoch.rawplan`: :func:`raw_exposure_plan` (parent process, before any
  work) validates the raw exposure and its calibration folder; anything wrong is a
  :class:`~cosmodm_ops.single_epoch.inputs.BadInputError` naming the file, the HDU and the key
  (exit 65: do not retry).
* :mod:`~cosmodm_ops.single_epoch.rawcalib`: the calibration files (find, check, read one HDU).
* :mod:`~cosmodm_ops.single_epoch.rawcamera`: the camera's CCDs, raw sections and crosstalk terms.
* :mod:`~cosmodm_ops.single_epoch.rawdetrend`: the arithmetic, the pure :func:`detrend_raw_ccd`
  (arrays in, new arrays out; the raw array is not modified), usable from a notebook.
* here, :func:`ingest_and_detrend` (worker process, one CCD): reads the CCD's raw HDU, and only the
  amplifier columns of the other CCDs that leak into it (cross-CCD crosstalk), its calibration HDUs,
  and returns the detrended CCD (the same dict as the detrended path's reader).

The names of those modules stay importable from here.

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
import warnings
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io import fits as afits

from cosmodm_ops.config import CameraConfig
from cosmodm_ops.single_epoch.calibcache import load_calib
from cosmodm_ops.single_epoch.detrend import pixel_area_grid, relative_pixel_area
from cosmodm_ops.single_epoch.inputs import ccd_header
from cosmodm_ops.single_epoch.rawcalib import CALIB_FILES, find_calib_files, read_calib_hdu
from cosmodm_ops.single_epoch.rawcamera import (
    CrosstalkTerm,
    camera_ccds,
    crosstalk_signal,
    crosstalk_terms,
    raw_sections,
)
from cosmodm_ops.single_epoch.rawccd import CcdSections, _row_median
from cosmodm_ops.single_epoch.rawdetrend import (
    RawCalib,
    RawCcd,
    RawCcdUnusable,
    RawDetrendResult,
    detrend_raw_ccd,
    raw_pixel_problem,
    source_adu,
)
from cosmodm_ops.single_epoch.rawplan import RAW_CCD_KEYS, raw_exposure_plan

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

#: The raw sections of a camera's CCD (the name tests and older callers import from here).
_sections = raw_sections

#: Raw keys that describe the raw frame, not the detrended CCD (dropped from the output header).
_RAW_ONLY_KEYS = ("GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB", "DATASEC", "DATASECA",
                  "DATASECB", "BIASSECA", "BIASSECB", "TRIMSEC", "PRESECA", "PRESECB", "POSTSECA", "POSTSECB",
                  "LTV1", "LTV2", "LTM1_1", "LTM2_2", "BZERO", "BSCALE")


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
            sec = raw_sections(camera, src_name)
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
        (role -> staged path), ``calib_cache`` (role -> entry folder of the node's calibration cache: read
        instead of the file), ``calib_names`` (role -> the source file's name, for the header),
        ``primary_header`` (text).

    Returns
    -------
    dict
        ``image`` (float32 e-), ``weight`` (inverse variance, 0 where masked), ``mask`` (int32 bits), ``header``
        (astropy Header: trimmed-frame WCS, GAIN=1, RDNOISE, SATURATE [e-], CCDNUM, DETPOS, BUNIT, primary keys),
        ``readnoise``, ``saturate``.
    """
    camera = CameraConfig.model_validate(spec["camera"])
    extname, ccdnum, band = spec["extname"], int(spec["ccd"]), spec["band"]
    sec = raw_sections(camera, extname)
    files: dict[str, Any] = dict(spec.get("calib_files") or {})
    if not files:
        files = {k: (str(v) if v else None) for k, v in find_calib_files(spec["calib"], band).items()}
    with fitsio.FITS(spec["raw"]) as f:
        raw = f[spec["hdu"]].read()
    problem = raw_pixel_problem(raw)
    if problem:
        raise RawCcdUnusable(f"HDU {spec['hdu']} ({extname}): {problem}")
    hdr = afits.getheader(spec["raw"], spec["hdu"])
    ccd, used = _raw_ccd(spec["raw"], raw, hdr, sec, camera, ccdnum)
    area, area_note = _pixel_area(hdr, (camera.ccd_ny, camera.ccd_nx))
    cached = spec.get("calib_cache") or {}

    def calib_array(role: str, dtype: Any) -> np.ndarray | None:
        # the node's cache: memory-mapped plain arrays; else the (staged) file's HDU, decompressed here
        if role in cached:
            return load_calib(cached[role], extname)
        return read_calib_hdu(files.get(role), extname, dtype)

    starflat = calib_array("starflat", np.float32)
    bpm = calib_array("bpm", None)
    calib = RawCalib(bias=calib_array("bias", np.float32), flat=calib_array("flat", np.float32), starflat=starflat,
                     bpm=None if bpm is None else bpm != 0, pixel_area=area)
    del bpm
    res = detrend_raw_ccd(ccd, calib)
    del calib, raw, ccd
    if area_note:
        res.history.insert(1, area_note)
    header = _detrended_header(spec, hdr, res, ccd_gain=_amp_values(hdr, sec, "GAIN"), sides=sec.amp_names,
                               files=files, has_starflat=starflat is not None, used=used)
    return {"image": res.image, "weight": res.weight, "mask": res.mask, "header": header,
            "readnoise": res.readnoise, "saturate": res.saturate}


def _amp_values(hdr: Any, sec: CcdSections, prefix: str) -> tuple[float, float]:
    """``<prefix><amp>`` of both amplifiers, in trimmed-frame order (left, right)."""
    left, right = (float(hdr[f"{prefix}{a}"]) for a in sec.amp_names)
    return left, right


def _raw_ccd(raw_path: str, raw: np.ndarray, hdr: Any, sec: CcdSections, camera: CameraConfig, ccdnum: int
             ) -> tuple[RawCcd, list[str]]:
    """The raw CCD with its electronics and crosstalk terms (within the CCD; from other CCDs, read from the
    raw file), and the cross-CCD terms used (for the history)."""
    sides = sec.amp_names
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
    external, used = _external_crosstalk(raw_path, camera, ccdnum, sides, names, terms)
    ccd = RawCcd(raw=raw, sec=sec, gain=_amp_values(hdr, sec, "GAIN"), readnoise=_amp_values(hdr, sec, "RDNOISE"),
                 saturation=_amp_values(hdr, sec, "SATURAT"), xtalk=(xt[0], xt[1]), xtalk_nl=nl,
                 external_adu=external)
    return ccd, used


def _pixel_area(hdr: Any, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The relative pixel area from the CCD's WCS, or None and a history note when it is uniform."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr)
    # the area on a coarse grid first: a TAN WCS over one CCD is uniform to ~1e-5, nothing to correct
    _, _, grid = pixel_area_grid(wcs, shape)
    spread = float(grid.max() - grid.min())
    if spread < 1e-4:
        return None, f"cosmodm detrend: pixel area uniform to {spread:.1e}: not applied"
    return relative_pixel_area(wcs, shape), ""


def _detrended_header(spec: dict[str, Any], hdr: Any, res: RawDetrendResult, *, ccd_gain: tuple[float, float],
                      sides: tuple[str, str], files: dict[str, Any], has_starflat: bool, used: list[str]
                      ) -> afits.Header:
    """The detrended CCD's header: primary and CCD keys (not the raw-frame ones), units, calibration files,
    history (appended to ``res.history`` too)."""
    extname, ccdnum, band = spec["extname"], int(spec["ccd"]), spec["band"]
    header = ccd_header(spec.get("primary_header", ""), hdr, drop=_RAW_ONLY_KEYS)
    header["BUNIT"] = ("electrons", "image unit")
    header["GAIN"] = (1.0, "[e-/e-] image is in electrons")
    header["RDNOISE"] = (res.readnoise, "[e-] read noise (mean of the amplifiers)")
    header["SATURATE"] = (res.saturate, "[e-] saturation level of the detrended image")
    header["CCDNUM"] = ccdnum
    header["DETPOS"] = (extname, "CCD name")
    for side, amp in enumerate(sides):
        header[f"ORIGGN{amp}"] = (ccd_gain[side], f"[e-/ADU] gain of amplifier {amp} (applied)")
    names = {role: Path(path).name for role, path in files.items() if path}
    names.update(spec.get("calib_names") or {})  # the source files' names (the runner's are staged or cached)
    header["BIASFIL"] = names["bias"]
    header["FLATFIL"] = names["flat"]
    header["BPMFIL"] = names.get("bpm", "none")
    if not has_starflat:
        header["STARFIL"] = ("none", "no star flat for this band: not applied")
        log.warning("%s: no starflat_%s file: the zeropoint-flatness correction is not applied (CCD %s)",
                    spec.get("calib"), band, extname)
        res.history.append(f"cosmodm detrend: no star flat for band {band}: zeropoint flatness not corrected")
    else:
        header["STARFIL"] = names["starflat"]
    if used:
        res.history.append("cosmodm detrend: cross-CCD crosstalk " + ", ".join(used))
    header["HISTORY"] = f"cosmodm ingest: raw {Path(spec['raw']).name}[{spec['hdu']}] {extname}"
    for line in res.history:
        header["HISTORY"] = line
    return header
