"""The first stages of an exposure run: read and check the inputs, stage them, write the per-CCD work orders.

* :func:`read_exposure_inputs` (before any work): the exposure's CCD HDUs, its metadata, the files for
  the manifest's inputs and the reference catalog; bad input raises
  :class:`~cosmodm_ops.single_epoch.inputs.BadInputError` here (exit 65).
* :func:`stage_inputs`: copy the inputs into the job's RAM-disk folder (tile-compressed files are
  decompressed: SExtractor cannot read them).
* :func:`ccd_specs`: one small picklable dict per CCD for the worker processes
  (:func:`~cosmodm_ops.single_epoch.ccd.prepare_ccd` and
  :func:`~cosmodm_ops.single_epoch.ccd.finish_ccd`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits as afits

from cosmodm_ops import fits as cfits
from cosmodm_ops.config import Config
from cosmodm_ops.single_epoch.inputs import (
    BadInputError,
    ExposureInfo,
    exposure_info,
    image_hdus,
    read_refcat,
)

__all__ = ["MAX_REF_GAP_DEG", "MIN_PSF_STARS", "ExposureInputs", "ccd_specs", "check_overlap", "read_exposure_inputs",
           "stage_inputs"]

log = logging.getLogger(__name__)

#: Fewer point-source candidates than this on a CCD: PSFEx is not run and the CCD fails.
MIN_PSF_STARS = 5


@dataclass
class ExposureInputs:
    """What the run knows about its input before any work.

    Attributes
    ----------
    kind : str
        ``"raw"`` or ``"detrended"``.
    source : str
        The exposure file (raw exposure, or the detrended image).
    hdus : list of (HDU index, EXTNAME)
        The CCDs to process, in file order.
    weight_hdus, mask_hdus : list of (HDU index, EXTNAME), optional
        The matching HDUs of the detrended weight and mask files (None on the raw path).
    info : ExposureInfo
    primary : astropy Header
        The exposure's primary header.
    inputs : list of (role, path)
        The manifest's inputs, the reference catalog last.
    ref : dict
        The reference catalog (:func:`~cosmodm_ops.single_epoch.inputs.read_refcat`).
    """

    kind: str
    source: str
    hdus: list[tuple[int, str]]
    weight_hdus: list[tuple[int, str]] | None
    mask_hdus: list[tuple[int, str]] | None
    info: ExposureInfo
    primary: afits.Header
    inputs: list[tuple[str, str]]
    ref: dict[str, Any]


def read_exposure_inputs(cfg: Config, refcat: str | os.PathLike[str], *, detrended: tuple[str, str, str] | None,
                         raw: str | None, calib: str | None) -> ExposureInputs:
    """Read and check the exposure, its calibration files (raw path) and the reference catalog.

    Raises
    ------
    BadInputError
        Neither input given, mismatched HDU counts, or anything the readers reject.
    """
    weight_hdus = mask_hdus = None
    if detrended is not None:
        image, weight, mask = detrended
        hdus = image_hdus(image)
        weight_hdus, mask_hdus = image_hdus(weight), image_hdus(mask)
        if len(weight_hdus) != len(hdus) or len(mask_hdus) != len(hdus):
            msg = (f"{weight} / {mask}: {len(weight_hdus)} / {len(mask_hdus)} image HDUs, "
                   f"but {image} has {len(hdus)}")
            raise BadInputError(msg)
        primary = afits.getheader(image, 0)
        first = afits.getheader(image, hdus[0][0])
        info = exposure_info(primary, image, first)
        inputs = [("image", image), ("weight", weight), ("mask", mask)]
        kind, source = "detrended", image
    elif raw is not None:
        from cosmodm_ops.single_epoch.rawplan import raw_exposure_plan

        hdus, info, primary, calib_inputs = raw_exposure_plan(raw, calib, cfg)
        inputs = [("raw", raw), *calib_inputs]
        kind, source = "raw", raw
    else:
        msg = "give either --detrended IMAGE --weight W --mask M or --exposure RAW --calib DIR"
        raise BadInputError(msg)
    if info.camera != cfg.camera.name:
        log.warning("%s: camera %s differs from the configured camera %s", source, info.camera, cfg.camera.name)
    ref = read_refcat(refcat, band=info.band, mjd_obs=info.mjd_obs)
    check_overlap(ref, refcat, source, hdus[0][0])
    inputs.append(("refcat", str(refcat)))
    return ExposureInputs(kind=kind, source=source, hdus=hdus, weight_hdus=weight_hdus, mask_hdus=mask_hdus,
                          info=info, primary=primary, inputs=inputs, ref=ref)


#: A reference catalog whose nearest star is farther than this from the first CCD's centre is for another field.
MAX_REF_GAP_DEG = 3.0


def check_overlap(ref: dict[str, Any], refcat: str | os.PathLike[str], source: str, hdu: int) -> None:
    """Bad input unless the reference catalog has a star within :data:`MAX_REF_GAP_DEG` of the exposure.

    A catalog of another field would only show up after every CCD was processed, as an astrometry failure
    with its cause hidden. The exposure's position is CRVAL1/2 of its first CCD (skipped when absent).
    """
    ra, dec = np.asarray(ref["ra"], float), np.asarray(ref["dec"], float)
    if ra.size == 0:
        msg = f"{refcat} HDU 1: the reference catalog has no rows; expected the stars of the exposure's field"
        raise BadInputError(msg)
    hdr = afits.getheader(source, hdu)
    if "CRVAL1" not in hdr or "CRVAL2" not in hdr:
        return
    ra0, dec0 = np.deg2rad(float(hdr["CRVAL1"])), np.deg2rad(float(hdr["CRVAL2"]))
    r, d = np.deg2rad(ra), np.deg2rad(dec)
    hav = np.sin((d - dec0) / 2) ** 2 + np.cos(d) * np.cos(dec0) * np.sin((r - ra0) / 2) ** 2
    nearest = float(np.rad2deg(2 * np.arcsin(np.sqrt(np.clip(hav.min(), 0.0, 1.0)))))
    if nearest > MAX_REF_GAP_DEG:
        msg = (f"{refcat} HDU 1: no reference star overlaps the exposure: the nearest is {nearest:.1f} deg from "
               f"{source} HDU {hdu} (CRVAL1, CRVAL2 = {float(hdr['CRVAL1']):.4f}, {float(hdr['CRVAL2']):.4f}); "
               f"expected one within {MAX_REF_GAP_DEG:g} deg: give the reference catalog of this field (--refcat)")
        raise BadInputError(msg)


def stage_inputs(stg: cfits.Staging, inputs: list[tuple[str, str]]) -> dict[str, str]:
    """Copy the inputs (not the reference catalog) into the RAM-disk folder; role -> staged path.

    Tile-compressed (``.fz``) inputs are decompressed on the way: SExtractor cannot read them.
    """
    staged: dict[str, str] = {}
    for role, path in inputs:
        if role == "refcat":
            continue
        name = Path(path).name
        if name.endswith(".fz"):
            dst = stg.file(name[:-3])
            stg.reserve(Path(path).stat().st_size * 4)
            cfits.decompress_file(path, dst)
            stg.bytes_written += dst.stat().st_size
        else:
            dst = stg.stage(path, name=f"{role}_{name}")
        staged[role] = str(dst)
    return staged


def _base_spec(cfg: Config, xin: ExposureInputs, staged: dict[str, str], work: Path, outdir: Path,
               calib: str | None) -> dict[str, Any]:
    """The keys every CCD's work order shares (config values, paths, the reference catalog as .npz)."""
    se, info, ref = cfg.single_epoch, xin.info, xin.ref
    prim_text = afits.Header([c for c in xin.primary.cards if c.keyword not in ("", "COMMENT")]).tostring(sep="\n")
    spec: dict[str, Any] = {
        "workdir": str(work), "outdir": str(outdir), "stem": f"{cfg.survey.name}_{info.expnum:08d}_{info.band}",
        "kind": xin.kind,
        "detect_thresh": se.detect_thresh, "detect_minarea": se.detect_minarea, "psf_size": se.psf_size,
        "pass1_detect_thresh": se.pass1_detect_thresh, "compress_products": se.compress_products,
        "weight_qlevel": se.weight_qlevel,
        "psfvar_degrees": se.psfvar_degrees, "min_psf_stars": MIN_PSF_STARS, "params": se.sextractor_params,
        "star_snr_min": se.star_snr_min, "spread_model_star_max": se.spread_model_star_max,
        "match_radius_arcsec": 1.0, "mag_zeropoint": 25.0, "exptime": info.exptime, "band": info.band,
        "ref_mag_system": ref["mag_system"], "primary_header": prim_text,
    }
    if xin.kind == "detrended":
        spec.update(image=staged["image"], weight=staged["weight"], mask=staged["mask"])
    else:
        # the calibration files were staged with the raw file: workers read the RAM-disk copies
        spec.update(raw=staged["raw"], calib=calib, camera=cfg.camera.model_dump(mode="json"),
                    calib_files={role: staged[role] for role, _ in xin.inputs if role in staged and role != "raw"})
    refnpz = work / "refcat.npz"
    np.savez(refnpz, **{k: v for k, v in ref.items() if isinstance(v, np.ndarray)})
    spec["refcat_npz"] = str(refnpz)
    return spec


def ccd_specs(cfg: Config, xin: ExposureInputs, staged: dict[str, str], work: Path, outdir: Path,
              calib: str | None, done: Container[int]) -> tuple[list[dict[str, Any]], list[int]]:
    """The work orders of the CCDs to process, and the CCDs (in file order) left out because ``done``.

    Parameters
    ----------
    done : container of int
        CCDNUMs an earlier run finished (their products are carried over).
    """
    base = _base_spec(cfg, xin, staged, work, outdir, calib)
    detrended = xin.kind == "detrended"
    only = set(cfg.single_epoch.only_ccds) if cfg.single_epoch.only_ccds is not None else None
    specs: list[dict[str, Any]] = []
    skipped: list[int] = []
    for pos, (hdu, extname) in enumerate(xin.hdus):
        ccd = _ccdnum(xin.source, hdu, pos)
        if only is not None and ccd not in only:
            continue
        if ccd in done:
            skipped.append(ccd)
            continue
        spec = dict(base, ccd=ccd, hdu=hdu, extname=extname, weight_hdu=hdu if detrended else None,
                    mask_hdu=hdu if detrended else None)
        if detrended:
            assert xin.weight_hdus is not None and xin.mask_hdus is not None
            spec["weight_hdu"] = xin.weight_hdus[pos][0]
            spec["mask_hdu"] = xin.mask_hdus[pos][0]
        specs.append(spec)
    return specs, skipped


def _ccdnum(path: str, hdu: int, pos: int) -> int:
    hdr = afits.getheader(path, hdu)
    if "CCDNUM" in hdr:
        return int(hdr["CCDNUM"])
    return pos + 1
