"""The single-epoch exposure runner: one batch job, one exposure.

``run_exposure(...)`` stages the inputs into the RAM disk, runs phase A (per CCD, in
``jobs`` worker processes), SCAMP once over the exposure, phase C (per CCD), then
writes ``manifest.json`` and ``qa.json`` into the output folder and returns the exit
code (0 done, 3 done with failed CCDs). Bad input raises
:class:`~cosmodm_ops.single_epoch.inputs.BadInputError` (exit 65), transient trouble
(RAM disk full, I/O errors) raises ``OSError`` (exit 75). The RAM-disk folder is
removed on every path out (``Staging`` context manager).

Re-runs: a CCD whose products in an existing ``manifest.json`` (same config hash)
still exist with the recorded sha256 is not redone; its products and QA entry are
carried over.

Memory: each worker holds about one CCD (image, weight, mask, float32) plus the
tools' memory, roughly 0.4 GB for a 2k x 4k CCD; the parent holds only small
dicts. Peak memory is about ``jobs x 0.4 GB`` plus the reference catalog.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits as afits

from cosmodm_ops import fits as cfits
from cosmodm_ops.astromatic import ToolError, scamp_args, write_reference_ldac
from cosmodm_ops.common import jsonable as _jsonable
from cosmodm_ops.common import versions as _versions
from cosmodm_ops.config import Config, config_hash
from cosmodm_ops.manifest import (
    Manifest,
    ManifestInput,
    ManifestProduct,
    UnitStatus,
    read_manifest,
    write_manifest,
)
from cosmodm_ops.model import ProductKind, Stage, Tags
from cosmodm_ops.qa.checks import ccd_checks, exposure_checks, exposure_summary
from cosmodm_ops.single_epoch.accounting import StageClock, cpu_block, merge_records, tree_cpu
from cosmodm_ops.single_epoch.ccd import finish_ccd, prepare_ccd
from cosmodm_ops.single_epoch.inputs import (
    BadInputError,
    ExposureInfo,
    exposure_info,
    image_hdus,
    read_refcat,
)

__all__ = ["MIN_SCAMP_REF_STARS", "run_exposure"]

log = logging.getLogger(__name__)

#: Fewer reference stars than this in the exposure's footprint: SCAMP is not run, the input WCS is kept.
MIN_SCAMP_REF_STARS = 20
#: Fewer point-source candidates than this on a CCD: PSFEx is not run and the CCD fails.
MIN_PSF_STARS = 5


def _map(func: Callable[..., dict[str, Any]], items: list[tuple[Any, ...]], jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1 or len(items) <= 1:
        return [func(*it) for it in items]
    with cf.ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(func, *zip(*items, strict=True)))


def _footprint_refs(ref: dict[str, Any], prep_ok: list[dict[str, Any]], margin_deg: float = 0.01) -> np.ndarray:
    """Boolean selection of reference stars inside the CCDs' footprints (WCS corners + margin)."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    inside = np.zeros(len(ref["ra"]), bool)
    for p in prep_ok:
        hdr = afits.Header.fromstring(p["header"], sep="\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(hdr)
        ny, nx = int(p["shape"][0]), int(p["shape"][1])
        corners = w.all_pix2world([[0, 0], [nx, 0], [0, ny], [nx, ny]], 0)
        ra_c = corners[:, 0]
        dra = ((ref["ra"] - ra_c.mean() + 180) % 360) - 180
        half = ((ra_c - ra_c.mean() + 180) % 360 - 180)
        cosd = np.cos(np.deg2rad(corners[:, 1].mean()))
        inside |= (dra >= half.min() - margin_deg / cosd) & (dra <= half.max() + margin_deg / cosd) & \
            (ref["dec"] >= corners[:, 1].min() - margin_deg) & (ref["dec"] <= corners[:, 1].max() + margin_deg)
    return inside


def _tags(cfg: Config, info: ExposureInfo, kind: str, ccd: int | None) -> dict[str, Any]:
    return Tags(survey=cfg.survey.name, camera=info.camera, stage=Stage.SINGLE_EPOCH, version=cfg.pipeline_version,
                kind=ProductKind(kind), night=info.night, expnum=info.expnum, ccd=ccd, band=info.band).to_dict()


def _carry_over(outdir: Path, chash: str) -> tuple[dict[int, list[ManifestProduct]], dict[int, dict[str, Any]]]:
    """Products and QA entries of CCDs that an earlier run of the same config finished and that are intact."""
    mpath, qpath = outdir / "manifest.json", outdir / "qa.json"
    if not mpath.exists() or not qpath.exists():
        return {}, {}
    try:
        old = read_manifest(mpath)
        qa = json.loads(qpath.read_text())
    except (ValueError, OSError):
        return {}, {}
    if old.config_hash != chash:
        return {}, {}
    ok_ccds = {u.ccd for u in old.units if u.state == "ok" and u.ccd is not None}
    products: dict[int, list[ManifestProduct]] = {}
    for p in old.products:
        ccd = p.tags.get("ccd")
        if ccd in ok_ccds:
            products.setdefault(ccd, []).append(p)
    good: dict[int, list[ManifestProduct]] = {}
    for ccd, plist in products.items():
        if all((outdir / p.path).exists() and cfits.file_sha256(outdir / p.path) == p.sha256 for p in plist):
            good[ccd] = plist
    entries = {e["ccd"]: e for e in qa.get("ccds", []) if e.get("ccd") in good}
    return {c: good[c] for c in entries}, entries


def run_exposure(
    *,
    cfg: Config,
    outdir: str | os.PathLike[str],
    refcat: str | os.PathLike[str],
    detrended: tuple[str, str, str] | None = None,
    raw: str | None = None,
    calib: str | None = None,
    workdir: str | None = None,
    jobs: int | None = None,
) -> int:
    """Run the single-epoch pipeline for one exposure; returns the exit code (0 or 3).

    Parameters
    ----------
    cfg : Config
        Merged configuration (survey, camera, site, qa, single_epoch).
    outdir : path
        Output folder (products, manifest.json, qa.json).
    refcat : path
        Reference catalog (FITS table: ra, dec, ra_error, dec_error [mas], phot_g_mean_mag or mag_<band>).
    detrended : (image, weight, mask), optional
        Already-detrended input (DECam CP InstCal style: ADU with GAINA/GAINB, or electrons).
    raw, calib : path, optional
        Raw exposure and calibration folder (raw path).
    workdir : path, optional
        Parent of the RAM-disk folder (default ``site.ramdisk.path``).
    jobs : int, optional
        Worker processes (default: the machine's cores).
    """
    t_start, cpu_start = time.perf_counter(), tree_cpu()
    clock = StageClock()  # the parent's own stages; workers bring their own records
    records: list[dict[str, Any]] = []
    start_iso = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    timings: dict[str, float] = {}
    se = cfg.single_epoch
    chash = config_hash(cfg)

    # --- inputs (bad input stops here, before any work) ---
    with clock.stage("read_inputs"):
        inputs: list[tuple[str, str]] = []
        if detrended is not None:
            image, weight, mask = detrended
            hdus = image_hdus(image)
            whdus, mhdus = image_hdus(weight), image_hdus(mask)
            if len(whdus) != len(hdus) or len(mhdus) != len(hdus):
                msg = f"{weight} / {mask}: {len(whdus)} / {len(mhdus)} image HDUs, but {image} has {len(hdus)}"
                raise BadInputError(msg)
            primary = afits.getheader(image, 0)
            first = afits.getheader(image, hdus[0][0])
            info = exposure_info(primary, image, first)
            inputs += [("image", image), ("weight", weight), ("mask", mask)]
            source = image
        elif raw is not None:
            from cosmodm_ops.single_epoch.raw import raw_exposure_plan

            hdus, info, primary, calib_inputs = raw_exposure_plan(raw, calib, cfg)
            inputs += [("raw", raw), *calib_inputs]
            source = raw
        else:
            msg = "give either --detrended IMAGE --weight W --mask M or --exposure RAW --calib DIR"
            raise BadInputError(msg)
        if info.camera != cfg.camera.name:
            log.warning("%s: camera %s differs from the configured camera %s", source, info.camera, cfg.camera.name)
        ref = read_refcat(refcat, band=info.band, mjd_obs=info.mjd_obs)
        inputs.append(("refcat", str(refcat)))

    carried_products, carried_qa = _carry_over(outdir, chash)
    stem = f"{cfg.survey.name}_{info.expnum:08d}_{info.band}"
    prim_text = afits.Header([c for c in primary.cards if c.keyword not in ("", "COMMENT")]).tostring(sep="\n")

    units: dict[int, UnitStatus] = {}
    ccd_values: dict[int, dict[str, Any]] = {}
    products: list[ManifestProduct] = []
    ccd_qa_extra: dict[int, dict[str, Any]] = {}
    exposure_reasons: dict[str, str] = {}
    root = workdir or cfg.site.ramdisk.path
    with cfits.Staging(job=f"se{info.expnum}", root=root, max_fraction=cfg.site.ramdisk.max_fraction) as stg:
        work = stg.path
        assert work is not None
        # 1. stage the inputs into the RAM disk (tile-compressed inputs are decompressed: SExtractor cannot read them)
        with clock.stage("stage"):
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

        base_spec = {
            "workdir": str(work), "outdir": str(outdir), "stem": stem, "kind": "detrended" if detrended else "raw",
            "detect_thresh": se.detect_thresh, "detect_minarea": se.detect_minarea, "psf_size": se.psf_size,
            "psfvar_degrees": se.psfvar_degrees, "min_psf_stars": MIN_PSF_STARS, "params": se.sextractor_params,
            "star_snr_min": se.star_snr_min, "spread_model_star_max": se.spread_model_star_max,
            "match_radius_arcsec": 1.0, "mag_zeropoint": 25.0, "exptime": info.exptime, "band": info.band,
            "ref_mag_system": ref["mag_system"], "primary_header": prim_text,
        }
        if detrended:
            base_spec.update(image=staged["image"], weight=staged["weight"], mask=staged["mask"])
        else:
            # the calibration files were staged with the raw file: workers read the RAM-disk copies
            base_spec.update(raw=staged["raw"], calib=calib, camera=cfg.camera.model_dump(mode="json"),
                             calib_files={role: staged[role] for role, _ in inputs if role in staged and role != "raw"})
        refnpz = work / "refcat.npz"
        np.savez(refnpz, **{k: v for k, v in ref.items() if isinstance(v, np.ndarray)})
        base_spec["refcat_npz"] = str(refnpz)

        specs = []
        for pos, (hdu, extname) in enumerate(hdus):
            ccd = _ccdnum(source, hdu, extname, pos)
            if ccd in carried_products:
                units[ccd] = UnitStatus(ccd=ccd, state="skipped", reason="outputs of an earlier run match the manifest")
                products += carried_products[ccd]
                continue
            spec = dict(base_spec, ccd=ccd, hdu=hdu, extname=extname, weight_hdu=hdu if detrended else None,
                        mask_hdu=hdu if detrended else None)
            if detrended:
                spec["weight_hdu"] = whdus[pos][0]
                spec["mask_hdu"] = mhdus[pos][0]
            specs.append(spec)

        # 2-4a. per CCD: ingest/detrend, SExtractor pass 1, PSFEx
        t0 = time.perf_counter()
        preps = _map(prepare_ccd, [(s,) for s in specs], jobs)
        timings["phase_a_wall"] = time.perf_counter() - t0
        for p in preps:
            records.append(p.pop("clock", {}))
            if "image" in p:
                import fitsio

                p["shape"] = fitsio.read_header(p["image"], 0)["NAXIS2"], fitsio.read_header(p["image"], 0)["NAXIS1"]
        prep_ok = [p for p in preps if "failed" not in p]

        # 4b. SCAMP once per exposure against the reference catalog
        heads: dict[int, str] = {}
        t0 = time.perf_counter()
        with clock.stage("astrometry"):
            if prep_ok:
                inside = _footprint_refs(ref, prep_ok)
                n_ref = int(inside.sum())
                if n_ref < MIN_SCAMP_REF_STARS:
                    exposure_reasons["astrometry"] = (
                        f"only {n_ref} reference stars in the footprint (< {MIN_SCAMP_REF_STARS}): SCAMP not run, "
                        "the input WCS is kept")
                else:
                    heads, reason = _run_scamp(work, prep_ok, ref, inside, info, cfg, clock)
                    if reason:
                        exposure_reasons["astrometry"] = reason
        timings["scamp"] = time.perf_counter() - t0

        # 4c-6. per CCD: pass 2, QA values, products
        t0 = time.perf_counter()
        items = []
        for p in prep_ok:
            spec = next(s for s in specs if s["ccd"] == p["ccd"])
            spec = dict(spec, scamp_head=heads.get(p["ccd"]))
            items.append((spec, p))
        results = _map(finish_ccd, items, jobs)
        timings["phase_c_wall"] = time.perf_counter() - t0

        for p in preps:
            if "failed" in p:
                units[p["ccd"]] = UnitStatus(ccd=p["ccd"], state="failed", reason=p["failed"])
                ccd_qa_extra[p["ccd"]] = {"ccd": p["ccd"], "state": "failed", "reason": p["failed"], "checks": []}
        for r in results:
            records.append(r.pop("clock", {}))
            if "failed" in r:
                units[r["ccd"]] = UnitStatus(ccd=r["ccd"], state="failed", reason=r["failed"])
                ccd_qa_extra[r["ccd"]] = {"ccd": r["ccd"], "state": "failed", "reason": r["failed"], "checks": []}
                continue
            units[r["ccd"]] = UnitStatus(ccd=r["ccd"], state="ok")
            ccd_values[r["ccd"]] = r["values"]
            with clock.stage("checksums"):
                for kind, path in r["products"]:
                    pth = Path(path)
                    products.append(ManifestProduct(kind=kind, tags=_tags(cfg, info, kind, r["ccd"]),
                                                    path=str(pth.relative_to(outdir)), sha256=cfits.file_sha256(pth),
                                                    size=pth.stat().st_size))
        # every file of the job's RAM-disk folder, measured before it is removed (nothing there is deleted earlier)
        ramdisk_bytes = _tree_bytes(work)

    # 5. QA
    qa_ccds: list[dict[str, Any]] = []
    for ccd in sorted(units):
        if ccd in carried_qa:
            qa_ccds.append(carried_qa[ccd])
        elif ccd in ccd_values:
            vals = dict(ccd_values[ccd])
            if "astrometry" in exposure_reasons and vals.get("astrom_rms_mas") is not None:
                vals.setdefault("astrom_note", exposure_reasons["astrometry"])
            qa_ccds.append({"ccd": ccd, "state": "ok", "values": _jsonable(vals),
                            "checks": ccd_checks(vals, cfg.qa)})
        else:
            qa_ccds.append(ccd_qa_extra[ccd])
    ok_values = [e.get("values", {}) for e in qa_ccds if e.get("state") == "ok"]
    nominal = cfg.survey.zeropoint_1s.get(info.band)
    summary = exposure_summary(ok_values, nominal_zp_1s=nominal, n_ccds_total=len(units))
    zp_reason = None
    if summary["zeropoint_1s"] is None:
        zp_reason = next((v.get("zeropoint_1s_reason") for v in ok_values if v.get("zeropoint_1s_reason")),
                         "no CCD measured a zeropoint")
    astrom_reason = exposure_reasons.get("astrometry")
    summary.update(expnum=info.expnum, band=info.band, night=info.night, camera=info.camera,
                   exptime=info.exptime, mjd_obs=info.mjd_obs,
                   astrometry="input WCS kept" if astrom_reason else "SCAMP", astrometry_reason=astrom_reason)
    checks = exposure_checks(summary, cfg.qa, zp_reason=zp_reason, astrom_reason=astrom_reason)
    summary["verdict"] = "fail" if any(c["verdict"] == "fail" for c in checks) else "pass"
    qa_doc = {"exposure": _jsonable(summary), "ccds": qa_ccds, "checks": checks}
    qa_path = outdir / "qa.json"
    tmp = qa_path.with_name(".qa.json.part")
    tmp.write_text(json.dumps(qa_doc, indent=2))
    os.replace(tmp, qa_path)
    products = [p for p in products if p.kind != "qa"]
    products.append(ManifestProduct(kind="qa", tags=_tags(cfg, info, "qa", None), path="qa.json",
                                    sha256=cfits.file_sha256(qa_path), size=qa_path.stat().st_size))

    # 6. manifest
    n_failed = sum(1 for u in units.values() if u.state == "failed")
    code = 3 if n_failed else 0
    with clock.stage("checksums"):
        manifest_inputs = [ManifestInput(role=role, path=str(Path(path).resolve()), sha256=cfits.file_sha256(path),
                                         size=Path(path).stat().st_size) for role, path in inputs]
    versions = _versions()
    merged = merge_records([*records, clock.record()])
    for k, v in merged["timings"].items():
        timings[k] = timings.get(k, 0.0) + v
    timings["total"] = time.perf_counter() - t_start
    # every worker pool is closed (its processes reaped), so the tree's CPU holds them and their tools
    cpu = cpu_block(tree_cpu() - cpu_start, merged)
    out_bytes = sum(p.size for p in products)
    manifest = Manifest(
        job={"name": f"single-epoch-{info.expnum}", "site": cfg.site.name, "host": socket.gethostname(),
             "start": start_iso, "end": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             "state": "partial" if n_failed else "done", "exit_code": code},
        tags={"survey": cfg.survey.name, "camera": info.camera, "stage": "single_epoch",
              "version": cfg.pipeline_version, "night": info.night, "expnum": info.expnum, "band": info.band},
        products=products,
        inputs=manifest_inputs,
        versions=versions,
        config_hash=chash,
        timings={k: round(v, 4) for k, v in timings.items()},
        bytes={"ramdisk": int(ramdisk_bytes), "output": int(out_bytes)},
        cpu=cpu,
        units=[units[c] for c in sorted(units)],
    )
    write_manifest(manifest, outdir / "manifest.json")
    return code


def _ccdnum(path: str, hdu: int, extname: str, pos: int) -> int:
    hdr = afits.getheader(path, hdu)
    if "CCDNUM" in hdr:
        return int(hdr["CCDNUM"])
    return pos + 1


def _run_scamp(work: Path, prep_ok: list[dict[str, Any]], ref: dict[str, Any], inside: np.ndarray,
               info: ExposureInfo, cfg: Config, clock: StageClock) -> tuple[dict[int, str], str | None]:
    """SCAMP over all CCDs of the exposure (one multi-extension LDAC); returns per-CCD .head paths."""
    refpath = work / "ref.ldac"
    epoch = 2000.0 + (info.mjd_obs - 51544.5) / 365.25
    mag = ref["mag"][inside] if ref["mag"] is not None else 18.0
    write_reference_ldac(refpath, ref["ra"][inside], ref["dec"][inside], ra_err_mas=ref["ra_err"][inside],
                         dec_err_mas=ref["dec_err"][inside], mag=mag, epoch=epoch)
    # one catalog per exposure: concatenate the CCDs' LDAC pairs (IMHEAD + OBJECTS) in CCD order, byte for
    # byte: a round trip through astropy pads the IMHEAD card strings with NULs, and SCAMP 2.10 segfaults on them
    order = []
    cat = work / f"exp{info.expnum}.ldac"
    with open(cat, "wb") as out:
        for n, p in enumerate(sorted(prep_ok, key=lambda q: q["ccd"])):
            with afits.open(p["pass1"]) as h:
                spans = [h.fileinfo(i) for i in range(len(h))]
            raw = Path(p["pass1"]).read_bytes()
            first = 0 if n == 0 else 1  # the primary HDU once, from the first catalog
            for info_i in spans[first:3]:
                assert info_i is not None
                out.write(raw[info_i["hdrLoc"]:info_i["datLoc"] + info_i["datSpan"]])
        order = [p["ccd"] for p in sorted(prep_ok, key=lambda q: q["ccd"])]
    try:
        clock.tool(None, "scamp", scamp_args([cat], refpath, distort_degrees=cfg.single_epoch.scamp_distort_degrees),
                   cwd=work)
    except ToolError as err:
        return {}, f"SCAMP failed ({str(err).splitlines()[0][:200]}): the input WCS is kept"
    head = work / f"exp{info.expnum}.head"
    if not head.exists():
        return {}, "SCAMP wrote no .head: the input WCS is kept"
    text = head.read_bytes().decode("utf-8", errors="replace").encode("ascii", errors="ignore").decode()
    blocks, cur = [], []
    for line in text.splitlines():
        cur.append(line)
        if line.strip() == "END":
            blocks.append("\n".join(cur) + "\n")
            cur = []
    out: dict[int, str] = {}
    for ccd, block in zip(order, blocks, strict=False):
        path = work / f"ccd{ccd:02d}.scamp.head"
        path.write_text(block)
        out[ccd] = str(path)
    return out, None



def _tree_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
