"""The coadd runner: one tile and band (``run_band``), and the multi-band calibration (``calibrate_tile``).

``run_band`` takes the tile's accepted single-epoch CCD images of one band (found in the
archive by :mod:`cosmodm_ops.coadd.cli`; this module imports no SQL) and, stage by stage,
logging each stage's time:

1. **stars**: calibration stars of every input catalog (``MAG_PSF``, SPREAD_MODEL and S/N cuts);
2. **photcal**: relative zeropoints (:func:`cosmodm_ops.coadd.photcal.run`), the worst images
   removed while the bright-star repeatability exceeds ``qa.repeatability_mmag``;
3. **psf**: each used image's PSFEx model, its FWHM (arcsec) at the image centre, the band's
   Moffat target (``coadd.psf_target_scale`` x the median FWHM, beta ``coadd.moffat_beta``);
4. **homogenize**: per image, sky (median of unmasked pixels) subtracted, cell kernels to the
   target, image and weight convolved (:func:`cosmodm_ops.coadd.psfhomog.homogenize`), written
   uncompressed into the work folder; the PSF FWHM before and after on a 3 x 3 grid of each image.
   An image whose PSF is broader than the target anywhere on that grid cannot be matched by a
   convolution: it stays in the plain coadd only (qa.json ``not_homogenized``);
5. **swarp**: the non-homogenized coadd from the archived images (sky as SWarp's manual
   background per image, flux scales ``10^(0.4 (magzero - 25 - zp_i))``: the single-epoch
   catalogs carry magnitudes on a zeropoint of 25 for one electron);
6. **swarp_homog**: the homogenized coadd from the convolved images;
7. **qa**: checks, ``qa.json``, the repeatability plot, the PSF-FWHM map, an HTML report;
8. **manifest**: ``manifest.json`` with every input product (path, sha256, size, tags) so the
   archive links coadd <- images.

Coadd pixel values are on the zeropoint ``coadd.magzero`` (30): ``m = -2.5 log10(flux) + 30``,
relative to the mean of the tile's images until the multi-band calibration fixes it.

Output folder (``--out``)::

    <tile>_<band>_coadd.fits.fz, <tile>_<band>_coadd_weight.fits.fz
    <tile>_<band>_coadd_homog.fits.fz, <tile>_<band>_coadd_homog_weight.fits.fz
    <tile>_<band>_report.html (+ the PNG plots beside it), qa.json, manifest.json

``calibrate_tile`` runs the multi-band steps on the homogenized coadds of several bands; see
its docstring.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.tiling import Tile
from cosmodm_ops.common import scratch_root as _scratch_root
from cosmodm_ops.common import utc_now as _now
from cosmodm_ops.common import versions as _versions
from cosmodm_ops.common import workdir as _workdir
from cosmodm_ops.common import write_html_report as _write_report
from cosmodm_ops.common import write_json as _write_json
from cosmodm_ops.config import Config, config_hash
from cosmodm_ops.manifest import Manifest, ManifestInput, ManifestProduct, write_manifest
from cosmodm_ops.model import ProductKind, Stage, Tags

__all__ = [
    "SE_MAGZERO",
    "CoaddBadInput",
    "CoaddInput",
    "InputFile",
    "NoInputsError",
    "calibrate_tile",
    "chi_mean",
    "run_band",
]

log = logging.getLogger(__name__)

#: Zeropoint of the single-epoch catalogs' magnitudes (SExtractor MAG_ZEROPOINT on images in electrons).
SE_MAGZERO = 25.0
#: Roles of an input image's files that the coadd needs.
NEEDED_ROLES = ("image", "weight", "psf", "catalog")


class CoaddBadInput(ValueError):
    """Inputs the coadd cannot use (exit 65: retrying does not help)."""


class NoInputsError(CoaddBadInput):
    """No accepted input image for the tile and band."""


@dataclass(frozen=True)
class InputFile:
    """One archived input file of the coadd."""

    role: str
    path: Path
    sha256: str
    size: int
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CoaddInput:
    """One accepted single-epoch CCD image with its weight, PSF model and catalog.

    Attributes
    ----------
    name : str
        ``<expnum:08d>_c<ccd:02d>``.
    expnum, ccd : int
    files : dict of role to InputFile
        ``image``, ``weight``, ``psf``, ``catalog`` (``mask`` optional).
    """

    name: str
    expnum: int
    ccd: int
    files: dict[str, InputFile]

    def __post_init__(self) -> None:
        missing = [r for r in NEEDED_ROLES if r not in self.files]
        if missing:
            msg = f"input {self.name}: missing {missing} (need image, weight, psf and catalog)"
            raise CoaddBadInput(msg)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
class _Stages:
    """Times stages and logs each one as it ends."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("%s: %s ...", self.label, name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt_s = time.perf_counter() - t0
            self.timings[name] = round(self.timings.get(name, 0.0) + dt_s, 4)
            log.info("%s: %s done in %.2f s", self.label, name, dt_s)


def _check(name: str, value: float | None, threshold: float | None, *, upper: bool = True,
           reason: str | None = None) -> dict[str, Any]:
    """A QA check; ``threshold=None`` makes it informational."""
    if threshold is not None:
        from cosmodm_ops.qa.checks import check

        return check(name, value, threshold, upper=upper, reason=reason)
    ok = value is not None and not (isinstance(value, float) and not math.isfinite(value))
    out: dict[str, Any] = {"name": name, "value": float(value) if ok else None, "threshold": None,
                           "verdict": "info" if ok else "skip"}
    if reason:
        out["reason"] = reason
    return out


def _image_hdu_header(path: Path) -> Any:
    """The astropy header of the first 2-D image HDU (compressed or not)."""
    from astropy.io import fits as afits

    with afits.open(path) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                return hdu.header.copy()
    msg = f"{path}: no 2-D image HDU"
    raise CoaddBadInput(msg)


def _read_image(path: Path) -> tuple[np.ndarray, Any]:
    """(data float32, astropy header) of the first 2-D image HDU."""
    from astropy.io import fits as afits

    with afits.open(path) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                return np.asarray(hdu.data, dtype=np.float32), hdu.header.copy()
    msg = f"{path}: no 2-D image HDU"
    raise CoaddBadInput(msg)


def _wcs(header: Any) -> Any:
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _pixel_scale(wcs: Any) -> float:
    """Pixel scale in arcsec (square root of the pixel area at the reference point)."""
    return float(math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)


def _plain_header(header: Any) -> Any:
    out = header.copy()
    for key in ("XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "INHERIT"):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def _write_plain(path: Path, data: np.ndarray, header: Any, dtype: Any = np.float32) -> Path:
    from astropy.io import fits as afits

    afits.PrimaryHDU(np.ascontiguousarray(data, dtype=dtype), header=_plain_header(header)).writeto(
        path, overwrite=True, output_verify="silentfix")
    return path


def _robust_sky(image: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    vals = image[good]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 0.0
    if vals.size > 400_000:
        vals = vals[:: vals.size // 400_000]
    med = float(np.median(vals))
    return med, float(1.4826 * np.median(np.abs(vals - med)))


def _compress_from(src: Path, dst: Path, extra: Mapping[str, tuple[Any, str]]) -> Path:
    """Write a plain FITS image RICE-compressed (q=4) with extra header keywords."""
    import fitsio

    from cosmodm_ops.fits import write_image

    data, header = fitsio.read(str(src), header=True)
    for key, (value, comment) in extra.items():
        header.add_record({"name": key, "value": value, "comment": comment})
    write_image(dst, data, header, compress=True)
    return dst


def _product(path: Path, out: Path, kind: ProductKind, tags: Tags,
             inputs: list[str] | None = None) -> ManifestProduct:
    from cosmodm_ops.fits import file_sha256

    t = tags.with_(kind=kind)
    return ManifestProduct(kind=kind.value, tags=t.to_dict(), path=str(path.relative_to(out)),
                           sha256=file_sha256(path), size=path.stat().st_size, inputs=inputs)


# ---------------------------------------------------------------------------------------------
# one tile and band
# ---------------------------------------------------------------------------------------------
def _psf_samples(model: Any, kern: Any, wcs: Any, shape: tuple[int, int], scale: float,
                 grid: int = 3) -> list[dict[str, float]]:
    """PSF FWHM (arcsec) before and after homogenization on a grid x grid of positions of one image."""
    from scipy.signal import fftconvolve

    from cosmodm_ops.coadd.psfhomog import PSFHomogError, psf_at, psf_fwhm

    ny, nx = shape
    out = []
    for gy in range(grid):
        for gx in range(grid):
            x0 = (gx + 0.5) * nx / grid  # 0-based pixel position
            y0 = (gy + 0.5) * ny / grid
            iy = min(int(np.searchsorted(kern.edges_y, y0, side="right")) - 1, kern.kernels.shape[0] - 1)
            ix = min(int(np.searchsorted(kern.edges_x, x0, side="right")) - 1, kern.kernels.shape[1] - 1)
            try:
                stamp = psf_at(model, x0 + 1.0, y0 + 1.0)
                before = psf_fwhm(stamp)
                after = psf_fwhm(fftconvolve(stamp, kern.kernels[iy, ix], mode="full"))
            except PSFHomogError:
                continue
            ra, dec = wcs.all_pix2world([x0], [y0], 0)
            out.append({"ra": float(ra[0]), "dec": float(dec[0]), "before": before * scale, "after": after * scale})
    return out


def _plot_fwhm_map(samples: Sequence[Mapping[str, float]], tile: Tile, path: Path, target: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ra = np.array([s["ra"] for s in samples])
    dec = np.array([s["dec"] for s in samples])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    try:
        dra = ((ra - tile.ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(tile.dec)) * 60.0
        ddec = (dec - tile.dec) * 60.0
        for ax, key, name in ((axes[0], "before", "input PSFs"), (axes[1], "after", "homogenized")):
            v = np.array([s[key] for s in samples])
            sc = ax.scatter(dra, ddec, c=v, s=25, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="FWHM (arcsec)")
            spread = (v.max() - v.min()) / np.median(v) * 100 if len(v) else math.nan
            ax.set_title(f"{name}: median {np.median(v):.3f}\" (spread {spread:.1f}%)", fontsize=10)
            ax.set_xlabel("east offset (arcmin)")
            h = tile.size_deg * 30.0
            ax.set_xlim(h, -h)
            ax.set_ylim(-h, h)
            ax.set_aspect("equal")
        axes[0].set_ylabel("north offset (arcmin)")
        fig.suptitle(f"PSF FWHM over tile {tile.name}; target {target:.3f}\"", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path


def run_band(
    tile: Tile,
    band: str,
    inputs: Sequence[CoaddInput],
    cfg: Config,
    out: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str] | None = None,
    skipped: Sequence[Mapping[str, Any]] = (),
    nthreads: int | None = None,
) -> int:
    """Coadd one band of one tile: relative calibration, two SWarp coadds, QA, manifest.

    Parameters
    ----------
    tile : Tile
        The tile (its WCS is the coadd's).
    band : str
    inputs : sequence of CoaddInput
        The tile's accepted CCD images of the band (not quarantined; overlapping the tile).
    cfg : Config
        ``coadd``, ``qa`` and ``single_epoch`` settings; ``pipeline_version``, survey and camera for tags.
    out : path
        Output folder.
    workdir : path, optional
        Parent of the scratch folder (default ``cfg.site.ramdisk.path``); removed on every way out.
    skipped : sequence of dict
        Candidate images that were left out before the run (quarantined, incomplete), for the QA record.

    Returns
    -------
    int
        0 (done; a QA failure is recorded in qa.json, the gate acts on it).

    Raises
    ------
    NoInputsError, CoaddBadInput
        Nothing to coadd, or inputs that cannot be calibrated (exit 65).
    """
    from cosmodm_ops.coadd import photcal
    from cosmodm_ops.coadd.psfhomog import (
        PSFHomogError,
        cell_kernels,
        homogenize,
        moffat_psf,
        psf_at,
        psf_fwhm,
        read_psfex,
    )
    from cosmodm_ops.coadd.swarp import SwarpError, SwarpInput, flux_scales, run_swarp

    label = f"coadd {tile.name} {band}"
    if not inputs:
        msg = (f"tile {tile.name} band {band}: no accepted inputs (no single-epoch image of the band that "
               f"overlaps the tile and is not quarantined)")
        raise NoInputsError(msg)
    start_iso = _now()
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(label)
    co = cfg.coadd
    names = [inp.name for inp in inputs]
    n = len(inputs)
    log.info("%s: %d input image(s)", label, n)

    # 1. calibration stars
    with stage("stars"):
        tables = []
        for inp in inputs:
            try:
                tables.append(photcal.read_star_measurements(
                    inp.files["catalog"].path, mag_col="MAG_PSF", snr_min=co.star_snr_min,
                    spread_model_max=cfg.single_epoch.spread_model_star_max))
            except photcal.PhotcalError as err:
                raise CoaddBadInput(str(err)) from err
    # 2. relative zeropoints
    removed: list[dict[str, Any]] = []
    rep = None
    photcal_note = None
    with stage("photcal"):
        settings = photcal.PhotcalSettings.from_config(cfg, min_stars=co.min_stars_per_image,
                                                       floor_mag=co.photcal_floor_mag)
        try:
            res = photcal.run(tables, settings, names)
        except photcal.PhotcalError as err:
            exposures = {inp.expnum for inp in inputs}
            if len(exposures) != 1:
                msg = f"tile {tile.name} band {band}: relative calibration impossible: {err}"
                raise CoaddBadInput(msg) from err
            # the CCDs of one exposure do not overlap, and share the exposure's zeropoint: nothing to solve
            photcal_note = (f"{n} input image(s) from one exposure ({next(iter(exposures))}): no overlaps to "
                            f"calibrate against; the exposure's own zeropoint holds ({err})")
            log.warning("%s: %s", label, photcal_note)
            zp = np.zeros(n)
            zp_err = np.zeros(n)
            passed = True
        else:
            zp, zp_err, rep, passed = res.zeropoints.copy(), res.errors.copy(), res.repeatability, res.passed
            removed = [{"name": r.name, "reason": r.reason, "iteration": r.iteration} for r in res.removed]
            for r in removed:
                log.warning("%s: image %s removed: %s", label, r["name"], r["reason"])
    used = [i for i in range(n) if np.isfinite(zp[i])]
    if not used:
        msg = f"tile {tile.name} band {band}: every input image was removed by the relative calibration"
        raise CoaddBadInput(msg)
    fscale = flux_scales(np.asarray(zp) + SE_MAGZERO, co.magzero)

    # 3. PSF models and the band's target
    with stage("psf"):
        info: dict[int, dict[str, Any]] = {}
        for i in used:
            inp = inputs[i]
            hdr = _image_hdu_header(inp.files["image"].path)
            w = _wcs(hdr)
            ny, nx = int(hdr["NAXIS2"]), int(hdr["NAXIS1"])
            try:
                model = read_psfex(inp.files["psf"].path)
                scale = _pixel_scale(w)
                fw = psf_fwhm(psf_at(model, (nx + 1) / 2.0, (ny + 1) / 2.0)) * scale
            except PSFHomogError as err:  # this image cannot be homogenized: leave it out of both coadds
                reason = f"PSF model unusable: {err}"
                log.warning("%s: image %s removed: %s", label, inp.name, reason)
                removed.append({"name": inp.name, "reason": reason, "iteration": 0})
                zp[i] = np.nan
                continue
            info[i] = {"wcs": w, "shape": (ny, nx), "model": model, "scale": scale, "fwhm": fw}
        used = [i for i in used if i in info]
        if not used:
            msg = f"tile {tile.name} band {band}: no input image has a usable PSF model"
            raise CoaddBadInput(msg)
        fscale = flux_scales(np.asarray(zp) + SE_MAGZERO, co.magzero)
        fwhm_in = np.array([info[i]["fwhm"] for i in used])
        target_arcsec = float(co.psf_target_scale * np.median(fwhm_in))
        log.info("%s: input PSF FWHM %.3f-%.3f arcsec (median %.3f); target Moffat FWHM %.3f arcsec, beta %g",
                 label, fwhm_in.min(), fwhm_in.max(), np.median(fwhm_in), target_arcsec, co.moffat_beta)

    # scratch: homogenized copies and SWarp's resampled images, about 4 x 8 bytes per input pixel
    need = sum(32 * info[i]["shape"][0] * info[i]["shape"][1] for i in used) + 16 * tile.npix**2
    root = _scratch_root(workdir or cfg.site.ramdisk.path, need, cfg.site.ramdisk.max_fraction, out)
    samples: list[dict[str, float]] = []
    with _workdir(root, f"coadd-{tile.name}-{band}") as work:
        # 4. sky and PSF homogenization of every used image
        homog: list[SwarpInput] = []
        not_homog: list[dict[str, Any]] = []
        with stage("homogenize"):
            for i in used:
                inp, d = inputs[i], info[i]
                img, hdr = _read_image(inp.files["image"].path)
                wt, _ = _read_image(inp.files["weight"].path)
                good = (wt > 0) & np.isfinite(img)
                wt = np.where(good, wt, 0.0).astype(np.float32)
                sky, noise = _robust_sky(img, good)
                d.update(sky=sky, sky_noise=noise)
                tpx = target_arcsec / d["scale"]
                target = moffat_psf(tpx, co.moffat_beta, 2 * math.ceil(4 * tpx) + 1)
                ny, nx = d["shape"]
                cells = (max(1, round(ny / 256)), max(1, round(nx / 256)))
                kern = cell_kernels(d["model"], (ny, nx), target, cells)
                mine = [dict(s, image=inp.name) for s in _psf_samples(d["model"], kern, d["wcs"], (ny, nx),
                                                                       d["scale"])]
                broadest = max((s["before"] for s in mine), default=math.nan)
                if broadest > target_arcsec:
                    # a convolution only broadens: this image cannot reach the target (plain coadd only)
                    reason = (f"PSF FWHM up to {broadest:.3f}\" is broader than the homogenization target "
                              f"{target_arcsec:.3f}\": left out of the homogenized coadd")
                    log.warning("%s: image %s: %s", label, inp.name, reason)
                    not_homog.append({"name": inp.name, "reason": reason, "fwhm_max_arcsec": broadest})
                    continue
                h_img, h_wt = homogenize(np.where(good, img - sky, 0.0), wt, d["model"], target, cells=cells,
                                         kernels=kern)
                hi = _write_plain(work / f"h_{inp.name}.fits", h_img, hdr)
                hw = _write_plain(work / f"h_{inp.name}.weight.fits", h_wt, hdr)
                homog.append(SwarpInput(hi, hw, float(fscale[i])))
                samples += mine
            if not homog:
                msg = (f"tile {tile.name} band {band}: no input image has a PSF narrower than the homogenization "
                       f"target {target_arcsec:.3f}\" (coadd.psf_target_scale x the median FWHM)")
                raise CoaddBadInput(msg)
        # 5-6. the two coadds
        tnames = {
            "coadd": out / f"{tile.name}_{band}_coadd.fits.fz",
            "coadd_weight": out / f"{tile.name}_{band}_coadd_weight.fits.fz",
            "coadd_homog": out / f"{tile.name}_{band}_coadd_homog.fits.fz",
            "coadd_homog_weight": out / f"{tile.name}_{band}_coadd_homog_weight.fits.fz",
        }
        common = {"MAGZERO": (co.magzero, "[mag] zeropoint of the pixel values"),
                  "BAND": (band, "filter band"), "TILENAME": (tile.name, "tile"),
                  "NIMAGES": (len(used), "input CCD images")}
        threads = nthreads or os.cpu_count() or 1
        try:
            with stage("swarp"):
                raw_inputs = [SwarpInput(inputs[i].files["image"].path, inputs[i].files["weight"].path,
                                         float(fscale[i])) for i in used]
                skies = ",".join(f"{info[i]['sky']:.6g}" for i in used)
                res1 = run_swarp(tile, raw_inputs, work / "coadd.fits", work / "coadd.weight.fits",
                                 workdir=work / "swarp1", nthreads=threads,
                                 extra={"SUBTRACT_BACK": "Y", "BACK_TYPE": "MANUAL", "BACK_DEFAULT": skies})
                _compress_from(res1.image, tnames["coadd"], {**common, "PSFHOMOG": (False, "PSF-homogenized")})
                _compress_from(res1.weight, tnames["coadd_weight"], common)
            with stage("swarp_homog"):
                res2 = run_swarp(tile, homog, work / "homog.fits", work / "homog.weight.fits",
                                 workdir=work / "swarp2", nthreads=threads)
                psfkeys = {"PSFHOMOG": (True, "PSF-homogenized"), "NIMAGES": (len(homog), "input CCD images"),
                           "PSF_FWHM": (round(target_arcsec, 4), "[arcsec] Moffat FWHM of the PSF"),
                           "PSF_BETA": (co.moffat_beta, "Moffat beta of the PSF")}
                _compress_from(res2.image, tnames["coadd_homog"], {**common, **psfkeys})
                _compress_from(res2.weight, tnames["coadd_homog_weight"], common)
        except SwarpError as err:
            msg = f"tile {tile.name} band {band}: {err}"
            raise CoaddBadInput(msg) from err
        with stage("qa_coverage"):
            import fitsio

            cw = fitsio.read(str(res1.weight))
            coverage = float(np.mean(cw > 0))

    # 7. QA
    with stage("qa"):
        from cosmodm_ops.qa.checks import psf_fwhm_spread, psf_uniformity_check

        before = np.array([s["before"] for s in samples]) if samples else np.array([np.nan])
        after = np.array([s["after"] for s in samples]) if samples else np.array([np.nan])
        spread_after = psf_fwhm_spread(after)
        spread_before = psf_fwhm_spread(before)
        rep_mmag = rep.bright_mmag if rep is not None else None
        checks = [
            _check("repeatability_mmag", rep_mmag, cfg.qa.repeatability_mmag,
                   reason=photcal_note if rep is None else (None if rep.n_bright_pairs else "no bright star pairs")),
            _check("n_images_used", float(len(used)), 1.0, upper=False),
            _check("n_images_removed", float(len(removed)), None),
            _check("n_images_not_homogenized", float(len(not_homog)), None),
            _check("psf_fwhm_target_arcsec", target_arcsec, None),
            _check("psf_fwhm_spread_before", spread_before, None),
            psf_uniformity_check(after, cfg.qa),
            _check("coverage_fraction", coverage, None),
        ]
        if rep is not None and not passed and rep.n_bright_pairs:
            checks[0]["reason"] = (f"still above the threshold after removing {len(removed)} image(s) "
                                   f"(limit {settings.max_removed_fraction:.0%} of the inputs)")
        summary = {
            "tile": tile.name, "band": band, "n_inputs": n, "n_used": len(used), "n_removed": len(removed),
            "n_skipped": len(skipped), "n_not_homogenized": len(not_homog), "repeatability_mmag": rep_mmag,
            "repeatability_sys_mmag": rep.bright_sys_mmag if rep is not None else None,
            "n_bright_pairs": rep.n_bright_pairs if rep is not None else 0,
            "magzero": co.magzero, "psf_fwhm_target_arcsec": target_arcsec, "moffat_beta": co.moffat_beta,
            "psf_fwhm_in_median_arcsec": float(np.median(fwhm_in)), "psf_fwhm_in_min_arcsec": float(fwhm_in.min()),
            "psf_fwhm_in_max_arcsec": float(fwhm_in.max()),
            "psf_fwhm_after_median_arcsec": float(np.nanmedian(after)) if samples else None,
            "psf_fwhm_spread_before": spread_before, "psf_fwhm_spread_after": spread_after,
            "coverage_fraction": coverage, "photcal_note": photcal_note,
        }
        summary["verdict"] = "fail" if any(c["verdict"] == "fail" for c in checks) else "pass"
        images = []
        removed_names = {r["name"]: r["reason"] for r in removed}
        for i, inp in enumerate(inputs):
            d = info.get(i, {})
            images.append({"name": inp.name, "expnum": inp.expnum, "ccd": inp.ccd, "n_stars": len(tables[i]),
                           "zeropoint": float(zp[i]), "zeropoint_err": float(zp_err[i]),
                           "flxscale": float(fscale[i]), "used": i in used, "removed": removed_names.get(inp.name),
                           "fwhm_arcsec": d.get("fwhm"), "sky": d.get("sky"), "sky_noise": d.get("sky_noise"),
                           "image": str(inp.files["image"].path)})
        plots: list[tuple[str, Path]] = []
        if rep is not None:
            p = photcal.plot_repeatability(rep, out / f"{tile.name}_{band}_repeatability.png",
                                           cfg.qa.repeatability_mmag, title=f"{tile.name} {band}: repeatability")
            plots.append(("Repeatability of calibrated star magnitudes", p))
        if samples:
            p = _plot_fwhm_map(samples, tile, out / f"{tile.name}_{band}_psf_fwhm.png", target_arcsec)
            plots.append(("PSF FWHM over the tile, before and after homogenization", p))
        qa_doc = {"tile": tile.name, "band": band, "summary": summary, "checks": checks, "images": images,
                  "removed": removed, "skipped": list(skipped), "not_homogenized": not_homog,
                  "psf_samples": samples}
        qa_path = _write_json(out / "qa.json", qa_doc)
        report = _write_report(
            out / f"{tile.name}_{band}_report.html", f"Coadd {tile.name} band {band}", summary, checks, plots,
            [("Input images", ["image", "zeropoint", "error", "flxscale", "FWHM (arcsec)", "sky", "used", "removed"],
              [[im["name"], im["zeropoint"], im["zeropoint_err"], im["flxscale"], im["fwhm_arcsec"], im["sky"],
                im["used"], im["removed"] or ""] for im in images]),
             ("Left out before the calibration", ["image", "reason"],
              [[s.get("name"), s.get("reason")] for s in skipped]),
             ("In the plain coadd only (PSF broader than the target)", ["image", "reason"],
              [[s["name"], s["reason"]] for s in not_homog])])

    # 8. manifest
    with stage("manifest"):
        tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.COADD, version=cfg.pipeline_version,
                    kind=ProductKind.COADD, tile=tile.name, band=band)
        minputs: list[ManifestInput] = []
        for i, inp in enumerate(inputs):
            roles = ("image", "weight", "psf", "catalog") if i in used else ("catalog",)
            for role in roles:
                f = inp.files[role]
                minputs.append(ManifestInput(role=role if i in used else f"rejected_{role}", path=str(f.path),
                                             sha256=f.sha256, size=f.size, tags=f.tags or None))
        products = [
            _product(tnames["coadd"], out, ProductKind.COADD, tags, ["image", "weight", "catalog"]),
            _product(tnames["coadd_weight"], out, ProductKind.COADD_WEIGHT, tags, ["image", "weight", "catalog"]),
            _product(tnames["coadd_homog"], out, ProductKind.COADD_HOMOG, tags,
                     ["image", "weight", "psf", "catalog"]),
            _product(tnames["coadd_homog_weight"], out, ProductKind.COADD_HOMOG_WEIGHT, tags,
                     ["image", "weight", "psf", "catalog"]),
            _product(qa_path, out, ProductKind.QA, tags),
            _product(report, out, ProductKind.REPORT, tags),
        ]
        stage.timings["total"] = round(time.perf_counter() - t_start, 4)
        manifest = Manifest(
            job={"name": f"coadd-{tile.name}-{band}", "site": cfg.site.name, "host": socket.gethostname(),
                 "start": start_iso, "end": _now(), "state": "done", "exit_code": 0},
            tags={"survey": cfg.survey.name, "camera": cfg.camera.name, "stage": "coadd",
                  "version": cfg.pipeline_version, "tile": tile.name, "band": band},
            products=products, inputs=minputs, versions=_versions(), config_hash=config_hash(cfg),
            timings=dict(stage.timings),
            bytes={"read": int(sum(m.size for m in minputs)), "output": int(sum(p.size for p in products))},
        )
        write_manifest(manifest, out / "manifest.json")
    log.info("%s: done in %.1f s: %d of %d images, repeatability %s mmag, QA %s", label,
             time.perf_counter() - t_start, len(used), n, f"{rep_mmag:.1f}" if rep_mmag is not None else "n/a",
             summary["verdict"])
    return 0


# ---------------------------------------------------------------------------------------------
# the multi-band calibration of a tile
# ---------------------------------------------------------------------------------------------
@dataclass
class _Band:
    band: str
    folder: Path
    image: Path
    weight: Path
    inputs: list[ManifestInput]
    tags: dict[str, Any]


def _band_coadds(coadds: Sequence[Path], bands: Sequence[str], tile: str) -> dict[str, _Band]:
    """The homogenized coadd of each band from the band jobs' folders (checksums verified)."""
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    folders: list[Path] = []
    for c in coadds:
        c = Path(c)
        if (c / "manifest.json").exists():
            folders.append(c)
        else:
            folders += [c / b for b in bands if (c / b / "manifest.json").exists()]
    found: dict[str, _Band] = {}
    for f in folders:
        m = read_manifest(f / "manifest.json")
        band = m.tags.get("band")
        if band not in bands or m.tags.get("tile") != tile:
            continue
        prods = {p.kind: p for p in m.products}
        if "coadd_homog" not in prods or "coadd_homog_weight" not in prods:
            msg = f"{f / 'manifest.json'}: no coadd_homog / coadd_homog_weight product (run `cosmodm coadd run`)"
            raise CoaddBadInput(msg)
        ins = []
        for kind in ("coadd_homog", "coadd_homog_weight"):
            p = prods[kind]
            path = (f / p.path).resolve()
            if not path.exists() or file_sha256(path) != p.sha256:
                msg = f"{path}: missing or its sha256 differs from {f / 'manifest.json'}"
                raise CoaddBadInput(msg)
            ins.append(ManifestInput(role=kind, path=str(path), sha256=p.sha256, size=p.size, tags=p.tags))
        found[band] = _Band(band, f, Path(ins[0].path), Path(ins[1].path), ins, prods["coadd_homog"].tags)
    missing = [b for b in bands if b not in found]
    if missing:
        msg = (f"tile {tile}: no coadd of band(s) {missing} under {[str(c) for c in coadds]} "
               f"(expected <dir>/<band>/manifest.json from `cosmodm coadd run`)")
        raise CoaddBadInput(msg)
    return found


def chi_mean(images: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """The CHI-MEAN detection image of several bands (Drlica-Wagner et al. 2018).

    ``chi = sqrt(sum_b f_b^2 w_b)`` is, for pure noise, chi-distributed with ``n`` degrees of
    freedom (``n`` bands with weight > 0 at the pixel); it is shifted by that distribution's
    mean ``mu_n = sqrt(2) Gamma((n+1)/2) / Gamma(n/2)`` and divided by its standard deviation
    ``sqrt(n - mu_n^2)``, so sky pixels have mean 0 and unit variance whatever ``n``.
    Pixels no band covers are 0.
    """
    from scipy.special import gammaln

    chi2 = np.zeros(images[0].shape, np.float64)
    nb = np.zeros(images[0].shape, np.int32)
    for img, w in zip(images, weights, strict=True):
        good = (w > 0) & np.isfinite(img)
        chi2 += np.where(good, np.asarray(img, np.float64) ** 2 * np.where(good, w, 0.0), 0.0)
        nb += good
    out = np.zeros_like(chi2)
    for k in range(1, len(images) + 1):
        sel = nb == k
        mu = math.sqrt(2.0) * math.exp(gammaln((k + 1) / 2.0) - gammaln(k / 2.0))
        out[sel] = (np.sqrt(chi2[sel]) - mu) / math.sqrt(k - mu * mu)
    return out.astype(np.float32)


def _bin(img: np.ndarray, max_side: int = 2000) -> np.ndarray:
    f = max(1, math.ceil(max(img.shape) / max_side))
    if f == 1:
        return img
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))


def _apcorr(cat: np.ndarray, spread_max: float) -> float | None:
    pointlike = np.abs(cat["SPREAD_MODEL"]) < spread_max
    bright = (cat["FLAGS"] == 0) & pointlike & (cat["SNR_WIN"] > 20) & (cat["MAG_PSF"] < 90) & \
        (cat["MAG_APER"][:, -1] < 90)
    if bright.sum() < 3:
        return None
    return float(np.median(cat["MAG_APER"][:, -1][bright] - cat["MAG_PSF"][bright]))


#: Diameters (pixels) of SExtractor's PHOT_APERTURES (the defaults of :func:`sextractor_args`).
_APERTURES = (7.0, 12.0, 20.0)


def _plot_spread_model(cat: np.ndarray, dzp: float, star_max: float, path: Path, title: str) -> Path:
    """SPREAD_MODEL against calibrated MAG_AUTO, with the star/galaxy cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = cat["MAG_AUTO"] < 90
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        ax.plot(cat["MAG_AUTO"][ok] + dzp, cat["SPREAD_MODEL"][ok], ".", ms=3, color="C0", rasterized=True)
        ax.axhspan(-star_max, star_max, color="C3", alpha=0.15, label=f"|SPREAD_MODEL| < {star_max:g}: stars")
        ax.set_ylim(-0.02, 0.06)
        ax.set_xlabel("MAG_AUTO (calibrated)")
        ax.set_ylabel("SPREAD_MODEL")
        ax.set_title(f"{title}: {int(ok.sum())} objects", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path


def _moffat_to_total(beta: float | None, fwhm_px: float) -> float:
    """Magnitude correction from the largest aperture to total flux for a Moffat PSF (0 without beta).

    The flux of a Moffat inside radius R is ``1 - (1 + R^2/alpha^2)^(1-beta)``: with beta 2.5
    and a 4.5-pixel FWHM, 5% of the light falls outside a 20-pixel aperture.
    """
    if beta is None or beta <= 1:
        return 0.0
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r = max(_APERTURES) / 2.0
    inside = 1.0 - (1.0 + (r / alpha) ** 2) ** (1.0 - beta)
    return float(2.5 * math.log10(inside))


def _write_catalog(src: Path, dst: Path, dzp: float, apcorr: float, magzero: float) -> Path:
    """The dual-image catalog with calibrated magnitudes: ``dzp`` added to every MAG_*, ``apcorr`` to MAG_PSF."""
    from astropy.io import fits as afits

    with afits.open(src) as hdul:
        for hdu in hdul:
            if hdu.name != "LDAC_OBJECTS":
                continue
            for col in hdu.columns.names:
                if col.startswith("MAG_") and len(hdu.data):
                    m = hdu.data[col]
                    ok = m < 90
                    m[ok] = m[ok] + dzp + (apcorr if col == "MAG_PSF" else 0.0)
            hdu.header["MAGZERO"] = (magzero + dzp, "[mag] calibrated zeropoint")
            hdu.header["DZP"] = (dzp, "[mag] locus correction in MAG_*")
            hdu.header["APCORR"] = (apcorr, "[mag] aperture corr. in MAG_PSF")
        tmp = dst.with_name(f".{dst.name}.part")
        hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, dst)
    return dst


def _read_refcat_j(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


#: Truth objects are scored where every detection band's coadd weight is at least this fraction of its median.
COVERAGE_WEIGHT_FRACTION = 0.1


def _covered(weights: Sequence[np.ndarray], fraction: float = COVERAGE_WEIGHT_FRACTION) -> np.ndarray:
    """Pixels with data in every band: weight >= ``fraction`` x the median positive weight.

    SWarp's resampling leaves weights of 1e-6 to 1e-3 of the median beyond the inputs' edges
    (30% of the weight > 0 pixels of a simulated demo tile): no object is found there, so a
    truth object there is not counted as missed.
    """
    out = np.ones(weights[0].shape, bool)
    for w in weights:
        pos = w[w > 0]
        out &= (w >= fraction * float(np.median(pos))) if pos.size else False
    return out


def _score_against_truth(
    truth: str | os.PathLike[str],
    tile: Tile,
    footprint: np.ndarray,
    cats: Mapping[str, np.ndarray],
    dzp: Mapping[str, float],
    *,
    absolute: bool,
    radius_arcsec: float,
    bin_mag: float,
    star_max: float,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each band's dual-image catalog against a truth catalogue, by magnitude.

    Truth objects count where ``footprint`` (on the tile grid, :func:`_covered`) is true at
    their pixel. Measured magnitudes are ``MAG_AUTO + dzp``; without an absolute anchor they
    are put on the truth scale by the median offset of matched objects (``mag_offset`` in
    the result). Bins of ``bin_mag`` span the band's truth magnitudes.

    Returns
    -------
    results : dict band -> :class:`cosmodm_ops.qa.completeness.CompletenessResult`
    notes : dict band -> str
        Why a band was not scored.
    """
    from cosmodm_ops.qa.completeness import completeness_purity, read_truth

    try:
        tcat = read_truth(truth)
    except ValueError as err:
        raise CoaddBadInput(str(err)) from err
    x, y = tile.wcs().all_world2pix(tcat.ra, tcat.dec, 0)
    xi = np.round(np.nan_to_num(x, nan=-1.0)).astype(int)
    yi = np.round(np.nan_to_num(y, nan=-1.0)).astype(int)
    ny, nx = footprint.shape
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    inside[inside] = footprint[yi[inside], xi[inside]]
    tin = tcat.subset(inside)
    results: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for b, cat in cats.items():
        m = tin.mags.get(b.lower())
        if m is None:
            notes[b] = f"{truth}: no mag_{b} column"
            continue
        ok = np.isfinite(m)
        if not ok.any():
            notes[b] = f"{truth}: no truth object with mag_{b} inside the tile's coverage"
            continue
        lo = math.floor(float(m[ok].min()) / bin_mag) * bin_mag
        nbins = max(1, math.ceil((float(m[ok].max()) - lo) / bin_mag + 1e-9))
        edges = lo + bin_mag * np.arange(nbins + 1)
        mag = np.asarray(cat["MAG_AUTO"], float)
        mag = np.where(mag < 90, mag + dzp[b], np.nan)
        results[b] = completeness_purity(
            cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], mag, tin.ra[ok], tin.dec[ok], m[ok], edges=edges,
            radius_arcsec=radius_arcsec, true_is_star=None if tin.is_star is None else tin.is_star[ok],
            spread_model=cat["SPREAD_MODEL"], star_max=star_max, align_mags=not absolute)
        log.info("tile %s band %s vs truth: %d of %d matched, completeness 90%% at %s, 50%% at %s", tile.name, b,
                 results[b].n_matched, int(ok.sum()), results[b].mag90, results[b].mag50)
    return results, notes


def _completeness_tables(comp: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """Report tables: one summary row per band, then each band's bins."""
    if not comp:
        return []
    head = ["band", "90% complete (mag)", "50% complete (mag)", "truth objects", "matched", "detections",
            "purity", "mag offset applied"]
    rows = [[b, r.mag90, r.mag50, int(r.n_true.sum()), r.n_matched, int(r.n_detected.sum()),
             float(r.n_detected_matched.sum() / max(1, r.n_detected.sum())), r.mag_offset] for b, r in comp.items()]
    tables = [("Completeness and purity against truth", head, rows)]
    for b, r in comp.items():
        cls = r.classification or {}
        body = [[f"{lo:.2f}-{hi:.2f}", int(nt), float(c), int(nd), float(p),
                 *(float(cls[k][i]) if k in cls else None for k in ("star_completeness", "star_purity"))]
                for i, (lo, hi, nt, c, nd, p) in enumerate(zip(r.edges[:-1], r.edges[1:], r.n_true, r.completeness,
                                                               r.n_detected, r.purity, strict=True))
                if nt or nd]
        tables.append((f"Band {b} by magnitude", ["mag", "truth", "completeness", "detections", "purity",
                                                  "star completeness", "star purity"], body))
    return tables


def calibrate_tile(
    tile: Tile,
    bands: Sequence[str],
    coadds: Sequence[str | os.PathLike[str]],
    cfg: Config,
    out: str | os.PathLike[str],
    *,
    refcat: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    truth: str | os.PathLike[str] | None = None,
) -> int:
    """Detection image, dual-image catalogs and the stellar-locus calibration of one tile.

    Stages (each logged with its time):

    1. **read**: every band's PSF-homogenized coadd and weight from the band jobs' folders
       (``coadds``: band folders, or their parent with ``<band>/``), checked against their manifests;
    2. **detection**: the CHI-MEAN image (:func:`chi_mean`) of ``coadd.detection_bands``
       (those present; all bands when none is);
    3. **psf**: SExtractor + PSFEx on each band's homogenized coadd (the model for MAG_PSF and
       SPREAD_MODEL);
    4. **catalogs**: SExtractor in dual-image mode (detection image, band image) per band;
    5. **locus**: stars (SPREAD_MODEL and S/N cuts in the first detection band, good in g, r, i, z),
       MAG_PSF with each band's aperture correction, J from ``refcat`` (``mag_J``) when
       given, :func:`cosmodm_ops.coadd.locus.fit_locus`; per band ``ZP = coadd.magzero + dzp``;
    6. **completeness** (with ``truth``, simulations only): each band's catalog scored against
       the truth catalogue (:func:`_score_against_truth`): completeness and purity by magnitude,
       the 90% and 50% completeness magnitudes, SPREAD_MODEL classification;
    7. **products**: calibrated catalogs (every MAG_* + dzp), the detection image, the locus,
       SPREAD_MODEL, completeness and pseudo-colour plots in an HTML report, ``qa.json``,
       ``manifest.json``.

    Without g, r, i and z (or with too few stars) there is no locus fit: the catalogs keep
    the relative zeropoint ``coadd.magzero`` and the QA says why.

    Returns
    -------
    int
        0 (QA verdicts are in qa.json).
    """
    from cosmodm_ops.astromatic import psfex_args, read_ldac, run_tool, sextractor_args
    from cosmodm_ops.coadd.locus import LocusError, fit_locus, match_reference, plot_locus
    from cosmodm_ops.coadd.swarp import color_png
    from cosmodm_ops.fits import write_image

    label = f"calibrate {tile.name}"
    bands = list(dict.fromkeys(bands))
    start_iso = _now()
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(label)
    co = cfg.coadd
    se = cfg.single_epoch
    with stage("read"):
        found = _band_coadds([Path(c) for c in coadds], bands, tile.name)
    det_bands = [b for b in co.detection_bands if b in found] or list(bands)
    log.info("%s: bands %s, detection from %s", label, ",".join(bands), "+".join(det_bands))
    # scratch: per band image, weight and flag plain (12 bytes a pixel), the detection image and its weight
    root = _scratch_root(workdir or cfg.site.ramdisk.path, (12 * len(bands) + 8) * tile.npix**2,
                         cfg.site.ramdisk.max_fraction, out)
    with _workdir(root, f"calibrate-{tile.name}") as work:
        plain: dict[str, dict[str, Path]] = {}
        arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        header = None
        fwhm_px: dict[str, float] = {}
        satur: dict[str, float] = {}
        psf_beta: dict[str, float | None] = {}
        with stage("decompress"):
            for b in bands:
                img, hdr = _read_image(found[b].image)
                wt, _ = _read_image(found[b].weight)
                if header is None:
                    header = hdr
                elif img.shape != arrays[bands[0]][0].shape:
                    msg = f"tile {tile.name}: coadd of band {b} has shape {img.shape}, band {bands[0]} " \
                          f"{arrays[bands[0]][0].shape}: not the same tile grid"
                    raise CoaddBadInput(msg)
                arrays[b] = (img, wt)
                # no saturation on a coadd (SExtractor refuses 1e30): ten times the brightest pixel
                satur[b] = float(max(10.0 * np.nanmax(img[wt > 0]) if (wt > 0).any() else 0.0, 1e6))
                fwhm_px[b] = float(hdr.get("PSF_FWHM", 1.0)) / tile.pixel_scale
                psf_beta[b] = float(hdr["PSF_BETA"]) if "PSF_BETA" in hdr else None
                plain[b] = {"image": _write_plain(work / f"{b}.fits", img, hdr),
                            "weight": _write_plain(work / f"{b}.weight.fits", wt, hdr),
                            "flag": _write_plain(work / f"{b}.flag.fits", (wt <= 0), hdr, np.int32)}
        with stage("detection"):
            det = chi_mean([arrays[b][0] for b in det_bands], [arrays[b][1] for b in det_bands])
            det_w = np.ones(det.shape, np.float32)
            for b in det_bands:
                det_w[arrays[b][1] <= 0] = 0.0
            det_p = _write_plain(work / "det.fits", det, header)
            det_wp = _write_plain(work / "det.weight.fits", det_w, header)
        psfs: dict[str, Path] = {}
        with stage("psf"):
            for b in bands:
                cat1 = work / f"{b}.pass1.ldac"
                run_tool("sextractor", sextractor_args(
                    plain[b]["image"], cat1, weight=plain[b]["weight"], flag=plain[b]["flag"],
                    params="single_epoch_pass1.param", gain=0.0, saturate=satur[b], pixel_scale=tile.pixel_scale,
                    seeing_arcsec=fwhm_px[b] * tile.pixel_scale, detect_thresh=se.detect_thresh,
                    detect_minarea=se.detect_minarea, mag_zeropoint=co.magzero), cwd=work)
                n_cand = len(read_ldac(cat1, columns=["FLAGS"]))
                degrees = se.psfvar_degrees if n_cand >= 200 else 0
                run_tool("psfex", psfex_args(cat1, psf_size=se.psf_size, psfvar_degrees=degrees, outdir=work),
                         cwd=work)
                psfs[b] = work / f"{b}.pass1.psf"
                if not psfs[b].exists():
                    msg = f"tile {tile.name} band {b}: PSFEx wrote no model (too few stars on the coadd?)"
                    raise CoaddBadInput(msg)
        cats: dict[str, np.ndarray] = {}
        raw_cats: dict[str, Path] = {}
        with stage("catalogs"):
            for b in bands:
                cat = work / f"{b}.dual.ldac"
                run_tool("sextractor", sextractor_args(
                    f"{det_p},{plain[b]['image']}", cat, weight=f"{det_wp},{plain[b]['weight']}",
                    flag=plain[b]["flag"], params=se.sextractor_params, psf=psfs[b], gain=0.0, saturate=satur[b],
                    pixel_scale=tile.pixel_scale, seeing_arcsec=fwhm_px[b] * tile.pixel_scale,
                    detect_thresh=se.detect_thresh, detect_minarea=se.detect_minarea, mag_zeropoint=co.magzero,
                    extra={"WEIGHT_TYPE": "MAP_WEIGHT,MAP_WEIGHT"}), cwd=work)
                cats[b] = read_ldac(cat)
                raw_cats[b] = cat
            sizes = {b: len(c) for b, c in cats.items()}
            if len(set(sizes.values())) != 1:
                msg = f"tile {tile.name}: dual-image catalogs differ in length {sizes}: detection image mismatch"
                raise CoaddBadInput(msg)
        # 5. stellar locus
        loc_res = None
        locus_reason = None
        # MAG_PSF -> the largest aperture (measured on the stars) -> total (the homogenized PSF is a known Moffat)
        apcorr = {b: (_apcorr(cats[b], se.spread_model_star_max) or 0.0) + _moffat_to_total(psf_beta[b], fwhm_px[b])
                  for b in bands}
        dzp = dict.fromkeys(bands, 0.0)
        n_with_j = 0
        with stage("locus"):
            griz = ("g", "r", "i", "z")
            if not all(b in cats for b in griz):
                locus_reason = f"stellar-locus fit needs g, r, i and z; have {','.join(bands)}"
            else:
                ref = cats[det_bands[0]] if det_bands[0] in cats else cats["r"]
                star = (np.abs(ref["SPREAD_MODEL"]) < se.spread_model_star_max) & \
                    (1.0857 / np.maximum(ref["MAGERR_PSF"], 1e-6) >= co.star_snr_min)
                for b in griz:
                    star &= (cats[b]["MAG_PSF"] < 90) & (cats[b]["FLAGS"] <= 3)
                mags = {b: cats[b]["MAG_PSF"][star].astype(float) + apcorr[b] for b in griz}
                errs = {b: np.maximum(cats[b]["MAGERR_PSF"][star].astype(float), 0.005) for b in griz}
                ra = ref["ALPHAWIN_J2000"][star].astype(float)
                dec = ref["DELTAWIN_J2000"][star].astype(float)
                if refcat is not None:
                    refj = _read_refcat_j(refcat)
                    if refj is None:
                        locus_reason = f"{refcat}: no mag_J column: calibration relative to r only"
                    else:
                        mags["J"] = match_reference(ra, dec, *refj, radius_arcsec=co.match_radius_arcsec)
                        errs["J"] = np.full(len(ra), 0.03)
                        n_with_j = int(np.isfinite(mags["J"]).sum())
                try:
                    loc_res = fit_locus(mags, errs, anchor="J")
                except LocusError as err:
                    locus_reason = f"no stellar-locus fit: {err}"
                else:
                    dzp.update(loc_res.zeropoints)
                    if not loc_res.absolute and locus_reason is None:
                        locus_reason = f"only {n_with_j} stars with J: zeropoints relative to r"
            if locus_reason:
                log.warning("%s: %s", label, locus_reason)
        zps = {b: co.magzero + dzp[b] for b in bands}
        comp: dict[str, Any] = {}
        comp_notes: dict[str, str] = {}
        if truth is not None:
            with stage("completeness"):
                comp, comp_notes = _score_against_truth(
                    truth, tile, _covered([arrays[b][1] for b in det_bands]), cats, dzp, absolute=loc_res is not None and loc_res.absolute,
                    radius_arcsec=co.match_radius_arcsec, bin_mag=cfg.qa.completeness_bin_mag,
                    star_max=se.spread_model_star_max)
        # 7. products
        with stage("products"):
            tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.COADD,
                        version=cfg.pipeline_version, kind=ProductKind.COADD_CATALOG, tile=tile.name, band=bands[0])
            products: list[ManifestProduct] = []
            for b in bands:
                dst = _write_catalog(raw_cats[b], out / f"{tile.name}_{b}_cat.fits", dzp[b], apcorr[b], co.magzero)
                products.append(_product(dst, out, ProductKind.COADD_CATALOG, tags.with_(band=b)))
            det_hdr = _plain_header(header)
            det_hdr["DETBANDS"] = ("+".join(det_bands), "bands of the CHI-MEAN image")
            det_out = write_image(out / f"{tile.name}_det_coadd.fits.fz", det, det_hdr, compress=True)
            products.append(_product(det_out, out, ProductKind.COADD, tags.with_(band="det")))
            plots: list[tuple[str, Path]] = []
            if loc_res is not None:
                plots.append(("Stellar locus after calibration", plot_locus(
                    loc_res, out / f"{tile.name}_locus.png", title=f"{tile.name}: stellar locus")))
            ref_band = det_bands[0] if det_bands[0] in cats else bands[0]
            plots.append((f"SPREAD_MODEL against MAG_AUTO ({ref_band})", _plot_spread_model(
                cats[ref_band], dzp[ref_band], se.spread_model_star_max, out / f"{tile.name}_spread_model.png",
                f"{tile.name} {ref_band}")))
            if comp:
                from cosmodm_ops.qa.completeness import plot_completeness

                plots.append(("Completeness and purity against truth", plot_completeness(
                    comp, out / f"{tile.name}_completeness.png",
                    f"{tile.name}: completeness (true mag) and purity (measured MAG_AUTO)")))
            rgb = [b for b in ("i", "r", "g") if b in arrays]
            if len(rgb) < 3:
                rgb = (list(reversed(bands)) * 3)[:3]
            flux = {b: _bin(arrays[b][0] * 10 ** (-0.4 * dzp[b])) for b in set(rgb)}
            png = color_png(flux[rgb[0]], flux[rgb[1]], flux[rgb[2]], out / f"{tile.name}_color.png")
            plots.append((f"Pseudo-colour image ({', '.join(rgb)} as red, green, blue)", png))

    # QA
    with stage("qa"):
        checks: list[dict[str, Any]] = []
        if loc_res is not None:
            for plane, value in loc_res.scatter.items():
                checks.append(_check(f"locus_scatter_{plane.replace(' vs ', '_').replace('-', '')}", value,
                                     cfg.qa.max_locus_scatter_mag))
            checks.append(_check("n_locus_stars", float(loc_res.n_used), 20.0, upper=False))
            checks.append(_check("locus_absolute", float(loc_res.absolute), None, reason=locus_reason))
        else:
            checks.append(_check("n_locus_stars", None, 20.0, upper=False, reason=locus_reason))
        for b in bands:
            checks.append(_check(f"zeropoint_{b}", zps[b], None))
            checks.append(_check(f"n_objects_{b}", float(sizes[b]), None))
        for b in bands if truth is not None else ():
            res = comp.get(b)
            for level in ("mag90", "mag50"):
                checks.append(_check(f"completeness_{level}_{b}", getattr(res, level, None), None,
                                     reason=comp_notes.get(b)))
        summary: dict[str, Any] = {
            "tile": tile.name, "bands": ",".join(bands), "detection_bands": ",".join(det_bands),
            "n_objects": sizes[bands[0]], "magzero": co.magzero, "locus_reason": locus_reason,
            "locus_absolute": loc_res.absolute if loc_res is not None else False,
            "n_locus_stars": loc_res.n_used if loc_res is not None else 0, "n_with_j": n_with_j,
        }
        for b in bands:
            summary[f"zeropoint_{b}"] = zps[b]
            summary[f"dzp_{b}"] = dzp[b]
            summary[f"apcorr_{b}"] = apcorr[b]
            if loc_res is not None and b in loc_res.errors:
                summary[f"dzp_err_{b}"] = loc_res.errors[b]
        if loc_res is not None:
            summary.update({f"locus_scatter {k}": v for k, v in loc_res.scatter.items()})
        for b, res in comp.items():
            summary[f"completeness_mag90_{b}"] = res.mag90
            summary[f"completeness_mag50_{b}"] = res.mag50
        summary["verdict"] = "fail" if any(c["verdict"] == "fail" for c in checks) else "pass"
        qa_doc = {"tile": tile.name, "bands": bands, "summary": summary, "checks": checks,
                  "zeropoints": zps, "dzp": dzp, "apcorr": apcorr,
                  "locus": None if loc_res is None else {"zeropoints": loc_res.zeropoints, "errors": loc_res.errors,
                                                         "colour_shifts": loc_res.colour_shifts,
                                                         "scatter": loc_res.scatter, "absolute": loc_res.absolute,
                                                         "n_stars": loc_res.n_stars, "n_used": loc_res.n_used,
                                                         "n_with_j": loc_res.n_with_j,
                                                         "converged": loc_res.converged},
                  "truth": None if truth is None else str(truth),
                  "completeness": {b: res.to_dict() for b, res in comp.items()} if truth is not None else None,
                  "completeness_notes": comp_notes}
        qa_path = _write_json(out / "qa.json", qa_doc)
        report = _write_report(out / f"{tile.name}_report.html", f"Tile {tile.name}: catalogs and calibration",
                               summary, checks, plots,
                               [("Zeropoints", ["band", "zeropoint", "dzp", "aperture correction", "objects"],
                                 [[b, zps[b], dzp[b], apcorr[b], sizes[b]] for b in bands]),
                                *_completeness_tables(comp)])
        qa_tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.QA, version=cfg.pipeline_version,
                       kind=ProductKind.QA, tile=tile.name)
        products.append(_product(qa_path, out, ProductKind.QA, qa_tags))
        products.append(_product(report, out, ProductKind.REPORT, qa_tags))
    minputs = [i for b in bands for i in found[b].inputs]
    for role, extra in (("refcat", refcat), ("truth", truth)):
        if extra is not None:
            from cosmodm_ops.fits import file_sha256

            rp = Path(extra).resolve()
            minputs.append(ManifestInput(role=role, path=str(rp), sha256=file_sha256(rp), size=rp.stat().st_size))
    stage.timings["total"] = round(time.perf_counter() - t_start, 4)
    manifest = Manifest(
        job={"name": f"calibrate-{tile.name}", "site": cfg.site.name, "host": socket.gethostname(),
             "start": start_iso, "end": _now(), "state": "done", "exit_code": 0},
        tags={"survey": cfg.survey.name, "camera": cfg.camera.name, "stage": "coadd",
              "version": cfg.pipeline_version, "tile": tile.name, "band": None},  # QA rows: the tile, no band
        products=products, inputs=minputs, versions=_versions(), config_hash=config_hash(cfg),
        timings=dict(stage.timings),
        bytes={"read": int(sum(m.size for m in minputs)), "output": int(sum(p.size for p in products))},
    )
    write_manifest(manifest, out / "manifest.json")
    log.info("%s: done in %.1f s: zeropoints %s; QA %s", label, time.perf_counter() - t_start,
             ", ".join(f"{b} {zps[b]:.3f}" for b in bands), summary["verdict"])
    return 0
