"""Per-CCD work of the single-epoch pipeline (runs in worker processes).

Phase A (:func:`prepare_ccd`): get the detrended CCD (read a CP-style triple, or
ingest + detrend a raw CCD), write uncompressed image / weight / flag files into the
RAM-disk work folder, SExtractor pass 1 (FITS_LDAC) and PSFEx.
Phase B (exposure level, in :mod:`cosmodm_ops.single_epoch.runner`): SCAMP.
Phase C (:func:`finish_ccd`): SExtractor pass 2 with the PSF model and the SCAMP
header, aperture correction of MAG_PSF, QA values (computed in :mod:`cosmodm_ops.single_epoch.ccdqa`),
compressed products.

Workers receive small picklable dicts and read their own CCD from disk, so
memory per worker stays at about one CCD's arrays plus the tools' own memory
(about 0.4 GB for a 2k x 4k CCD); peak memory is ``jobs x`` that.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io import fits as afits
from astropy.wcs import WCS, FITSFixedWarning

from cosmodm_ops import fits as cfits
from cosmodm_ops.astromatic import (
    ToolError,
    config_path,
    psfex_args,
    read_ldac,
    read_scamp_head,
    sextractor_args,
)
from cosmodm_ops.single_epoch.accounting import StageClock
from cosmodm_ops.single_epoch.ccdqa import ccd_qa_values, match_sky, psf_model_fwhm, psf_model_moffat
from cosmodm_ops.single_epoch.detrend import MASK_BITS, robust_sky
from cosmodm_ops.single_epoch.inputs import CP_DQ_TO_MASK, ccd_header
from cosmodm_ops.single_epoch.rawdetrend import RawCcdUnusable

__all__ = ["WCS_KEYS", "CcdFailure", "finish_ccd", "match_sky", "prepare_ccd", "psf_model_fwhm", "psf_model_moffat"]

log = logging.getLogger(__name__)

#: Header keys replaced by a SCAMP solution.
WCS_KEYS = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
            "CD2_1", "CD2_2", "EQUINOX", "RADESYS", "RADECSYS", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1",
            "PC2_2", "LTV1", "LTV2", "LTM1_1", "LTM2_2", "WCSAXES")


class CcdFailure(RuntimeError):
    """A CCD that cannot be finished (blank, too few stars for PSFEx); the others go on."""


def _cp_mask(dq: np.ndarray) -> np.ndarray:
    mask = np.zeros(dq.shape, np.int32)
    for code, bit in CP_DQ_TO_MASK.items():
        mask[dq == code] |= bit
    mask[(dq != 0) & (mask == 0)] |= MASK_BITS["BADPIX"]
    return mask


def _read_detrended(spec: dict[str, Any]) -> dict[str, Any]:
    """A CP-style (ADU) or our (e-) detrended CCD, converted to electrons."""
    hdu = spec["hdu"]
    try:
        with fitsio.FITS(spec["image"]) as f:
            image = f[hdu].read().astype(np.float32)
        hdr = afits.getheader(spec["image"], hdu)
        with fitsio.FITS(spec["weight"]) as f:
            weight = f[spec["weight_hdu"]].read().astype(np.float32)
        with fitsio.FITS(spec["mask"]) as f:
            dq = f[spec["mask_hdu"]].read()
    except (OSError, ValueError) as err:
        msg = f"{spec['image']} HDU {hdu}: cannot read the CCD triple: {err}"
        raise CcdFailure(msg) from err
    if weight.shape != image.shape or dq.shape != image.shape:
        msg = f"{spec['weight']}/{spec['mask']} HDU {hdu}: shapes {weight.shape}/{dq.shape} differ from image {image.shape}"
        raise CcdFailure(msg)
    header = ccd_header(spec["primary_header"], hdr)
    bunit = str(hdr.get("BUNIT", "")).strip().lower()
    if "GAIN" in hdr and spec.get("units") == "electrons" or bunit in ("electrons", "e-", "electron"):
        gain = 1.0
    else:
        gains = [float(hdr[k]) for k in ("GAINA", "GAINB", "GAIN") if k in hdr]
        if not gains:
            msg = f"{spec['image']} HDU {hdu}: key 'GAINA'/'GAIN' is missing: cannot convert ADU to electrons"
            raise CcdFailure(msg)
        gain = float(np.mean(gains[:2]))
    rn_keys = [float(hdr[k]) for k in ("RDNOISEA", "RDNOISEB", "RDNOISE") if k in hdr]
    readnoise = float(np.mean(rn_keys[:2])) if rn_keys else 6.0
    sat = float(hdr.get("SATURATE", hdr.get("SATURATA", 1e9))) * gain
    image *= gain
    weight /= gain**2
    mask = _cp_mask(dq)
    weight[(mask & (MASK_BITS["BADPIX"] | MASK_BITS["SATURATED"] | MASK_BITS["BLEED"] | MASK_BITS["EDGE"])) != 0] = 0
    header["GAIN"] = (1.0, "[e-/e-] image is in electrons")
    header["RDNOISE"] = (readnoise, "[e-] read noise")
    header["SATURATE"] = (sat, "[e-] saturation level")
    header["CCDNUM"] = int(hdr.get("CCDNUM", spec["ccd"]))
    header["HISTORY"] = f"cosmodm ingest: detrended input {Path(spec['image']).name}[{hdu}] x gain {gain:.4f}"
    return {"image": image, "weight": weight, "mask": mask, "header": header, "readnoise": readnoise,
            "saturate": sat}


def _write_plain(path: Path, data: np.ndarray, header: afits.Header | None = None) -> None:
    afits.PrimaryHDU(np.ascontiguousarray(data), header=header).writeto(path, overwrite=True,
                                                                         output_verify="silentfix")


def _pixel_scale(header: afits.Header) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header)
    scales = np.sqrt(np.abs(np.linalg.det(w.pixel_scale_matrix))) * 3600.0
    return float(scales) if np.isfinite(scales) and scales > 0 else 0.263


def prepare_ccd(spec: dict[str, Any]) -> dict[str, Any]:
    """Phase A for one CCD; returns a small dict (paths, QA values, ``clock``: a StageClock record) or with ``failed``."""
    work = Path(spec["workdir"])
    tag = f"ccd{spec['ccd']:02d}"
    clock = StageClock()
    out: dict[str, Any] = {"ccd": spec["ccd"], "extname": spec.get("extname")}
    try:
        with clock.stage("read_detrend"):
            if spec["kind"] == "detrended":
                ccd = _read_detrended(spec)
            else:
                from cosmodm_ops.single_epoch.raw import ingest_and_detrend

                ccd = ingest_and_detrend(spec)
        image, weight, mask, header = ccd["image"], ccd["weight"], ccd["mask"], ccd["header"]
        with clock.stage("sky"):
            good = weight > 0
            if good.sum() < 0.05 * image.size or not np.isfinite(image[good]).all() or np.ptp(image[good]) == 0:
                raise CcdFailure("blank CCD: no usable pixels (all masked, constant or non-finite)")
            sky, noise = robust_sky(image, mask)
            out.update(sky_e=sky, sky_noise_e=noise, masked_fraction=float((mask != 0).mean()))
        img_p, wgt_p, flg_p = work / f"{tag}.fits", work / f"{tag}.weight.fits", work / f"{tag}.flag.fits"
        with clock.stage("write_work"):
            _write_plain(img_p, image, header)
            _write_plain(wgt_p, weight)
            _write_plain(flg_p, mask.astype(np.int32, copy=False))
        scale = _pixel_scale(header)
        out.update(image=str(img_p), weight=str(wgt_p), flag=str(flg_p), pixel_scale=scale,
                   saturate=float(header["SATURATE"]), header=header.tostring(sep="\n"))
        cat1 = work / f"{tag}.pass1.ldac"
        # pass 1 feeds only PSFEx (S/N > 20 stars) and SCAMP: a higher threshold and a PSF-sized VIGNET
        clock.tool("sextractor_pass1", "sextractor", sextractor_args(
            img_p, cat1, weight=wgt_p, flag=flg_p, params=pass1_params(work, spec["psf_size"]), gain=1.0,
            saturate=float(header["SATURATE"]), pixel_scale=scale,
            detect_thresh=spec.get("pass1_detect_thresh") or spec["detect_thresh"],
            detect_minarea=spec["detect_minarea"],
        ), cwd=work)
        with clock.stage("read_pass1"):
            objs = read_ldac(cat1, columns=["SNR_WIN", "FLAGS"])
        n_psf_cand = int(((objs["SNR_WIN"] > 20) & (objs["FLAGS"] == 0)).sum()) if len(objs) else 0
        out.update(pass1=str(cat1), n_detections=len(objs), n_psf_candidates=n_psf_cand)
        if n_psf_cand < spec["min_psf_stars"]:
            msg = (f"too few stars for PSFEx: {n_psf_cand} point-source candidates with S/N > 20 "
                   f"(need {spec['min_psf_stars']})")
            raise CcdFailure(msg)
        # PSF variation needs stars across the CCD: fall back to a constant PSF when there are few
        degrees = spec["psfvar_degrees"] if n_psf_cand >= 60 else 0
        clock.tool("psfex", "psfex", psfex_args(cat1, psf_size=spec["psf_size"], psfvar_degrees=degrees, outdir=work),
                   cwd=work)
        psf = work / f"{tag}.pass1.psf"
        if not psf.exists():
            raise CcdFailure(f"PSFEx wrote no model for {cat1.name}")
        out["psf"] = str(psf)
        out["psfvar_degrees"] = degrees
    except (CcdFailure, RawCcdUnusable) as err:
        out["failed"] = str(err)
    except ToolError as err:
        out["failed"] = f"tool failed: {str(err).splitlines()[0][:300]}"
    out["clock"] = clock.record()
    return out


def pass1_params(work: Path, psf_size: int) -> str:
    """Pass 1's parameter list with ``VIGNET(psf_size, psf_size)`` (PSFEx needs no larger stamp), in ``work``.

    Returns a path for ``sextractor_args(params=...)``: the stock list when the size is its 35.
    """
    stock = config_path("single_epoch_pass1.param")
    if psf_size == 35:
        return stock.name
    path = work / f"single_epoch_pass1_v{psf_size}.param"
    if not path.exists():
        text = stock.read_text().replace("VIGNET(35,35)", f"VIGNET({psf_size},{psf_size})")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


def _apply_head(header: afits.Header, head: afits.Header) -> afits.Header:
    out = header.copy()
    for key in list(out.keys()):
        if key in WCS_KEYS or key.startswith(("PV1_", "PV2_")):
            del out[key]
    for card in head.cards:
        if card.keyword in ("HISTORY", "COMMENT", ""):
            continue
        out[card.keyword] = (card.value, card.comment)
    out["HISTORY"] = "cosmodm: WCS from the SCAMP solution of this exposure"
    return out


def finish_ccd(spec: dict[str, Any], prep: dict[str, Any]) -> dict[str, Any]:
    """Phase C for one CCD: pass 2, aperture correction, QA values, compressed products."""
    work = Path(spec["workdir"])
    tag = f"ccd{spec['ccd']:02d}"
    clock = StageClock()
    res: dict[str, Any] = {"ccd": spec["ccd"], "products": []}
    try:
        header = afits.Header.fromstring(prep["header"], sep="\n")
        img_p = Path(prep["image"])
        head_p = spec.get("scamp_head")
        if head_p:
            heads = read_scamp_head(head_p)
            header = _apply_head(header, heads[0])
            # SExtractor reads <image>.head for world coordinates
            (work / f"{tag}.head").write_text(Path(head_p).read_text(errors="ignore"))
        cat2 = work / f"{tag}.cat.ldac"
        clock.tool("sextractor_pass2", "sextractor", sextractor_args(
            img_p, cat2, weight=prep["weight"], flag=prep["flag"], params=spec["params"], psf=prep["psf"],
            gain=1.0, saturate=prep["saturate"], pixel_scale=prep["pixel_scale"],
            detect_thresh=spec["detect_thresh"], detect_minarea=spec["detect_minarea"],
        ), cwd=work)
        with clock.stage("qa_measure"):
            values, apcorr = _measure(spec, prep, cat2)
        res["values"] = values
        with clock.stage("write_products"):
            res["products"], res["preview"] = _write_products(spec, prep, header, cat2, apcorr, head_p)
    except CcdFailure as err:
        res["failed"] = str(err)
    except ToolError as err:
        res["failed"] = f"tool failed: {str(err).splitlines()[0][:300]}"
    res["clock"] = clock.record()
    return res


def _write_products(spec: dict[str, Any], prep: dict[str, Any], header: afits.Header, cat2: Path,
                    apcorr: float | None, head_p: str | None) -> tuple[list[tuple[str, str, str]], Any]:
    """Compressed image, weight and mask, the catalog, the PSF model (and the SCAMP header) into the output;
    (kind, path, sha256) of each, and the image binned for the exposure preview (or None).

    Each product is made in the RAM-disk folder and copied into the output folder with its checksum
    (:func:`~cosmodm_ops.single_epoch.outputs.publish`): the output file system is written once, never read.
    """
    from cosmodm_ops.single_epoch.outputs import publish

    outdir, work = Path(spec["outdir"]), Path(spec["workdir"])
    tag = f"ccd{spec['ccd']:02d}"
    header["HISTORY"] = f"cosmodm: MAG_PSF aperture correction {apcorr:+.4f} mag" if apcorr is not None else \
        "cosmodm: no MAG_PSF aperture correction (too few stars)"
    image, weight, mask = (fitsio.read(prep[k], ext=0) for k in ("image", "weight", "flag"))
    compress = spec.get("compress_products", True)
    fz = ".fits.fz" if compress else ".fits"
    names = {
        "image": f"{spec['stem']}_{tag}_image{fz}",
        "weight": f"{spec['stem']}_{tag}_weight{fz}",
        "mask": f"{spec['stem']}_{tag}_mask{fz}",
        "catalog": f"{spec['stem']}_{tag}_cat.fits",
    }
    made = work / f"{tag}.products"
    made.mkdir(exist_ok=True)
    cfits.write_image(made / names["image"], image, header, extname="SCI", compress=compress)
    cfits.write_image(made / names["weight"], weight, _wcs_only(header), extname="WGT", compress=compress,
                      qlevel=spec.get("weight_qlevel", cfits.DEFAULT_QLEVEL))
    cfits.write_image(made / names["mask"], mask.astype(np.int32, copy=False), _wcs_only(header), extname="MSK",
                      compress=compress)
    _write_catalog(cat2, made / names["catalog"], apcorr)
    sources = {k: made / n for k, n in names.items()}
    sources["psf"] = Path(prep["psf"])
    names["psf"] = f"{spec['stem']}_{tag}.psf"
    if head_p:
        sources["head"] = Path(head_p)
        names["head"] = f"{spec['stem']}_{tag}.head"
    out = [(k, str(outdir / names[k]), publish(sources[k], outdir / names[k])) for k in sources]
    return out, _preview(spec, sources["image"])


def _preview(spec: dict[str, Any], image_product: Path) -> Any:
    """The CCD binned for the exposure's focal-plane preview from its image product (the RAM-disk copy: the
    same pixels as a re-run reads from the output folder), or None without a binning or on any error (a
    preview never fails a CCD)."""
    if not spec.get("preview_binning"):
        return None
    from cosmodm_ops.qa.thumbnail_products import ccd_preview

    try:
        return ccd_preview(cfits.read_image(image_product)[0], spec["preview_binning"], spec["ccd_nx"])
    except Exception as err:  # noqa: BLE001
        log.warning("CCD %s: no preview: %s", spec["ccd"], err)
        return None


def _wcs_only(header: afits.Header) -> afits.Header:
    keep = afits.Header()
    for key in ("EXPNUM", "CCDNUM", "BAND"):
        if key in header:
            keep[key] = header[key]
    for card in header.cards:
        if card.keyword in WCS_KEYS or card.keyword.startswith(("PV1_", "PV2_")):
            keep[card.keyword] = (card.value, card.comment)
    return keep


def _write_catalog(src: Path, dst: Path, apcorr: float | None) -> None:
    """Copy the pass-2 LDAC catalog, adding the aperture correction to MAG_PSF (kept where MAG_PSF = 99)."""
    with afits.open(src) as hdul:
        for hdu in hdul:
            if hdu.name == "LDAC_OBJECTS":
                if apcorr is not None and "MAG_PSF" in hdu.columns.names and len(hdu.data):
                    m = hdu.data["MAG_PSF"]
                    ok = m < 90
                    m[ok] = m[ok] + apcorr
                hdu.header["APCORR"] = (apcorr if apcorr is not None else 0.0, "[mag] added to MAG_PSF")
        tmp = dst.with_name(f".{dst.name}.part")
        hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, dst)


def _measure(spec: dict[str, Any], prep: dict[str, Any], cat: Path) -> tuple[dict[str, Any], float | None]:
    """QA values of one CCD (:func:`~cosmodm_ops.single_epoch.ccdqa.ccd_qa_values`) from its pass-2 catalog,
    PSF model and the reference catalog, read here."""
    objs = read_ldac(cat)
    if len(objs) == 0:
        raise CcdFailure("no sources detected in pass 2")
    moffat = psf_model_moffat(prep["psf"])
    psf_fwhm = None if moffat else float(fitsio.read_header(prep["psf"], ext=1).get("PSF_FWHM", np.nan))
    with np.load(spec["refcat_npz"]) as npz:
        ref = {k: npz[k] for k in npz.files}
    return ccd_qa_values(objs, ref, spec, prep, moffat, psf_fwhm)
