"""A small survey archive for the pages (tests, ``make ui`` without a demo state): real files, the real API.

Everything goes through :class:`cosmodm_ops.archive.Archive` (``register_raw``, ``register_manifest``,
``store``, ``quarantine``): the QA documents have the single-epoch runner's shape and verdicts from
:mod:`cosmodm_ops.qa.checks`, the previews come from :mod:`cosmodm_ops.qa.thumbnail_products`, and the
images are small FITS files. What it makes (``seed_archive`` returns it, so tests can compare):

- ``nights`` nights of decam-mini exposures in g and r; per night one exposure clouded over (its
  zeropoint deficit fails the gate: quarantined with the failed checks as reasons), one with a CCD
  that failed, and one whose processing never ran (raw only: ``failed``);
- two reprocessing campaigns (rows of the campaign tables) with items done, failed, running, skipped, planned;
- tiles of the demo-mini tiling: ``done`` (coadd + catalog, both bands), ``partial`` (coadd only),
  ``failed`` (a quarantined band), ``stale`` (an input image re-processed since), and empty ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.manifest import JobInfo, Manifest, ManifestInput, ManifestProduct, write_manifest
from cosmodm_ops.model import Tags

__all__ = ["seed_archive"]

SURVEY, CAMERA, VERSION = "demo", "decam-mini", "v1"


def _sha(path: Path) -> str:
    from cosmodm_ops.fits import file_sha256

    return file_sha256(path)


def _fits(path: Path, data: np.ndarray, header: dict[str, Any] | None = None) -> Path:
    import fitsio

    path.parent.mkdir(parents=True, exist_ok=True)
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(data.astype(np.float32), compress="RICE", qlevel=4, header=header)
    return path


def _tan(tile: Any, n: int) -> dict[str, Any]:
    """A TAN WCS of an ``n`` x ``n`` image centred on ``tile`` (what a real coadd carries)."""
    d = tile.pixel_scale / 3600.0
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": tile.ra, "CRVAL2": tile.dec,
            "CRPIX1": (n + 1) / 2, "CRPIX2": (n + 1) / 2, "CD1_1": -d, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": d}


def _ldac(path: Path, ra: np.ndarray, dec: np.ndarray, mag: np.ndarray) -> Path:
    import fitsio

    n = len(ra)
    data = np.zeros(n, dtype=[("NUMBER", "i4"), ("ALPHAWIN_J2000", "f8"), ("DELTAWIN_J2000", "f8"),
                              ("MAG_AUTO", "f4"), ("MAGERR_AUTO", "f4"), ("MAG_PSF", "f4"),
                              ("SPREAD_MODEL", "f4"), ("FLAGS", "i2")])
    data["NUMBER"] = np.arange(1, n + 1)
    data["ALPHAWIN_J2000"], data["DELTAWIN_J2000"], data["MAG_AUTO"] = ra, dec, mag
    data["MAGERR_AUTO"], data["MAG_PSF"], data["SPREAD_MODEL"] = 0.02, mag + 0.01, 0.001
    path.parent.mkdir(parents=True, exist_ok=True)
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(np.zeros(1, dtype=[("Field Header Card", "S80", (2,))]), extname="LDAC_IMHEAD")
        f.write(data, extname="LDAC_OBJECTS")
    return path


def _product(out: Path, path: Path, tags: dict[str, Any], inputs: list[str] | None = None) -> ManifestProduct:
    return ManifestProduct(kind=tags["kind"], tags=tags, path=str(path.relative_to(out)), sha256=_sha(path),
                           size=path.stat().st_size, inputs=inputs)


def _manifest(out: Path, products: list[ManifestProduct], inputs: list[tuple[str, Path]], name: str) -> Path:
    ins = [ManifestInput(role=role, path=str(p), sha256=_sha(p), size=p.stat().st_size) for role, p in inputs]
    m = Manifest(job=JobInfo(name=name, site="local", host="seed", start="2026-11-24T06:00:00+00:00",
                             end="2026-11-24T06:05:00+00:00"),
                 products=products, inputs=ins, versions={"cosmodm_ops": "seed"}, config_hash="seed",
                 bytes={"output": sum(p.size for p in products)})
    return write_manifest(m, out / "manifest.json")


def _exposure_job(work: Path, cfg: Any, exp: dict[str, Any], raw: Path, rng: np.random.Generator,
                  salt: float = 0.0) -> Path:
    """A single-epoch job folder for one exposure: images, catalogs, qa.json, thumbnail, manifest."""
    from cosmodm_ops.cameras.layout import focal_plane
    from cosmodm_ops.qa.checks import ccd_checks, exposure_checks, exposure_info, exposure_summary
    from cosmodm_ops.qa.thumbnail_products import exposure_thumbnail

    out = work / f"se_{exp['expnum']}_{salt:g}"
    fp = focal_plane(cfg.camera)
    base = {"survey": SURVEY, "camera": CAMERA, "stage": "single_epoch", "version": VERSION, "night": exp["night"],
            "expnum": exp["expnum"], "band": exp["band"], "tile": None}
    products: list[ManifestProduct] = []
    qa_ccds, ok_values = [], []
    k = cfg.camera.pixel_scale / 3600.0
    for c in fp.ccds:
        if c.ccdnum == exp.get("bad_ccd"):
            qa_ccds.append({"ccd": c.ccdnum, "state": "failed", "reason": "SExtractor found no sources", "checks": []})
            continue
        ny, nx = cfg.camera.ccd_ny // 8, cfg.camera.ccd_nx // 8
        img = rng.normal(exp["sky_e"], math.sqrt(exp["sky_e"]), (ny, nx)) + salt
        for _ in range(12):
            y, x = rng.integers(2, ny - 2), rng.integers(2, nx - 2)
            img[y - 1:y + 2, x - 1:x + 2] += rng.uniform(200, 3000)
        tags = {**base, "ccd": c.ccdnum}
        image = _fits(out / f"c{c.ccdnum}_image.fits.fz", img)
        n_obj = int(rng.integers(15, 40))
        ra = exp["ra"] + (c.x_mm / cfg.camera.pixel_size_mm * k + rng.uniform(-0.01, 0.01, n_obj)) / math.cos(
            math.radians(exp["dec"]))
        dec = exp["dec"] + c.y_mm / cfg.camera.pixel_size_mm * k + rng.uniform(-0.02, 0.02, n_obj)
        cat = _ldac(out / f"c{c.ccdnum}_cat.fits", ra, dec, rng.uniform(17, 23, n_obj))
        products += [_product(out, image, {**tags, "kind": "image"}),
                     _product(out, cat, {**tags, "kind": "catalog"}, [str(image.relative_to(out))])]
        vals = {"n_stars": n_obj, "fwhm_arcsec": exp["fwhm"] * rng.uniform(0.95, 1.1), "ellipticity": 0.05,
                "sky_e": exp["sky_e"], "sky_noise_e": math.sqrt(exp["sky_e"] + 40.0),
                "astrom_rms_mas": rng.uniform(15, 40), "astrom_matches": n_obj,
                "zeropoint_1s": exp["zp"] + rng.normal(0, 0.01), "masked_fraction": 0.01, "apcorr_mag": -0.02}
        ok_values.append(vals)
        qa_ccds.append({"ccd": c.ccdnum, "state": "ok", "values": vals, "checks": ccd_checks(vals, cfg.qa)})
    summary = exposure_summary(ok_values, nominal_zp_1s=cfg.survey.zeropoint_1s[exp["band"]],
                               n_ccds_total=len(fp.ccds))
    checks = exposure_checks(summary, cfg.qa)
    summary["verdict"] = "fail" if any(ch["verdict"] == "fail" for ch in checks) else "pass"
    qa_path = out / "qa.json"
    qa_path.write_text(json.dumps({"exposure": summary, "ccds": qa_ccds, "checks": checks + exposure_info(summary)}))
    products.append(_product(out, qa_path, {**base, "ccd": None, "kind": "qa"}))
    thumb = exposure_thumbnail(out, products, cfg.camera, {**base, "ccd": None})
    products += [thumb] if thumb else []
    exp["checks"] = checks
    return _manifest(out, products, [("raw", raw)], f"single-epoch-{exp['expnum']}")


def _coadd_job(work: Path, arch: Any, tile: Any, band: str, images: list[dict[str, Any]], *, catalog: bool,
               rng: np.random.Generator) -> Path:
    from cosmodm_ops.qa.thumbnail_products import coadd_thumbnail

    out = work / f"coadd_{tile.name}_{band}"
    tags = {"survey": SURVEY, "camera": CAMERA, "stage": "coadd", "version": VERSION, "tile": tile.name,
            "band": band, "night": None, "expnum": None, "ccd": None}
    yy, xx = np.mgrid[0:200, 0:200]
    img = rng.normal(0, 1, (200, 200))
    for _ in range(40):
        cy, cx = rng.uniform(0, 200, 2)
        img += rng.uniform(5, 80) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    coadd = _fits(out / f"{tile.name}_{band}_coadd.fits.fz", img, _tan(tile, 200))
    products = [_product(out, coadd, {**tags, "kind": "coadd"}, ["image"])]
    if catalog:
        n = 30
        cat = _ldac(out / f"{tile.name}_{band}_cat.fits", tile.ra + rng.uniform(-0.05, 0.05, n),
                    tile.dec + rng.uniform(-0.05, 0.05, n), rng.uniform(18, 25, n))
        products.append(_product(out, cat, {**tags, "kind": "coadd_catalog"}, [products[0].path]))
    qa = {"checks": [{"name": "repeatability_mmag", "value": float(rng.uniform(5, 15)), "threshold": 20.0,
                      "verdict": "pass"},
                     {"name": "psf_fwhm_spread_after", "value": 0.013, "threshold": 0.02, "verdict": "pass"},
                     {"name": "completeness_50_mag", "value": 24.3 if band == "g" else 23.5, "threshold": None,
                      "verdict": "info"}]}
    (out / "qa.json").write_text(json.dumps(qa))
    products.append(_product(out, out / "qa.json", {**tags, "kind": "qa"}))
    thumb = coadd_thumbnail(coadd, out, {**tags, "kind": "thumbnail"})
    products += [thumb] if thumb else []
    inputs = [("image", arch.root / im["path"]) for im in images]
    return _manifest(out, products, inputs, f"coadd-{tile.name}-{band}")


def seed_archive(arch: Any, work: str | Path, *, nights: int = 2, per_night: int = 5, seed: int = 7) -> dict[str, Any]:
    """Fill ``arch`` (initialised here) with a small survey; returns what was made (for tests).

    Returns
    -------
    dict
        ``{"nights": [night, ...], "exposures": {expnum: {"night", "band", "verdict", "checks"}},
        "tiles": {name: {band: status}}, "run_ids": {night: run_id}}``.
    """
    import datetime as dt

    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.coadd.tiling import load_tiling
    from cosmodm_ops.config import load_config

    work = Path(work)
    arch.init()
    cfg = load_config(survey=SURVEY)
    tiling = load_tiling(cfg.survey.tiling)
    rng = np.random.default_rng(seed)
    ra0, dec0 = 150.0, 2.0
    truth: dict[str, Any] = {"nights": [], "exposures": {}, "tiles": {}, "run_ids": {}}
    first = dt.date(2026, 11, 23)
    expnum = 1_001_000
    for i in range(nights):
        night = (first - dt.timedelta(days=i)).isoformat()
        run_id = f"manual__{night}T12:00:00+00:00"
        truth["nights"].append(night)
        truth["run_ids"][night] = run_id
        for j in range(per_night):
            expnum += 1
            band = "g" if j % 2 == 0 else "r"
            exp = {"night": night, "expnum": expnum, "band": band, "ra": ra0 + 0.1 * j, "dec": dec0 + 0.05 * i,
                   "fwhm": float(rng.uniform(0.9, 1.3)), "sky_e": float(rng.uniform(800, 1500)),
                   "zp": cfg.survey.zeropoint_1s[band] - (1.2 if j == 1 else 0.0),
                   "bad_ccd": 26 if j == 2 else None}
            raw = work / "incoming" / night / f"{CAMERA}_{expnum:08d}.fits.fz"
            raw.parent.mkdir(parents=True, exist_ok=True)
            raw.write_bytes(f"raw exposure {expnum}".encode() * 8)
            tags = Tags(survey=SURVEY, camera=CAMERA, stage="raw", version=VERSION, kind="raw", night=night,
                        expnum=expnum, band=band)
            arch.register_raw(raw, tags, header={"EXPTIME": 90.0, "RA": exp["ra"], "DEC": exp["dec"]})
            verdict = "failed"
            if j != per_night - 1:  # the last exposure of the night never got processed
                m = _exposure_job(work, cfg, exp, raw, rng)
                arch.register_manifest(m, run_info={"dag_id": "nightly_ingest", "run_id": run_id,
                                                    "task_id": "exposure.single_epoch", "try_number": 1})
                failed = [c for c in exp["checks"] if c["verdict"] == "fail"]
                verdict = "accepted"
                if failed:
                    arch.quarantine({"survey": SURVEY, "night": night, "expnum": expnum},
                                    [f"QA {c['name']} = {c['value']:.3g} (threshold {c['threshold']})" for c in failed])
                    verdict = "quarantined"
            truth["exposures"][expnum] = {"night": night, "band": band, "verdict": verdict,
                                          "failed_checks": sorted(c["name"] for c in exp.get("checks", [])
                                                                  if c["verdict"] == "fail")}
        report = work / "reports" / f"{night}_report.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(f"<html><body><h1>Night {night}</h1><p>seeded report</p></body></html>")
        arch.store(report, Tags(survey=SURVEY, camera=CAMERA, stage="qa", version=VERSION, kind="report", night=night))

    images = {e: arch.find(survey=SURVEY, expnum=e, kind="image") for e in truth["exposures"]}
    accepted = [e for e, x in truth["exposures"].items() if x["verdict"] == "accepted"]
    grid = [tiling.nearest(ra0 + 0.1 * a, dec0 + 0.1 * b) for b in range(-1, 3) for a in range(-1, 6)]
    tiles = list({t.name: t for t in grid}.values())
    plan = {0: ("done", "done"), 1: ("partial", None), 2: ("failed", "done"), 3: ("stale", None)}
    for k, tile in enumerate(tiles):
        status = {"g": "none", "r": "none"}
        g, r = plan.get(k, (None, None))
        for band, st in (("g", g), ("r", r)):
            if st is None:
                continue
            use = [im for e in accepted if truth["exposures"][e]["band"] == band for im in images[e]]
            if st == "stale":
                use = images[accepted[0]][:1]
            elif st == "partial":  # not from the image that is re-processed below
                use = [im for e in accepted[1:] if truth["exposures"][e]["band"] == band for im in images[e]]
            if not use:
                continue
            m = _coadd_job(work, arch, tile, band, use, catalog=st != "partial", rng=rng)
            arch.register_manifest(m, run_info={"dag_id": "tile_coadd", "run_id": f"manual__{tile.name}_{band}",
                                                "task_id": "coadd.register", "try_number": 1})
            if st == "failed":
                arch.quarantine({"survey": SURVEY, "tile": tile.name, "band": band},
                                ["QA repeatability_mmag = 31.2 (threshold 20.0)"])
            status[band] = st
        truth["tiles"][tile.name] = status
    # the stale tile: its input image was processed again since (a new revision supersedes it)
    stale_src = images[accepted[0]][0]
    src = work / "reprocessed.fits.fz"
    _fits(src, np.full((16, 16), 3.0))
    arch.store(src, Tags.from_dict({k: stale_src[k] for k in ("survey", "camera", "stage", "version", "kind", "night",
                                                               "expnum", "ccd", "band", "tile")}))
    for band in ("g", "r"):  # done tiles that share that image are stale too
        for st in truth["tiles"].values():
            if st.get(band) == "done" and band == truth["exposures"][accepted[0]]["band"]:
                st[band] = "stale"
    _pseudocolour(arch, work, tiles[0], "gr")
    with arch.engine.begin() as conn:  # tiles with coadds got their place from the coadds' WCS; the rest of the tiling
        have = {row[0] for row in conn.execute(sa.select(S.tiles.c.name).where(S.tiles.c.survey == SURVEY))}
        rows = [{"survey": SURVEY, "name": t.name, "ra": t.ra, "dec": t.dec} for t in tiles if t.name not in have]
        if rows:
            conn.execute(sa.insert(S.tiles), rows)
    truth["campaigns"] = seed_campaigns(arch, sorted(truth["exposures"]), n=2)
    return truth


def _pseudocolour(arch: Any, work: Path, tile: Any, bands: str) -> None:
    """A small PNG archived as the tile's ``pseudocolour`` product (the clusters code makes the real ones)."""
    from matplotlib.image import imsave

    rgb = np.zeros((48, 48, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = np.arange(48)[None, :] * 5, np.arange(48)[:, None] * 5, 120
    path = work / "pseudocolour" / f"{tile.name}_{bands}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, rgb)
    arch.store(path, Tags(survey=SURVEY, camera=CAMERA, stage="coadd", version=VERSION, kind="pseudocolour",
                          tile=tile.name, band=bands))


def seed_campaigns(arch: Any, expnums: list[int], *, n: int, items: int | None = None) -> dict[int, dict[str, int]]:
    """``n`` reprocessing campaigns (rows of the campaign tables) over ``expnums``; returns item counts by state.

    Items cycle through done, failed, running, skipped and planned; failed ones carry a log tail.
    """
    import sqlalchemy as sa

    from cosmodm_ops.campaign import schema as C
    from cosmodm_ops.campaign.store import recount_progress

    states = ("done", "done", "failed", "running", "skipped", "planned")
    out: dict[int, dict[str, int]] = {}
    with arch.engine.begin() as conn:
        for k in range(n):
            cid = conn.execute(sa.insert(C.campaign).values(
                name=f"reprocess {k + 1}", description="detect_thresh 3.0", survey=SURVEY, stage="single_epoch",
                site="local", target_version=f"v{k + 2}", params="{}", state="running", priority=1, chunk_size=10,
                max_retries=2, core_hours_estimated=0.5 * len(expnums), source=f"manual__campaign{k + 1}",
                created_at="2026-11-24T00:00:00+00:00", updated_at="2026-11-24T01:00:00+00:00")
                .returning(C.campaign.c.id)).scalar_one()
            rows, counts = [], {}
            for j, e in enumerate(expnums[: items or len(expnums)]):
                st = states[(j + k) % len(states)]
                counts[st] = counts.get(st, 0) + 1
                rows.append({"campaign_id": cid, "item_key": f"single_epoch:{SURVEY}:{e:08d}", "stage": "single_epoch",
                             "expnum": e, "state": st, "attempts": 1 if st != "planned" else 0,
                             "job_id": f"job-{cid}-{j}", "exit_code": 65 if st == "failed" else 0 if st == "done" else None,
                             "elapsed_s": 300.0 if st == "done" else None, "core_h_used": 0.4 if st == "done" else None,
                             "diagnostics": ("SExtractor: no sources\nexit code 65\nbad input" if st == "failed" else None),
                             "spec": "{}", "superseded": 0,
                             "updated_at": f"2026-11-24T00:{10 + j % 50:02d}:00+00:00"})
            if rows:
                conn.execute(sa.insert(C.campaign_item), rows)
            recount_progress(conn, [cid])  # as the campaign store keeps it
            out[cid] = counts
    return out
