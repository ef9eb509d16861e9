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

import hashlib
import logging
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
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

__all__ = ["MAX_REF_GAP_DEG", "MIN_PSF_STARS", "ExposureInputs", "StagedInputs", "calib_extnames", "ccd_specs",
           "check_overlap", "raw_hdus_needed", "read_exposure_inputs", "stage_inputs"]

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

        # with the node's calibration cache on, the cache checks the calibration files when it builds
        hdus, info, primary, calib_inputs = raw_exposure_plan(raw, calib, cfg,
                                                              check_calib=not cfg.single_epoch.calib_cache)
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


@dataclass
class StagedInputs:
    """The staged inputs: role -> path in the RAM-disk folder, and role -> sha256 of the original file
    (computed while it was read for staging: the manifest needs no second read)."""

    paths: dict[str, str]
    sha256: dict[str, str]


def stage_inputs(stg: cfits.Staging, inputs: list[tuple[str, str]], keep: set[str] | None = None,
                 skip: Container[str] = ()) -> StagedInputs:
    """Copy the inputs (not the reference catalog, nor the roles in ``skip``: the calibration files the
    node's cache holds) into the RAM-disk folder, each read once and hashed.

    Tile-compressed (``.fz``) inputs are decompressed on the way (SExtractor cannot read them): the
    file is read once into memory (hashed), and only the image HDUs named in ``keep`` (upper-case
    EXTNAMEs; None: all) get their pixels decompressed (:func:`raw_hdus_needed`).
    """
    paths: dict[str, str] = {}
    digests: dict[str, str] = {}
    for role, path in inputs:
        if role == "refcat" or role in skip:
            continue
        name = Path(path).name
        size = Path(path).stat().st_size
        if name.endswith(".fz"):
            dst = stg.file(name[:-3])
            stg.reserve(size * 4)
            digests[role] = _decompress_hashed(path, dst, keep)
            stg.bytes_written += dst.stat().st_size
        else:
            dst = stg.file(f"{role}_{name}")
            stg.reserve(size)
            digests[role] = _copy_hashed(path, dst)
            stg.bytes_written += size
        paths[role] = str(dst)
    return StagedInputs(paths=paths, sha256=digests)


_CHUNK = 1 << 22


def _copy_hashed(src: str, dst: Path) -> str:
    """Copy ``src`` to ``dst`` reading it once; its sha256."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(_CHUNK):
            h.update(block)
            fout.write(block)
    return h.hexdigest()


def _decompress_hashed(src: str, dst: Path, keep: set[str] | None) -> str:
    """Decompress ``src`` into ``dst`` (the HDUs in ``keep``) reading ``src`` once; its sha256.

    The compressed bytes go through an anonymous memory file (Linux ``memfd``), which CFITSIO reads as
    ``/proc/self/fd/N``; elsewhere the file is read twice (decompression, then the checksum).
    """
    if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
        cfits.decompress_file(src, dst, keep=keep)
        return cfits.file_sha256(src)
    h = hashlib.sha256()
    fd = os.memfd_create("cosmodm-stage")
    try:
        with open(src, "rb") as fin, open(fd, "wb", closefd=False) as mem:
            while block := fin.read(_CHUNK):
                h.update(block)
                mem.write(block)
        try:
            cfits.decompress_file(f"/proc/self/fd/{fd}", dst, keep=keep)
        except cfits.FitsError as err:
            raise cfits.FitsError(str(err).replace(f"/proc/self/fd/{fd}", src)) from err
    finally:
        os.close(fd)
    return h.hexdigest()


def calib_extnames(cfg: Config, xin: ExposureInputs) -> list[str]:
    """EXTNAMEs (upper case) of the CCDs whose calibration arrays the job reads (``single_epoch.only_ccds``
    or every CCD of the exposure)."""
    only = cfg.single_epoch.only_ccds
    if only is None:
        return sorted({ext.upper() for _, ext in xin.hdus})
    from cosmodm_ops.single_epoch.rawcamera import camera_ccds

    return sorted(name.upper() for name, num in camera_ccds(cfg.camera) if num in set(only))


def raw_hdus_needed(cfg: Config, kind: str) -> set[str] | None:
    """EXTNAMEs (upper case) of the raw CCDs a job on part of an exposure (``single_epoch.only_ccds``) reads:
    its CCDs and the CCDs whose crosstalk reaches them. None: every CCD (the whole exposure, or not raw)."""
    only = cfg.single_epoch.only_ccds
    if only is None or kind != "raw":
        return None
    from cosmodm_ops.single_epoch.rawcamera import camera_ccds, crosstalk_terms

    names = {num: name for name, num in camera_ccds(cfg.camera)}
    victims = set(only)
    need = victims | {t.source[0] for t in crosstalk_terms(cfg.camera) if t.victim[0] in victims}
    return {names[n].upper() for n in need if n in names}


def _base_spec(cfg: Config, xin: ExposureInputs, staged: dict[str, str], work: Path, outdir: Path,
               calib: str | None, cached: dict[str, str]) -> dict[str, Any]:
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
        "preview_binning": _preview_binning(cfg), "ccd_nx": cfg.camera.ccd_nx,
    }
    if xin.kind == "detrended":
        spec.update(image=staged["image"], weight=staged["weight"], mask=staged["mask"])
    else:
        # the calibration files are in the node's cache (``cached``: role -> entry folder), else they were
        # staged with the raw file: workers read the RAM-disk copies; the products name the source files
        sources = {role: path for role, path in xin.inputs if role not in ("raw", "refcat")}
        spec.update(raw=staged["raw"], calib=calib, camera=cfg.camera.model_dump(mode="json"),
                    calib_files={role: staged.get(role, path) for role, path in sources.items()},
                    calib_cache=dict(cached), calib_names={role: Path(path).name for role, path in sources.items()})
    refnpz = work / "refcat.npz"
    np.savez(refnpz, **{k: v for k, v in ref.items() if isinstance(v, np.ndarray)})
    spec["refcat_npz"] = str(refnpz)
    return spec


def _preview_binning(cfg: Config) -> int | None:
    """The focal-plane preview's binning of the camera (None when the camera has no layout for it)."""
    from cosmodm_ops.qa.thumbnail_products import preview_binning

    try:
        return preview_binning(cfg.camera)
    except Exception as err:  # noqa: BLE001 - a missing preview never fails the exposure
        log.warning("no focal-plane preview binning for camera %s: %s", cfg.camera.name, err)
        return None


def ccd_specs(cfg: Config, xin: ExposureInputs, staged: dict[str, str], work: Path, outdir: Path,
              calib: str | None, done: Container[int], cached: dict[str, str] | None = None
              ) -> tuple[list[dict[str, Any]], list[int]]:
    """The work orders of the CCDs to process, and the CCDs (in file order) left out because ``done``.

    Parameters
    ----------
    done : container of int
        CCDNUMs an earlier run finished (their products are carried over).
    cached : dict, optional
        Calibration role -> its entry folder in the node's cache (those files were not staged).
    """
    base = _base_spec(cfg, xin, staged, work, outdir, calib, cached or {})
    detrended = xin.kind == "detrended"
    only = set(cfg.single_epoch.only_ccds) if cfg.single_epoch.only_ccds is not None else None
    specs: list[dict[str, Any]] = []
    skipped: list[int] = []
    ccdnums = _ccdnums(xin.source, xin.hdus)
    for pos, (hdu, extname) in enumerate(xin.hdus):
        ccd = ccdnums[pos]
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


def _ccdnums(path: str, hdus: list[tuple[int, str]]) -> list[int]:
    """CCDNUM of each HDU (its position + 1 when the key is absent), the file opened once (fitsio reads a
    header without parsing those before it, as astropy's ``getheader`` does on every call)."""
    out = []
    with fitsio.FITS(path) as f:
        for pos, (hdu, _) in enumerate(hdus):
            hdr = f[hdu].read_header()
            out.append(int(hdr["CCDNUM"]) if "CCDNUM" in hdr else pos + 1)
    return out
