"""A small archived survey for campaign tests, and a stand-in single-epoch job (a real process).

``build_survey`` files raws of two nights (decam-mini, survey demo), a nightly-like single-epoch
run per exposure (image, catalog-less products, qa.json, a manifest with raw/bias/refcat inputs and
a ``cpu`` block; config hash of the default configuration at v1), and one coadd of the first
night's images (so superseding an image leaves the coadd stale).

``fake_cli`` is a ``cosmodm`` stand-in: ``single-epoch run ... --out DIR --version V`` writes the
same products from the raw file and ``$COSMODM_CONFIG_OVERRIDES`` (so a changed detection threshold
changes the bytes, as the real pipeline would); ``coadd run --tile T --band B ...`` writes a coadd
whose manifest inputs are the archive's current single-epoch images of that band (its lineage);
``coadd calibrate --coadds FOLDER...`` a catalog per band whose inputs are those folders' coadds; an expnum in ``$FAKE_FAIL_EXPNUMS`` exits 75, one in
``$FAKE_BAD_EXPNUMS`` exits 65; ``$FAKE_SEEING`` sets the QA seeing value.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from cosmodm_ops.archive import Archive
from tests.unit.archive_factory import make_manifest, write_bytes

__all__ = ["NIGHTS", "build_survey", "fake_cli", "survey_env"]

NIGHTS = {"2026-11-23": (901001, 901002, 901003), "2026-11-24": (902001, 902002)}
BANDS = {901001: "g", 901002: "r", 901003: "r", 902001: "g", 902002: "r"}

_FAKE = textwrap.dedent('''
    import json, os, sys, hashlib
    from pathlib import Path
    argv = sys.argv[1:]
    if argv[:2] == ["campaign", "element"]:  # the array element entry point is the real one
        from cosmodm_ops.campaign.execute import element_main
        sys.exit(element_main(argv[argv.index("--chunk-file") + 1]))
    opt = {argv[i][2:]: argv[i + 1] for i in range(2, len(argv) - 1, 2)}
    from cosmodm_ops.config import config_hash, load_config
    from cosmodm_ops.manifest import JobInfo, Manifest, ManifestInput, ManifestProduct, write_manifest
    if argv[:2] == ["coadd", "run"]:  # the tile's band from the archive's current single-epoch images
        from cosmodm_ops.archive import Archive
        archive = Archive(os.environ["COSMODM_DB"], os.environ["COSMODM_ARCHIVE_ROOT"])
        images = archive.find(kind="image", band=opt["band"], stage="single_epoch")
        cfg = load_config(opt["survey"], overrides={"pipeline_version": opt["version"]})
        out = Path(opt["out"]); out.mkdir(parents=True, exist_ok=True)
        f = out / "coadd.dat"
        f.write_text(f"coadd {opt['tile']} {opt['band']} of " + ",".join(str(r["expnum"]) for r in images))
        tags = {"survey": "demo", "camera": "decam-mini", "stage": "coadd", "version": opt["version"],
                "kind": "coadd", "tile": opt["tile"], "band": opt["band"]}
        ins = [ManifestInput(role="image", path=str(archive.root / r["path"]), sha256=r["sha256"], size=r["size"])
               for r in images]
        (out / "qa.json").write_text(json.dumps({"checks": [{"name": "depth", "value": 24.0, "threshold": 23.0,
                                                             "verdict": "pass"}]}))
        m = Manifest(job=JobInfo(name="fake-coadd", site="local"), inputs=ins, config_hash=config_hash(cfg),
                     products=[ManifestProduct(kind="coadd", tags=tags, path=f.name, size=f.stat().st_size,
                                               sha256=hashlib.sha256(f.read_bytes()).hexdigest())],
                     cpu={"total_s": 120.0}, bytes={"output": f.stat().st_size})
        write_manifest(m, out / "manifest.json")
        sys.exit(0)
    if argv[:2] == ["coadd", "calibrate"]:  # a catalog per band from the coadds of the given job folders
        folders = argv[argv.index("--coadds") + 1:]
        folders = folders[:next((i for i, a in enumerate(folders) if a.startswith("--")), len(folders))]
        cfg = load_config(opt["survey"], overrides={"pipeline_version": opt["version"]})
        out = Path(opt["out"]); out.mkdir(parents=True, exist_ok=True)
        ins, prods = [], []
        for folder in folders:
            doc = json.loads((Path(folder) / "manifest.json").read_text())
            for pr in doc["products"]:
                ins.append(ManifestInput(role="coadd", path=str(Path(folder) / pr["path"]), sha256=pr["sha256"],
                                         size=pr["size"]))
                sys.path.insert(0, REPO)
                import numpy as np
                from tests.unit.archive_factory import write_ldac
                f = write_ldac(out / f"catalog_{pr['tags']['band']}.fits", np.array([30.0, 30.01]),
                               np.array([-0.2, -0.21]), np.array([20.0, 21.0 + len(opt["version"]) * 0.1]))
                tags = {"survey": "demo", "camera": "decam-mini", "stage": "coadd", "version": opt["version"],
                        "kind": "coadd_catalog", "tile": opt["tile"], "band": pr["tags"]["band"]}
                prods.append(ManifestProduct(kind="coadd_catalog", tags=tags, path=f.name, size=f.stat().st_size,
                                             sha256=hashlib.sha256(f.read_bytes()).hexdigest()))
        (out / "qa.json").write_text(json.dumps({"checks": []}))
        write_manifest(Manifest(job=JobInfo(name="fake-calibrate", site="local"), inputs=ins, products=prods,
                                config_hash=config_hash(cfg), cpu={"total_s": 60.0}), out / "manifest.json")
        sys.exit(0)
    assert argv[:2] == ["single-epoch", "run"], argv
    raw = Path(opt["exposure"])
    expnum = int(raw.name.split("_")[1].split(".")[0])
    if str(expnum) in os.environ.get("FAKE_FAIL_EXPNUMS", "").split(","):
        print("transient trouble on", expnum, file=sys.stderr); sys.exit(75)
    if str(expnum) in os.environ.get("FAKE_BAD_EXPNUMS", "").split(","):
        print("bad input: header key EXPTIME missing", file=sys.stderr); sys.exit(65)
    cfg = load_config(opt["survey"], site=opt["site"], overrides={"pipeline_version": opt["version"]})
    out = Path(opt["out"]); out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(raw.read_text())
    prods = []
    for kind in ("image", "weight"):
        f = out / f"{kind}.dat"
        f.write_text(f"{kind} {expnum} thresh={cfg.single_epoch.detect_thresh}")
        tags = {"survey": "demo", "camera": "decam-mini", "stage": "single_epoch", "version": opt["version"],
                "kind": kind, "night": meta["night"], "expnum": expnum, "ccd": 1, "band": meta["band"], "tile": None}
        prods.append(ManifestProduct(kind=kind, tags=tags, path=f.name,
                                     sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size=f.stat().st_size))
    seeing = float(os.environ.get("FAKE_SEEING", "1.0"))
    (out / "qa.json").write_text(json.dumps({"checks": [{"name": "seeing", "value": seeing, "threshold": 2.0,
                                                         "verdict": "pass" if seeing <= 2.0 else "fail"}]}))
    ins = []
    for role, p in (("raw", raw), ("bias", Path(opt["calib"]) / "bias.fits"), ("refcat", Path(opt["refcat"]))):
        ins.append(ManifestInput(role=role, path=str(p), sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                                 size=p.stat().st_size))
    m = Manifest(job=JobInfo(name="fake", site=opt["site"]), products=prods, inputs=ins,
                 config_hash=config_hash(cfg), cpu={"total_s": 36.0}, bytes={"output": 100})
    write_manifest(m, out / "manifest.json")
''')


def fake_cli(tmp_path: Path) -> Path:
    """Write the stand-in ``cosmodm`` script; returns its path (run with ``sys.executable``)."""
    path = tmp_path / "fake_cosmodm.py"
    path.write_text(f"REPO = {str(Path(__file__).resolve().parents[2])!r}\n" + _FAKE)
    return path


def survey_env(tmp_path: Path, monkeypatch: Any) -> dict[str, str]:
    """Archive, work root and the stand-in CLI for the campaign jobs, through the environment."""
    env = {"COSMODM_DB": f"sqlite:///{tmp_path / 'archive' / 'cosmodm.db'}",
           "COSMODM_ARCHIVE_ROOT": str(tmp_path / "archive"), "COSMODM_WORK_ROOT": str(tmp_path / "work"),
           "COSMODM_CONFIG_OVERRIDES": json.dumps({"site": {"batch": {
               "python": f"{sys.executable} {fake_cli(tmp_path)}"}}}),
           "COSMODM_LOCAL_JOBS": str(tmp_path / "jobs")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _nightly_config_hash() -> str:
    from cosmodm_ops.config import config_hash, load_config

    return config_hash(load_config("demo", site="local", overrides={"pipeline_version": "v1"}))


def build_survey(tmp_path: Path) -> dict[str, Any]:
    """Raws + one processed single-epoch run per exposure + a coadd of night 1's images."""
    archive = Archive(os.environ["COSMODM_DB"], os.environ["COSMODM_ARCHIVE_ROOT"])
    archive.init()
    calib = write_bytes(tmp_path / "input" / "calib" / "bias.fits", b"bias")
    refcat = write_bytes(tmp_path / "input" / "refcat" / "astrometric.fits", b"refcat")
    chash = _nightly_config_hash()
    images: list[Path] = []
    for night, expnums in NIGHTS.items():
        for expnum in expnums:
            raw = write_bytes(tmp_path / "input" / "raw" / f"decam-mini_{expnum:08d}.fits.fz",
                              json.dumps({"night": night, "band": BANDS[expnum]}).encode())
            tags = {"survey": "demo", "camera": "decam-mini", "stage": "raw", "version": "raw", "kind": "raw",
                    "night": night, "expnum": expnum, "band": BANDS[expnum]}
            archive.register_raw(raw, tags, header={"RA": 30.0 + expnum % 10 * 0.1, "DEC": -0.2})
            se = {k: v for k, v in tags.items() if k not in ("stage", "version", "kind")}
            products = [({**se, "stage": "single_epoch", "version": "v1", "kind": kind, "ccd": 1, "tile": None},
                         f"{kind} {expnum} thresh=1.5".encode()) for kind in ("image", "weight")]
            m = make_manifest(tmp_path / "nightly" / str(expnum), products=products,
                              inputs=[("raw", raw), ("bias", calib), ("refcat", refcat)],
                              qa={"checks": [{"name": "seeing", "value": 1.0, "threshold": 2.0, "verdict": "pass"}]})
            doc = json.loads(m.read_text())
            doc.update(config_hash=chash, cpu={"total_s": 72.0 if expnum % 2 else 36.0})
            m.write_text(json.dumps(doc))
            archive.register_manifest(m, {"dag_id": "nightly_ingest", "run_id": night})
            if night == "2026-11-23":
                images.append(archive.root / archive.find(expnum=expnum, kind="image")[0]["path"])
    coadd = {"survey": "demo", "camera": "decam-mini", "stage": "coadd", "version": "v1", "tile": "T1", "band": "r"}
    cm = make_manifest(tmp_path / "coadd_job", products=[({**coadd, "kind": "coadd"}, b"coadd pixels")],
                       inputs=[("image", p) for p in images])
    archive.register_manifest(cm)
    return {"archive": archive, "config_hash": chash}


def progress_kept_and_live(archive: Any) -> tuple[dict, dict]:
    """``campaign_progress`` as kept by the store, and the same recounted from the items: ``{(campaign, state):
    (n, core-hours)}``, states with no items left out (a state an item left keeps a row of n = 0)."""
    import sqlalchemy as sa

    from cosmodm_ops.campaign import schema as C

    i, cp = C.campaign_item, C.campaign_progress
    with archive.engine.connect() as conn:
        kept = {(c, s): (n, round(h, 9)) for c, s, n, h in
                conn.execute(sa.select(cp.c.campaign_id, cp.c.state, cp.c.n, cp.c.core_h)).all() if n}
        live = {(c, s): (n, round(float(h or 0.0), 9)) for c, s, n, h in conn.execute(
            sa.select(i.c.campaign_id, i.c.state, sa.func.count(), sa.func.sum(i.c.core_h_used))
            .group_by(i.c.campaign_id, i.c.state)).all()}
    return kept, live
