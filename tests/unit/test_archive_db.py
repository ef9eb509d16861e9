"""The archive on its embedded default (SQLite): register, revisions, lineage, stale, verify, QA, cone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import sqlalchemy as sa

from cosmodm_ops.archive import Archive, ArchiveError, ArchiveInputError, ArchiveUnavailable, ProductNotFound
from cosmodm_ops.archive.catalogs import angular_distance, read_ldac_objects
from cosmodm_ops.model import Tags
from tests.support import REPO, real_file
from tests.unit.archive_factory import (
    REAL_CAT,
    build_night,
    calib,
    exposure_tags,
    run_workers,
    se_manifest,
    sha,
    write_bytes,
    write_ldac,
)


def _schema_head() -> str:
    """The newest migration (the one ``Archive.init()`` upgrades to)."""
    from pathlib import Path

    from alembic.script import ScriptDirectory

    import cosmodm_ops.archive as pkg

    return ScriptDirectory(str(Path(pkg.__file__).with_name("migrations"))).get_current_head()



@pytest.fixture
def archive(tmp_path) -> Archive:
    arch = Archive(f"sqlite:///{tmp_path / 'db' / 'archive.db'}", tmp_path / "root")
    arch.init()
    return arch


@pytest.fixture
def night(archive, tmp_path):
    """Raws, a bias and a flat registered; two exposures processed; one coadd made of their images."""
    return build_night(archive, tmp_path)


def test_init_creates_every_table_and_is_idempotent(archive):
    assert archive.init() == _schema_head()
    names = set(sa.inspect(archive.engine).get_table_names())
    assert {"products", "exposures", "ccd_images", "tiles", "lineage", "runs", "qa_results", "quarantine",
            "objects", "alembic_version"} <= names


def test_register_files_products_runs_qa_and_lineage(archive, night, tmp_path):
    c = archive.counts()
    # 2 raws + bias + flat + 2 x 2 CCDs x 6 kinds + coadd + coadd catalog
    assert c["products"] == 2 + 2 + 24 + 2
    assert c["exposures"] == 2 and c["ccd_images"] == 4 and c["tiles"] == 1
    assert c["runs"] == 3
    # per CCD: 5 products <- (raw, bias, flat); the catalog <- image; coadd <- 4 images; coadd cat <- coadd
    assert c["lineage"] == 2 * 2 * (5 * 3 + 1) + 4 + 1
    assert c["objects"] == 4 + 2
    assert c["qa_results"] == 4
    with archive.engine.connect() as conn:
        run = conn.execute(sa.text("SELECT * FROM runs WHERE batch_job_id = :b"), {"b": "slurm-1001"}).mappings().one()
    assert run["dag_id"] == "nightly_ingest" and run["host"] == "node1" and run["config_hash"] == "cfg123"
    assert json.loads(run["versions"]) == {"cosmodm_ops": "0.test"}
    assert run["bytes_written"] > 0
    qa = archive.qa_results(expnum=1001)
    assert {(q["check_name"], q["ccd"], q["value"], q["verdict"]) for q in qa} == {
        ("fwhm", None, 1.1, "pass"), ("nstars", 1, 50.0, "pass")}
    # files were copied with their checksums, under the hierarchical path
    for row in archive.find(expnum=1001):
        f = archive.root / row["path"]
        assert sha(f) == row["sha256"] and f.stat().st_size == row["size"]
    img = archive.find(expnum=1001, ccd=2, kind="image")[0]
    assert img["path"] == "demo/single_epoch/v1/2024-01-05/00001001/decam_00001001_r_c02_image.fits.fz"
    assert (archive.root / img["path"]).read_bytes() == b"1001/2/image"
    exp = archive.engine.connect().execute(sa.text("SELECT * FROM exposures WHERE expnum=1001")).mappings().one()
    assert exp["exptime"] == 90.0 and exp["raw_product_id"] == night["raw"][1001]


def test_register_again_is_a_noop(archive, night, tmp_path):
    before = archive.counts()
    ids = archive.register_manifest(tmp_path / "job_1001" / "manifest.json",
                                    run_info={"dag_id": "nightly_ingest", "run_id": "r1", "task_id": "register",
                                              "try_number": 1, "batch_job_id": "slurm-1001"})
    assert ids == night["se"][1001]
    assert archive.counts() == before
    assert archive.register_raw(tmp_path / "incoming" / "raw_1001.fits.fz",
                                exposure_tags(1001, kind="raw", stage="raw")) == night["raw"][1001]
    assert archive.counts() == before


def test_find_filters(archive, night):
    assert len(archive.find(expnum=1002)) == 12 + 1  # 12 SE products and the raw
    assert {r["kind"] for r in archive.find(tile="T0001")} == {"coadd", "coadd_catalog"}
    assert len(archive.find(kind="catalog", band="r", version="v1", stage="single_epoch")) == 4
    assert archive.find(night="2024-01-06") == []


def test_lineage_up_from_the_coadd_catalog(archive, night):
    g = archive.lineage(night["coadd_cat"], direction="up", depth=5)
    prods = g["products"]
    by_depth = {}
    for e in g["edges"]:
        by_depth.setdefault(e["depth"], set()).add((e["role"], prods[e["input_id"]]["kind"]))
    assert by_depth[1] == {("coadd", "coadd")}
    assert by_depth[2] == {("image", "image")}
    assert by_depth[3] == {("raw", "raw"), ("bias", "bias"), ("flat", "flat")}
    assert {r["id"] for r in prods.values()} >= {night["flat"], night["bias"], *night["raw"].values()}
    assert max(e["depth"] for e in archive.lineage(night["coadd_cat"], depth=2)["edges"]) == 2


def test_lineage_by_path_and_sha_and_down(archive, night):
    flat = archive.product(night["flat"])
    assert archive.product(flat["path"])["id"] == flat["id"]
    assert archive.product(flat["sha256"])["id"] == flat["id"]
    assert archive.product(str(archive.root / flat["path"]))["id"] == flat["id"]
    down = archive.lineage(flat["path"], direction="down")
    kinds = {down["products"][e["product_id"]]["kind"] for e in down["edges"]}
    assert kinds == {"image", "weight", "mask", "psf", "head", "catalog", "coadd", "coadd_catalog"}
    with pytest.raises(ProductNotFound):
        archive.product("demo/nothing.fits")


def test_superseding_flat_and_stale(archive, night, tmp_path):
    """What must be redone if this flat is replaced."""
    new_flat = calib(archive, tmp_path, "flat", b"flat v2, better")
    old, new = archive.product(night["flat"]), archive.product(new_flat)
    assert new["revision"] == 2 and new["state"] == "current"
    assert old["state"] == "superseded" and old["superseded_by"] == new["id"]
    assert new["path"].endswith("decam_r_flat.r2.fits.fz")
    assert (archive.root / old["path"]).read_bytes() == b"flat v1"  # kept, never overwritten
    # storing the same content again is a no-op
    assert calib(archive, tmp_path, "flat", b"flat v2, better") == new_flat
    stale = archive.stale(old["path"])
    kinds = {}
    for r in stale:
        kinds.setdefault(r["kind"], set()).add(r["depth"])
    # every SE product of both exposures, the coadd and its catalog
    assert len([r for r in stale if r["stage"] == "single_epoch"]) == 24
    assert kinds["image"] == {1} and kinds["catalog"] == {2} and kinds["coadd"] == {2}
    assert kinds["coadd_catalog"] == {3}
    assert {r["id"] for r in archive.stale()} == {r["id"] for r in stale}
    assert archive.stale(new_flat) == []
    assert [r["id"] for r in archive.find(kind="flat")] == [new_flat]
    assert len(archive.find(kind="flat", include_superseded=True)) == 2


def test_reprocessed_image_supersedes_and_coadd_goes_stale(archive, night, tmp_path):
    raw = tmp_path / "incoming" / "raw_1001.fits.fz"
    m = se_manifest(tmp_path / "again", 1001, [("raw", raw)], salt=b" v2")
    archive.register_manifest(m)
    old_img = archive.find(expnum=1001, ccd=1, kind="image", include_superseded=True)
    assert [r["state"] for r in old_img] == ["superseded", "current"]
    stale = archive.stale(old_img[0]["id"])
    # the catalog bytes did not change (a no-op), but it is still linked to the old image too
    assert {(r["kind"], r["depth"]) for r in stale} == {("catalog", 1), ("coadd", 1), ("coadd_catalog", 2)}
    assert night["coadd"] in {r["id"] for r in stale}


@pytest.mark.parametrize("fault", ["missing", "checksum", "badtags", "unknown_tag", "escape", "bad_qa"])
def test_bad_manifest_registers_nothing(archive, tmp_path, fault):
    m = se_manifest(tmp_path, 2001, [])
    data = json.loads(m.read_text())
    if fault == "missing":
        (m.parent / data["products"][3]["path"]).unlink()
    elif fault == "checksum":
        (m.parent / data["products"][7]["path"]).write_bytes(b"tampered")
    elif fault == "badtags":
        data["products"][5]["tags"]["band"] = "../../etc"
    elif fault == "unknown_tag":
        data["products"][5]["tags"]["colour"] = "blue"
    elif fault == "escape":
        data["products"][5]["path"] = "../../outside.dat"
    elif fault == "bad_qa":
        (m.parent / "qa.json").write_text("{not json")
    m.write_text(json.dumps(data))
    before = archive.counts()
    with pytest.raises(ArchiveInputError, match="nothing"):
        archive.register_manifest(m)
    assert archive.counts() == before
    assert not [p for p in archive.root.rglob("*") if p.is_file()]


def test_concurrent_register_on_sqlite_leaves_one_row(archive, tmp_path):
    m = se_manifest(tmp_path, 4001, [("raw", write_bytes(tmp_path / "raw", b"raw 4001"))])
    outs = run_workers(archive, tmp_path, [("manifest", m)] * 3)
    assert len(set(outs)) == 1
    c = archive.counts()
    assert (c["products"], c["lineage"], c["runs"], c["objects"]) == (12, 12, 1, 2)


def test_verify_finds_missing_and_corrupt_and_quarantines(archive, night):
    assert archive.verify().clean
    img = archive.find(expnum=1001, ccd=1, kind="image")[0]
    psf = archive.find(expnum=1002, ccd=2, kind="psf")[0]
    (archive.root / img["path"]).write_bytes(b"bit rot")
    (archive.root / psf["path"]).unlink()
    rep = archive.verify()
    assert [c["id"] for c in rep.corrupt] == [img["id"]] and [m["id"] for m in rep.missing] == [psf["id"]]
    assert rep.checked == archive.counts()["products"] and rep.ok == rep.checked - 2
    assert archive.is_quarantined(img["id"]) and "corrupt" in archive.quarantine_reasons(img["id"])[0]
    assert archive.is_quarantined(Tags.from_dict(exposure_tags(1001, kind="image", ccd=1)))
    assert not archive.is_quarantined(Tags.from_dict(exposure_tags(1001, kind="image", ccd=2)))
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.fetch(img["id"])
    assert archive.fetch(archive.find(expnum=1001, ccd=2, kind="image")[0]["id"]).read_bytes() == b"1001/2/image"


def test_quarantine_by_exposure_covers_its_ccds(archive, night):
    assert not archive.is_quarantined({"expnum": 1001})
    qid = archive.quarantine({"survey": "demo", "expnum": 1001}, ["fwhm=3.2 (threshold 2)"])
    assert archive.quarantine({"survey": "demo", "expnum": 1001}, ["fwhm=3.2 (threshold 2)"]) == qid
    img = archive.find(expnum=1001, ccd=2, kind="image")[0]
    assert archive.is_quarantined(img["id"])
    assert archive.is_quarantined(Tags.from_dict(exposure_tags(1001, kind="mask", ccd=1)))
    assert not archive.is_quarantined(Tags.from_dict(exposure_tags(1002, kind="mask", ccd=1)))
    assert archive.quarantine_reasons({"survey": "demo", "expnum": 1001, "ccd": 7}) == ["fwhm=3.2 (threshold 2)"]
    with pytest.raises(ArchiveInputError):
        archive.quarantine({"colour": "red"}, ["x"])


def test_record_qa_api(archive, night):
    n = archive.record_qa([{"name": "zp_scatter", "value": 0.01, "threshold": 0.02, "verdict": "pass"}],
                          tags={"survey": "demo", "tile": "T0001", "band": "r"})
    assert n == 1
    archive.record_qa([{"name": "zp_scatter", "value": 0.03, "threshold": 0.02, "verdict": "fail"}],
                      tags={"survey": "demo", "tile": "T0001", "band": "r"})
    rows = archive.qa_results(tile="T0001")
    assert [(r["value"], r["verdict"]) for r in rows] == [(0.03, "fail")]  # replaced, not duplicated
    archive.record_qa({"checks": [{"name": "depth", "value": 24.1, "threshold": "n/a", "verdict": "pass"}]},
                      product=night["coadd"])
    row = archive.qa_results(check_name="depth")[0]
    assert row["product_id"] == night["coadd"] and row["threshold"] is None and row["tile"] == "T0001"


def test_store_refuses_bad_and_escaping_tags(archive, tmp_path):
    f = write_bytes(tmp_path / "x.fits", b"x")
    good = exposure_tags(1, kind="image", ccd=1)
    for bad in ({**good, "band": "../../etc"}, {**good, "colour": "red"}, {**good, "camera": "hal9000"},
                {**good, "night": None}):
        with pytest.raises(ArchiveInputError, match="bad tags"):
            archive.store(f, bad)
    assert archive.counts()["products"] == 0 and not list(archive.root.rglob("*.*"))


def test_register_raw_refuses_non_raw_tags(archive, tmp_path):
    f = write_bytes(tmp_path / "x.fits", b"x")
    with pytest.raises(ArchiveInputError, match="raw"):
        archive.register_raw(f, exposure_tags(1, kind="image", ccd=1))
    with pytest.raises(ArchiveInputError, match="not found"):
        archive.register_raw(tmp_path / "nope.fits", exposure_tags(1, kind="raw", stage="raw"))
    with pytest.raises(ArchiveInputError, match="sha256"):
        archive.register_raw(f, exposure_tags(1, kind="raw", stage="raw"), sha256="0" * 64)


def test_real_ldac_catalog_and_cone_vs_brute_force(archive, tmp_path):
    real = real_file(REAL_CAT)
    rng = np.random.default_rng(7)
    truth = read_ldac_objects(real)
    ra0, dec0 = float(np.median(truth.ra)), float(np.median(truth.dec))
    synth = write_ldac(tmp_path / "synth.fits", ra0 + rng.uniform(-0.3, 0.3, 3000),
                       dec0 + rng.uniform(-0.2, 0.2, 3000))
    m = se_manifest(tmp_path, 241238, [], ccds=(1, 2), catalogs={1: real, 2: synth})
    archive.register_manifest(m)
    assert archive.counts()["objects"] == truth.n + 3000
    all_ra = np.concatenate([truth.ra, read_ldac_objects(synth).ra])
    all_dec = np.concatenate([truth.dec, read_ldac_objects(synth).dec])
    for ra, dec, r in ((ra0, dec0, 0.05), (ra0 + 0.1, dec0 - 0.05, 0.12), (ra0, dec0, 0.002), (0.0, 0.0, 1.0)):
        got = archive.cone(ra, dec, r)
        d = angular_distance(all_ra, all_dec, ra, dec)
        want = np.sort(d[d <= r])
        assert len(got) == len(want)
        assert np.allclose([g["dist"] for g in got], want)
    brightest = archive.cone(truth.ra[0], truth.dec[0], 1e-6)
    assert brightest[0]["number"] == int(truth.number[0]) and brightest[0]["ccd"] == 1
    assert brightest[0]["mag_auto"] == pytest.approx(float(truth.floats["mag_auto"][0]))
    with pytest.raises(ArchiveInputError):
        archive.cone(0, 0, -1)


def test_unreachable_database_is_retryable(tmp_path):
    arch = Archive("postgresql+psycopg2://nobody@127.0.0.1:9/none", tmp_path / "root")
    with pytest.raises(ArchiveUnavailable, match="retry"):
        arch.find()
    uninit = Archive(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path / "root")
    with pytest.raises(ArchiveError, match="archive init"):
        uninit.find()


_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import cosmodm_ops.archive.api as api
    import cosmodm_ops.archive.store as store
    where, marker = sys.argv[3], Path(sys.argv[4])
    if where == "copy":
        real_fsync = os.fsync
        def slow_fsync(fd):  # the first file is half-way: its temporary exists, its final name not yet
            marker.write_text("in copy")
            time.sleep(60)
        store.os.fsync = slow_fsync
    else:
        import cosmodm_ops.archive.register as register
        def slow(*a, **k):  # files placed, rows inserted, transaction not committed
            marker.write_text("before commit")
            time.sleep(60)
        register._index_products = slow
    api.Archive(sys.argv[1], sys.argv[2]).register_manifest(sys.argv[5])
""")


@pytest.mark.parametrize("where", ["copy", "commit"])
def test_killed_register_leaves_no_partial_file_and_no_dangling_row(archive, tmp_path, where):
    m = se_manifest(tmp_path, 3001, [])
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, archive.db_url, str(archive.root), where,
                             str(marker), str(m)], env=env)
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the register subprocess never reached the kill point"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert archive.counts()["products"] == 0  # the transaction died with the process
    if where == "copy":
        assert len(archive.verify().temporaries) == 1  # the hidden temporary, reported, never served
    visible = [p for p in archive.root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    by_name = {p.name: p for p in visible}
    data = json.loads(m.read_text())
    for prod in data["products"]:  # any visible file is complete (never partial)
        for p in visible:
            if p.name.startswith(f"decam_00003001_r_c{prod['tags']['ccd']:02d}_{prod['kind']}"):
                assert sha(p) == prod["sha256"]
    if where == "copy":
        assert not by_name
    # the next register completes; every row points to a good file
    ids = archive.register_manifest(m)
    assert len(ids) == 12
    assert archive.verify().clean
    assert {r["revision"] for r in archive.find(expnum=3001)} == {1}


def test_cli_end_to_end(archive, night, tmp_path, monkeypatch, capsys):
    from cosmodm_ops.cli import main

    monkeypatch.setenv("COSMODM_DB", archive.db_url)
    monkeypatch.setenv("COSMODM_ARCHIVE_ROOT", str(archive.root))
    assert main(["archive", "init", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_revision"] == _schema_head()
    assert main(["archive", "register", str(night["coadd_manifest"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["products"] == [night["coadd"], night["coadd_cat"]]
    assert main(["archive", "find", "--tile", "T0001", "--kind", "coadd", "--json"]) == 0
    (coadd,) = json.loads(capsys.readouterr().out)
    assert main(["archive", "lineage", coadd["path"], "--up", "--depth", "5", "--json"]) == 0
    up = json.loads(capsys.readouterr().out)
    assert {p["kind"] for p in up["products"]} >= {"coadd", "image", "raw", "bias", "flat"}
    assert main(["archive", "lineage", str(night["flat"]), "--down"]) == 0
    assert "coadd_catalog" in capsys.readouterr().out
    calib(archive, tmp_path, "flat", b"flat v2")
    assert main(["archive", "stale", "--superseded", str(night["flat"]), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 24 + 2
    assert main(["archive", "cone", "10.5", "-20.5", "0.01", "--json"]) == 0
    assert [r["tile"] for r in json.loads(capsys.readouterr().out)] == ["T0001"]
    assert main(["archive", "verify"]) == 0
    capsys.readouterr()
    (archive.root / coadd["path"]).write_bytes(b"rot")
    assert main(["archive", "verify", "--json"]) == 65
    assert json.loads(capsys.readouterr().out)["corrupt"][0]["id"] == coadd["id"]
    assert main(["archive", "lineage", "no/such/product"]) == 65
    assert "no product" in capsys.readouterr().err
    bad = tmp_path / "job_1001" / "manifest.json"
    (bad.parent / "out" / "p000_image.dat").write_bytes(b"x")
    assert main(["archive", "register", str(bad)]) == 65
    assert "sha256" in capsys.readouterr().err
    assert main(["archive", "find", "--db", "postgresql+psycopg2://nobody@127.0.0.1:9/x"]) == 75
    assert "retry" in capsys.readouterr().err
    monkeypatch.delenv("COSMODM_DB")
    assert main(["archive", "find"]) == 65


def test_sqlite_reads_do_not_queue_behind_a_writer_and_cannot_write(archive, night):
    """The read engine (survey pages, find, lineage, cone): a deferred BEGIN on the WAL snapshot, query_only."""
    n = len(archive.find(kind="image"))
    with archive.engine.begin() as writer:  # BEGIN IMMEDIATE: holds the write lock
        writer.execute(sa.text("UPDATE products SET size = size WHERE id = 1"))
        with archive.read_engine.connect() as reader:  # would wait 60 s for the lock with BEGIN IMMEDIATE
            assert reader.execute(sa.text("SELECT count(*) FROM products WHERE kind = 'image'")).scalar() == n
        assert len(archive.find(kind="image")) == n
    with archive.read_engine.connect() as reader, pytest.raises(sa.exc.OperationalError, match="readonly"):
        reader.execute(sa.text("DELETE FROM products"))
    assert len(archive.find(kind="image")) == n
