"""The image-level follow-up of one candidate: PS1 warps -> target-centred tile -> coadds -> catalogues -> finder.

:func:`run_chain` (behind ``cosmodm clusters target --warps DIR``) does, for one candidate:

1. **tile**: a TAN tile centred on the candidate, ``tile_deg`` on a side (default 0.4 deg: the
   finder's 1 Mpc aperture is 0.04-0.15 deg at z 0.7-0.1, and its background comes from the tile
   outside ``min(1.5 R_ap, background_exclusion_max_deg = 0.14 deg)``; below z ~ 0.15 that cap
   puts cluster outskirts into the background and below z ~ 0.1 the aperture overfills the tile:
   a cost compromise, see README), at the warps' pixel scale;
2. **warps**: every ``*.wrp.<band>.*.fits`` under the warps folder whose footprint overlaps the
   tile, per band (:func:`find_warps`); a band with none is named in ``missing_bands``; no
   overlapping warp at all is ``status = no_warps``;
3. **decode** (:func:`cosmodm_ops.cameras.gpc1.read_warp`): asinh -> linear counts, variance ->
   inverse-variance weight, any mask bit -> weight 0; FLXSCALE to the common zeropoint
   ``coadd.magzero`` (30) from ``FPA.ZP + 2.5 log10 EXPTIME``;
4. **coadd** per band with SWarp (:func:`cosmodm_ops.coadd.swarp.run_swarp`, weighted, LANCZOS3;
   no PSF homogenization: MAG_DETMODEL colours come from a model fitted on the detection image,
   convolved with each band's own PSFEx model);
5. **catalogues** with the coadd code (:mod:`cosmodm_ops.coadd.detection` mean-S/N image of the
   detection bands, :func:`cosmodm_ops.coadd.catalogs.coadd_psf` PSFEx per band,
   :func:`~cosmodm_ops.coadd.catalogs.dual_image_catalog` MAG_AUTO, MAG_DETMODEL, SPREAD_MODEL),
   joined into the finder's table (:func:`join_catalogues`);
6. **finder** (:func:`cosmodm_ops.clusters.finder.run`) on the galaxies, the pseudo-colour PNG
   from the coadds, the richness-vs-z curve and the inspection picture.

Everything is written into ``DIR.tmp-<pid>`` and renamed to ``DIR`` at the end (an older ``DIR``
is moved aside to ``DIR.replaced-<pid>``, never deleted). ``result.json`` follows
``/work/wt/CLUSTERS-INTERFACE.md``; ``cpu_s`` counts this process and its children (SWarp,
SExtractor, PSFEx); ``timings`` splits it into coadd and catalogue + finder CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.clusters.finder import Candidate, ClusterResult, FinderConfig, Footprint

__all__ = ["ChainConfig", "WarpFile", "chain_config", "decode_warp", "find_in_tables", "find_warps", "join_catalogues", "run_chain"]

log = logging.getLogger(__name__)
BANDS = ("g", "r", "i", "z", "y")


@dataclass(frozen=True)
class ChainConfig:
    """Settings of the image chain (a YAML mapping of these keys; ``finder:`` holds FinderConfig keys)."""

    tile_deg: float = 0.4
    """Side of the target-centred tile (degrees)."""
    pixel_scale: float | None = None
    """Tile pixel scale (arcsec); None: the first warp's."""
    bands: tuple[str, ...] = BANDS
    detection_bands: tuple[str, ...] = ("r", "i")
    detect_thresh: float = 2.5
    """SExtractor DETECT_THRESH on the mean-S/N detection image (coadd default 1.5: many more faint objects to fit)."""
    psf_size: int = 15
    """PSFEx PSF_SIZE of the band coadds (model fitting costs about its square)."""
    keep_coadds: bool = True
    """Keep the band coadds (RICE-compressed) as products."""
    qa_plots: bool = False
    """Also the stellar-locus and SPREAD_MODEL plots of the coadd code (the bench's QA)."""
    finder: FinderConfig = field(default_factory=lambda: FinderConfig(background_exclusion_max_deg=0.14))


def chain_config(config: ChainConfig | Mapping[str, Any] | str | os.PathLike[str] | None) -> ChainConfig:
    """A ChainConfig from None (defaults), a mapping, or a YAML file of one."""
    if config is None or isinstance(config, ChainConfig):
        return config or ChainConfig()
    if not isinstance(config, Mapping):
        import yaml

        config = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    data = dict(config.get("chain", config))  # type: ignore[union-attr]
    known = {f.name for f in fields(ChainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        msg = f"clusters chain config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        raise ValueError(msg)
    finder = replace(ChainConfig().finder, **dict(data.pop("finder", {}) or {}))
    for key in ("bands", "detection_bands"):
        if key in data:
            data[key] = tuple(data[key])
    return ChainConfig(**data, finder=finder)


@dataclass(frozen=True)
class WarpFile:
    """One warp found under the warps folder: its image path, band and sky corners (deg, shape (4, 2))."""

    path: Path
    band: str
    corners: np.ndarray
    pixel_scale: float


def find_warps(folder: Path) -> list[WarpFile]:
    """Every PS1 warp image under ``folder`` (``*.wrp.<band>.<expid>.fits``; mask and variance are beside it)."""
    import fitsio

    from cosmodm_ops.coadd.imageio import pixel_scale, wcs_of

    out = []
    for p in sorted(folder.rglob("*.wrp.*.fits")):
        if p.name.endswith((".mask.fits", ".wt.fits")):
            continue
        hdr = fitsio.read_header(str(p))
        keys = {k: hdr[k] for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
                                    "CD2_1", "CD2_2", "NAXIS1", "NAXIS2") if k in hdr}
        w = wcs_of({**keys, "NAXIS": 2})
        nx, ny = int(hdr["NAXIS1"]), int(hdr["NAXIS2"])
        corners = np.column_stack(w.all_pix2world(np.array([0, nx - 1, nx - 1, 0]), np.array([0, 0, ny - 1, ny - 1]), 0))
        band = str(hdr.get("FPA.FILTERID", hdr.get("FILTER", "?"))).split(".")[0].strip()
        out.append(WarpFile(p, band, corners, pixel_scale(w)))
    return out


def _overlaps(warp: WarpFile, tile_wcs: Any, npix: int) -> bool:
    x, y = tile_wcs.all_world2pix(warp.corners[:, 0], warp.corners[:, 1], 0)
    return bool(x.max() >= 0 and x.min() <= npix - 1 and y.max() >= 0 and y.min() <= npix - 1)


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_chain(candidate: Candidate, out: str | os.PathLike[str], warps: str | os.PathLike[str],
              config: ChainConfig | Mapping[str, Any] | str | None = None) -> dict[str, Any]:
    """Process one candidate from its warps into ``out`` (see the module); returns the result.json dict."""
    cfg, out, warps = chain_config(config), Path(out), Path(warps)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=False)
    cpu0 = _cpu()
    result: dict[str, Any] = {"name": candidate.name, "status": "ok", "message": "", "z_phot": None, "z_err": None,
                              "richness": None, "significance": None, "detected": False, "bcg_ra": None,
                              "bcg_dec": None, "unused_colours": [], "missing_bands": [], "inputs": [],
                              "products": {}, "cpu_s": 0.0}
    try:
        _run(candidate, warps, cfg, tmp, result)
    except Exception as err:  # a science failure is reported in result.json, the traceback in the log
        log.exception("clusters chain %s failed", candidate.name)
        result["status"], result["message"] = "error", f"{type(err).__name__}: {err}"
    result["cpu_s"] = round(_cpu() - cpu0, 3)
    final = {k: str(out / Path(v).relative_to(tmp)) for k, v in result["products"].items()}
    result["products"] = final
    (tmp / "result.json").write_text(json.dumps(result, indent=1))
    if out.exists():
        out.rename(out.with_name(f"{out.name}.replaced-{os.getpid()}"))
    tmp.rename(out)
    return result


def _tile(candidate: Candidate, cfg: ChainConfig, scale: float):
    from cosmodm_ops.coadd.tiling import Tile

    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in candidate.name)
    return Tile(safe, candidate.ra, candidate.dec, cfg.tile_deg, scale, "target")


def _run(candidate: Candidate, warps: Path, cfg: ChainConfig, work: Path, result: dict[str, Any]) -> None:
    found = find_warps(warps) if warps.is_dir() else []
    if not found:
        result["status"], result["message"] = "no_warps", f"{warps}: no PS1 warp (*.wrp.<band>.*.fits) there"
        return
    tile = _tile(candidate, cfg, cfg.pixel_scale or found[0].pixel_scale)
    tw = tile.wcs()
    per_band = {b: [w for w in found if w.band == b and _overlaps(w, tw, tile.npix)] for b in cfg.bands}
    result["missing_bands"] = [b for b in cfg.bands if not per_band[b]]
    bands = [b for b in cfg.bands if per_band[b]]
    if not bands:
        result["status"] = "no_warps"
        result["message"] = (f"no warp under {warps} overlaps the {cfg.tile_deg} deg tile at RA {candidate.ra:.5f}, "
                             f"Dec {candidate.dec:.5f} in any of {','.join(cfg.bands)}")
        return
    result["inputs"] = [str(w.path.resolve()) for b in bands for w in per_band[b]]
    if result["missing_bands"]:
        result["message"] = f"no warps in band(s) {','.join(result['missing_bands'])}"
    cpu0 = _cpu()
    coadds = {b: _coadd_band(b, per_band[b], tile, work) for b in bands}
    cpu1 = _cpu()
    result["timings"] = {"coadd_cpu_s": round(cpu1 - cpu0, 3)}
    if not _covers(coadds, bands, tile, candidate):
        result["status"] = "no_coverage"
        result["message"] = "the warps overlap the tile but not the candidate's position (weight 0 there)"
        return
    from cosmodm_ops.clusters.catalogue_stage import band_catalogues

    cats, qa = band_catalogues(coadds, bands, cfg, tile, work)
    result["products"].update({f"catalog_{b}": str(p) for b, p in cats["paths"].items()})
    result["products"].update(qa)
    finder_result = find_in_tables(candidate, cats["tables"], cfg, result)
    result["timings"]["catalogue_finder_cpu_s"] = round(_cpu() - cpu1, 3)
    _pictures(finder_result, coadds, bands, tile, candidate, work, result)
    if cfg.keep_coadds:
        result["products"].update(_keep_coadds(coadds, work))
    _clean(work)


def _clean(work: Path) -> None:
    """Remove the intermediates (plain coadds, decoded warps, SWarp and PSFEx files): not products."""
    import shutil

    for p in work.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif p.name.endswith((".coadd.fits", ".coadd.weight.fits", ".psf")):
            p.unlink()


def decode_warp(path: Path, folder: Path) -> tuple[Path, Path, float]:
    """A PS1 warp decoded (:func:`cosmodm_ops.cameras.gpc1.read_warp`) into plain FITS in ``folder``:
    linear image and inverse-variance weight with the warp's WCS; returns their paths and its zeropoint."""
    from astropy.io import fits as afits

    from cosmodm_ops.cameras.gpc1 import read_warp

    warp = read_warp(path)
    hdr = afits.Header({k: warp.header[k] for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
                                                    "CD1_1", "CD1_2", "CD2_1", "CD2_2") if k in warp.header})
    stem = folder / path.name[: -len(".fits")]
    img, wt = Path(f"{stem}.lin.fits"), Path(f"{stem}.weight.fits")
    afits.PrimaryHDU(warp.image, hdr).writeto(img, overwrite=True)
    afits.PrimaryHDU(warp.weight, hdr).writeto(wt, overwrite=True)
    return img, wt, warp.magzero


def _coadd_band(band: str, warps: Sequence[WarpFile], tile: Any, work: Path) -> tuple[Path, Path]:
    """Decode the band's warps to linear counts + weight and SWarp them onto the tile (plain FITS)."""
    from astropy.io import fits as afits

    from cosmodm_ops.coadd.swarp import SwarpInput, flux_scales, run_swarp

    dec_dir = work / "warps"
    dec_dir.mkdir(exist_ok=True)
    inputs = []
    for w in warps:
        img, wt, magzero = decode_warp(w.path, dec_dir)
        inputs.append(SwarpInput(img, wt, float(flux_scales([magzero])[0])))
    res = run_swarp(tile, inputs, work / f"{band}.coadd.fits", work / f"{band}.coadd.weight.fits",
                    workdir=work / f"swarp-{band}", nthreads=1)
    for i in inputs:
        i.image.unlink()
        i.weight.unlink()
    with afits.open(res.image, mode="update") as hdul:
        hdul[0].header["FILTER"] = band
        hdul[0].header["MAGZERO"] = (30.0, "[mag] AB zeropoint of the pixel values")
    return res.image, res.weight


def _covers(coadds: Mapping[str, tuple[Path, Path]], bands: Sequence[str], tile: Any, cand: Candidate) -> bool:
    from cosmodm_ops.coadd.imageio import read_image

    x, y = tile.wcs().all_world2pix([cand.ra], [cand.dec], 0)
    ix, iy = round(float(x[0])), round(float(y[0]))
    if not (0 <= ix < tile.npix and 0 <= iy < tile.npix):
        return False
    return any(read_image(coadds[b][1])[0][iy, ix] > 0 for b in bands)


def _keep_coadds(coadds: Mapping[str, tuple[Path, Path]], work: Path) -> dict[str, str]:
    import fitsio

    from cosmodm_ops.fits import write_image

    out = {}
    for b, (img, _wt) in coadds.items():
        data, header = fitsio.read(str(img), header=True)
        out[f"coadd_{b}"] = str(write_image(work / f"coadd_{b}.fits.fz", data, header, compress=True))
    return out


def join_catalogues(tables: Mapping[str, np.ndarray], ref_band: str = "i") -> np.ndarray:
    """The finder's table from the chain's dual-image catalogues: windowed positions and FLAGS
    (:func:`cosmodm_ops.clusters.catalog.join_dual_image`)."""
    from cosmodm_ops.clusters.catalog import join_dual_image

    return join_dual_image(tables, ref_band, position=("ALPHAWIN_J2000", "DELTAWIN_J2000"), flags=True)


def find_in_tables(candidate: Candidate, tables: Mapping[str, np.ndarray], cfg: ChainConfig,
                   result: dict[str, Any]) -> ClusterResult:
    """The finder step of the chain on the dual-image catalogues ``tables`` (band -> LDAC_OBJECTS table):
    join, galaxies (:func:`~cosmodm_ops.clusters.finder.select_galaxies`), :func:`~cosmodm_ops.clusters.finder.run`;
    ``result`` (the result.json dict) gets the finder's figures. Also what ``bench clusters --rescore`` runs on saved catalogues."""
    from cosmodm_ops.clusters.catalog import footprint_of
    from cosmodm_ops.clusters.finder import run, select_galaxies, usable_colours

    catalog = join_catalogues(tables)
    if "mag_auto_i" not in (catalog.dtype.names or ()):
        _, missing = usable_colours(catalog.dtype.names or [])
        fr = ClusterResult(candidate.name, candidate.ra, candidate.dec, "error",
                           message="no i band: the finder's magnitudes and galaxy selection need i",
                           unused_colours=missing)
    else:
        galaxies = catalog[select_galaxies(catalog, cfg.finder)]
        fp = footprint_of(catalog)
        fr = run(candidate, galaxies, Footprint(fp.ra_min, fp.ra_max, fp.dec_min, fp.dec_max), cfg.finder)
        fr.galaxies = galaxies  # type: ignore[attr-defined]  # for the inspection picture's members
    status = fr.status if fr.status in ("ok", "no_coverage") else "error"
    result.update({"status": status, "message": "; ".join(m for m in (result["message"], fr.message) if m),
                   "z_phot": _num(fr.z_phot), "z_err": _num(fr.z_err), "richness": _num(fr.richness),
                   "significance": _num(fr.significance), "detected": bool(fr.detected),
                   "bcg_ra": _num(fr.bcg_ra), "bcg_dec": _num(fr.bcg_dec), "unused_colours": fr.unused_colours,
                   "n_objects": len(catalog)})
    return fr


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _pictures(fr: ClusterResult, coadds: Mapping[str, tuple[Path, Path]], bands: Sequence[str], tile: Any,
              candidate: Candidate, work: Path, result: dict[str, Any]) -> None:
    """curve.png (status ok), pseudocolour.png (three bands), inspection.png (both)."""
    from cosmodm_ops.clusters.inspection import inspection_png, member_pixels
    from cosmodm_ops.clusters.plots import plot_curve
    from cosmodm_ops.coadd.imageio import read_image
    from cosmodm_ops.qa.pseudocolour import lupton_rgb, pick_bands

    if fr.status == "ok":
        result["products"]["curve"] = str(plot_curve(fr, work / "curve.png"))
    rgb_bands = pick_bands(bands)
    if rgb_bands is None:
        return
    from matplotlib.image import imsave

    chans = []
    for b in rgb_bands:
        img, _ = read_image(coadds[b][0])
        wt, _ = read_image(coadds[b][1])
        chans.append(np.where(wt > 0, img, np.nan))
    rgb = lupton_rgb(*chans)
    imsave(work / "pseudocolour.png", rgb, format="png")
    result["products"]["pseudocolour"] = str(work / "pseudocolour.png")
    if fr.status == "ok":
        gal = getattr(fr, "galaxies", None)
        mem = gal[fr.member_index] if gal is not None else np.zeros(0, dtype=[("ra", "f8"), ("dec", "f8")])
        overlay = member_pixels(tile.wcs(), rgb.shape[0], mem["ra"], mem["dec"], (fr.bcg_ra, fr.bcg_dec),
                                (candidate.ra, candidate.dec))
        result["products"]["inspection"] = str(inspection_png(rgb, overlay, fr, work / "inspection.png"))
