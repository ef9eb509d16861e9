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
   uncompressed into the work folder; the PSF FWHM before and after on a 3 x 3 grid of each image;
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

import base64
import datetime as dt
import html
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.tiling import Tile
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import astropy
    import fitsio

    import cosmodm_ops
    from cosmodm_ops.astromatic import tool_versions

    v = {k: str(val) for k, val in tool_versions().items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    v.update(cosmodm_ops=getattr(cosmodm_ops, "__version__", "0"), git_commit=commit, numpy=np.__version__,
             astropy=astropy.__version__, fitsio=fitsio.__version__)
    return v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_json(path: Path, doc: Any) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(_jsonable(doc), indent=2))
    os.replace(tmp, path)
    return path


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


def _write_plain(path: Path, data: np.ndarray, header: Any) -> Path:
    from astropy.io import fits as afits

    afits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32), header=_plain_header(header)).writeto(
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


def _embed(png: Path) -> str:
    return base64.b64encode(png.read_bytes()).decode("ascii")


def _write_report(path: Path, title: str, summary: Mapping[str, Any], checks: Sequence[Mapping[str, Any]],
                  figures: Sequence[tuple[str, Path]], tables: Sequence[tuple[str, list[str], list[list[Any]]]]
                  ) -> Path:
    """One self-contained HTML page: summary, checks, figures (embedded PNG) and tables."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return html.escape(f"{v:.4g}") if math.isfinite(v) else ""
        return html.escape("" if v is None else str(v))

    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{cell(v)}</td></tr>" for k, v in summary.items()
                   if isinstance(v, (int, float, str)) or v is None)
    chk = "".join(
        f"<tr class='{html.escape(str(c.get('verdict')))}'><td>{html.escape(str(c.get('name')))}</td>"
        f"<td>{cell(c.get('value'))}</td><td>{cell(c.get('threshold'))}</td>"
        f"<td>{html.escape(str(c.get('verdict')))}</td><td>{html.escape(str(c.get('reason') or ''))}</td></tr>"
        for c in checks)
    figs = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{_embed(p)}' alt='{html.escape(t)}'>"
                   for t, p in figures if p.exists())
    tabs = ""
    for t, head, body in tables:
        tabs += (f"<h2>{html.escape(t)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                 + "</tr>" + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in body)
                 + "</table>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} tr.fail{{background:#fdd}} img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>
<h2>Summary</h2><table>{rows}</table>
<h2>QA checks</h2><table><tr><th>check</th><th>value</th><th>threshold</th><th>verdict</th><th>reason</th></tr>{chk}</table>
{figs}{tabs}</body></html>
"""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _product(path: Path, out: Path, kind: ProductKind, tags: Tags,
             inputs: list[str] | None = None) -> ManifestProduct:
    from cosmodm_ops.fits import file_sha256

    t = tags.with_(kind=kind)
    return ManifestProduct(kind=kind.value, tags=t.to_dict(), path=str(path.relative_to(out)),
                           sha256=file_sha256(path), size=path.stat().st_size, inputs=inputs)


@contextmanager
def _workdir(root: str | os.PathLike[str] | None, label: str) -> Iterator[Path]:
    base = Path(root) if root else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}.", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
    from cosmodm_ops.coadd.psfhomog import cell_kernels, homogenize, moffat_psf, psf_at, psf_fwhm, read_psfex
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
        settings = photcal.PhotcalSettings.from_config(cfg, min_stars=co.min_stars_per_image)
        try:
            res = photcal.run(tables, settings, names)
        except photcal.PhotcalError as err:
            if n != 1:
                msg = f"tile {tile.name} band {band}: relative calibration impossible: {err}"
                raise CoaddBadInput(msg) from err
            photcal_note = f"one input image: nothing to calibrate against ({err})"
            zp = np.zeros(1)
            zp_err = np.zeros(1)
            passed = True
        else:
            zp, zp_err, rep, passed = res.zeropoints, res.errors, res.repeatability, res.passed
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
            model = read_psfex(inp.files["psf"].path)
            scale = _pixel_scale(w)
            fw = psf_fwhm(psf_at(model, (nx + 1) / 2.0, (ny + 1) / 2.0)) * scale
            info[i] = {"wcs": w, "shape": (ny, nx), "model": model, "scale": scale, "fwhm": fw}
        fwhm_in = np.array([info[i]["fwhm"] for i in used])
        target_arcsec = float(co.psf_target_scale * np.median(fwhm_in))
        log.info("%s: input PSF FWHM %.3f-%.3f arcsec (median %.3f); target Moffat FWHM %.3f arcsec, beta %g",
                 label, fwhm_in.min(), fwhm_in.max(), np.median(fwhm_in), target_arcsec, co.moffat_beta)

    root = workdir or cfg.site.ramdisk.path
    samples: list[dict[str, float]] = []
    with _workdir(root, f"coadd-{tile.name}-{band}") as work:
        # 4. sky and PSF homogenization of every used image
        homog: list[SwarpInput] = []
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
                h_img, h_wt = homogenize(np.where(good, img - sky, 0.0), wt, d["model"], target, cells=cells,
                                         kernels=kern)
                hi = _write_plain(work / f"h_{inp.name}.fits", h_img, hdr)
                hw = _write_plain(work / f"h_{inp.name}.weight.fits", h_wt, hdr)
                homog.append(SwarpInput(hi, hw, float(fscale[i])))
                samples += [dict(s, image=inp.name) for s in _psf_samples(d["model"], kern, d["wcs"], (ny, nx),
                                                                          d["scale"])]
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
                psfkeys = {"PSFHOMOG": (True, "PSF-homogenized"),
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
        before = np.array([s["before"] for s in samples]) if samples else np.array([np.nan])
        after = np.array([s["after"] for s in samples]) if samples else np.array([np.nan])
        spread_after = float((np.nanmax(after) - np.nanmin(after)) / np.nanmedian(after))
        spread_before = float((np.nanmax(before) - np.nanmin(before)) / np.nanmedian(before))
        rep_mmag = rep.bright_mmag if rep is not None else None
        checks = [
            _check("repeatability_mmag", rep_mmag, cfg.qa.repeatability_mmag,
                   reason=photcal_note if rep is None else (None if rep.n_bright_pairs else "no bright star pairs")),
            _check("n_images_used", float(len(used)), 1.0, upper=False),
            _check("n_images_removed", float(len(removed)), None),
            _check("psf_fwhm_target_arcsec", target_arcsec, None),
            _check("psf_fwhm_spread_before", spread_before, None),
            _check("psf_fwhm_spread_after", spread_after, None),
            _check("coverage_fraction", coverage, None),
        ]
        if rep is not None and not passed and rep.n_bright_pairs:
            checks[0]["reason"] = (f"still above the threshold after removing {len(removed)} image(s) "
                                   f"(limit {settings.max_removed_fraction:.0%} of the inputs)")
        summary = {
            "tile": tile.name, "band": band, "n_inputs": n, "n_used": len(used), "n_removed": len(removed),
            "n_skipped": len(skipped), "repeatability_mmag": rep_mmag,
            "repeatability_sys_mmag": rep.bright_sys_mmag if rep is not None else None,
            "n_bright_pairs": rep.n_bright_pairs if rep is not None else 0,
            "magzero": co.magzero, "psf_fwhm_target_arcsec": target_arcsec, "moffat_beta": co.moffat_beta,
            "psf_fwhm_in_median_arcsec": float(np.median(fwhm_in)), "psf_fwhm_in_min_arcsec": float(fwhm_in.min()),
            "psf_fwhm_in_max_arcsec": float(fwhm_in.max()),
            "psf_fwhm_after_median_arcsec": float(np.nanmedian(after)),
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
                  "removed": removed, "skipped": list(skipped), "psf_samples": samples}
        qa_path = _write_json(out / "qa.json", qa_doc)
        report = _write_report(
            out / f"{tile.name}_{band}_report.html", f"Coadd {tile.name} band {band}", summary, checks, plots,
            [("Input images", ["image", "zeropoint", "error", "flxscale", "FWHM (arcsec)", "sky", "used", "removed"],
              [[im["name"], im["zeropoint"], im["zeropoint_err"], im["flxscale"], im["fwhm_arcsec"], im["sky"],
                im["used"], im["removed"] or ""] for im in images]),
             ("Left out before the calibration", ["image", "reason"],
              [[s.get("name"), s.get("reason")] for s in skipped])])

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


def calibrate_tile(*args: Any, **kwargs: Any) -> int:  # pragma: no cover - replaced below
    raise NotImplementedError
