"""The archive on the real PostgreSQL: same schema and answers as SQLite, COPY, concurrency, atomicity."""

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

from cosmodm_ops.archive import Archive, ArchiveError, ArchiveUnavailable
from cosmodm_ops.archive.catalogs import angular_distance, read_ldac_objects
from tests.support import REPO, real_file
from tests.unit.archive_factory import (
    REAL_CAT,
    build_night,
    calib,
    run_workers,
    se_manifest,
    sha,
    write_bytes,
    write_ldac,
)

pytestmark = pytest.mark.postgres

def _schema_head() -> str:
    """The newest migration (the one ``Archive.init()`` upgrades to)."""
    from pathlib import Path

    from alembic.script import ScriptDirectory

    import cosmodm_ops.archive as pkg

    return ScriptDirectory(str(Path(pkg.__file__).with_name("migrations"))).get_current_head()



@pytest.fixture
def archive(pg_url, tmp_path) -> Archive:
    arch = Archive(pg_url, tmp_path / "root")
    arch.init()
    return arch


@pytest.fixture
def night(archive, tmp_path):
    return build_night(archive, tmp_path)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_schema_matches_sqlite(archive, tmp_path):
    lite = Archive(f"sqlite:///{tmp_path / 'lite.db'}", tmp_path / "lite")
    lite.init()
    assert archive.init() == lite.init() == _schema_head()

    def shape(engine):
        insp = sa.inspect(engine)
        return {t: sorted((c["name"], c["nullable"]) for c in insp.get_columns(t)) for t in insp.get_table_names()}

    assert shape(archive.engine) == shape(lite.engine)


def test_night_lineage_and_stale_on_postgres(archive, night, tmp_path):
    c = archive.counts()
    assert c["products"] == 30 and c["lineage"] == 69 and c["objects"] == 6 and c["qa_results"] == 4
    up = archive.lineage(night["coadd_cat"], direction="up", depth=5)
    assert {up["products"][e["input_id"]]["kind"] for e in up["edges"]} == {
        "coadd", "image", "raw", "bias", "flat"}
    new_flat = calib(archive, tmp_path, "flat", b"flat v2")
    assert archive.product(night["flat"])["superseded_by"] == new_flat
    stale = archive.stale(night["flat"])
    assert len(stale) == 26 and max(r["depth"] for r in stale) == 3
    # the same answers as SQLite give (tests/unit/test_archive_db.py), through the CLI too
    from cosmodm_ops.cli import main

    out = subprocess.run([sys.executable, "-m", "cosmodm_ops.cli", "archive", "stale", "--superseded",
                          str(night["flat"]), "--json", "--db", archive.db_url, "--root", str(archive.root)],
                         env=_env(), capture_output=True, text=True, check=True)
    assert sorted(r["id"] for r in json.loads(out.stdout)) == sorted(r["id"] for r in stale)
    assert main(["archive", "verify", "--db", archive.db_url, "--root", str(archive.root)]) == 0


def test_copy_load_and_cone_vs_brute_force(archive, tmp_path):
    real = real_file(REAL_CAT)
    truth = read_ldac_objects(real)
    rng = np.random.default_rng(3)
    ra0, dec0 = float(np.median(truth.ra)), float(np.median(truth.dec))
    synth = write_ldac(tmp_path / "s.fits", ra0 + rng.uniform(-0.2, 0.2, 5000), dec0 + rng.uniform(-0.2, 0.2, 5000))
    archive.register_manifest(se_manifest(tmp_path, 241238, [], catalogs={1: real, 2: synth}))
    with archive.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT number, ra, dec, hpx, mag_auto, mag_psf, flags, expnum, ccd, band "
                                    "FROM objects WHERE ccd = 1 ORDER BY number")).all()
    assert len(rows) == truth.n
    assert [r.number for r in rows] == truth.number.tolist()
    assert np.allclose([r.ra for r in rows], truth.ra) and np.array_equal([r.hpx for r in rows], truth.hpx)
    assert np.allclose([r.mag_auto for r in rows], truth.floats["mag_auto"])
    assert [r.flags for r in rows] == truth.flags.tolist()
    assert {(r.expnum, r.band) for r in rows} == {(241238, "r")}
    s = read_ldac_objects(synth)
    all_ra, all_dec = np.concatenate([truth.ra, s.ra]), np.concatenate([truth.dec, s.dec])
    for ra, dec, r in ((ra0, dec0, 0.03), (ra0 + 0.1, dec0, 0.15), (ra0, dec0, 0.001)):
        d = angular_distance(all_ra, all_dec, ra, dec)
        got = archive.cone(ra, dec, r)
        assert np.allclose([g["dist"] for g in got], np.sort(d[d <= r]))


def test_concurrent_register_of_the_same_manifest_leaves_one_row(archive, tmp_path):
    m = se_manifest(tmp_path, 5001, [("raw", write_bytes(tmp_path / "raw", b"raw 5001"))])
    outs = run_workers(archive, tmp_path, [("manifest", m)] * 4)
    assert len(set(outs)) == 1  # every process got the same product ids
    c = archive.counts()
    assert c["products"] == 12 and c["lineage"] == 2 * (5 + 1) and c["runs"] == 1 and c["objects"] == 2
    assert c["exposures"] == 1 and c["ccd_images"] == 2
    assert archive.verify().clean
    with archive.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM products GROUP BY key HAVING count(*) > 1")).all() == []


def test_concurrent_different_contents_make_revisions_one_current(archive, tmp_path):
    files = [write_bytes(tmp_path / f"flat{i}", f"flat content {i}".encode()) for i in range(3)]
    run_workers(archive, tmp_path, [("store", f) for f in files])
    rows = archive.find(kind="flat", include_superseded=True)
    assert sorted(r["revision"] for r in rows) == [1, 2, 3]
    assert [r["state"] for r in rows].count("current") == 1
    assert sorted(r["sha256"] for r in rows) == sorted(sha(f) for f in files)
    for r in rows:
        assert sha(archive.root / r["path"]) == r["sha256"]


_KILL = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import cosmodm_ops.archive.api as api
    import cosmodm_ops.archive.register as register
    def slow(*a, **k):  # files placed, rows inserted, transaction not committed
        Path(sys.argv[3]).write_text("x")
        time.sleep(60)
    register._index_products = slow
    api.Archive(sys.argv[1], sys.argv[2]).register_manifest(sys.argv[4])
""")


def test_killed_register_on_postgres(archive, tmp_path):
    m = se_manifest(tmp_path, 6001, [])
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _KILL, archive.db_url, str(archive.root), str(marker), str(m)],
                            env=_env())
    try:
        for _ in range(600):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for _ in range(100):  # the server notices the dead client and rolls back
        if archive.counts()["products"] == 0:
            break
        time.sleep(0.1)
    assert archive.counts()["products"] == 0
    assert len(archive.register_manifest(m)) == 12
    assert archive.verify().clean


def test_verify_finds_corrupt_file_on_postgres(archive, night):
    img = archive.find(expnum=1002, ccd=1, kind="weight")[0]
    (archive.root / img["path"]).write_bytes(b"zeros")
    rep = archive.verify()
    assert [c["id"] for c in rep.corrupt] == [img["id"]] and not rep.missing
    assert archive.is_quarantined(img["id"])
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.fetch(img["path"])


def test_unreachable_postgres_is_retryable(tmp_path):
    arch = Archive("postgresql+psycopg2://postgres@127.0.0.1:5432/cosmodm_no_such_db_xyz", tmp_path)
    with pytest.raises(ArchiveUnavailable):
        arch.init()


def test_read_engine_sends_no_transaction_and_reads_the_same(archive, night):
    """The pages' read engine runs in autocommit (no BEGIN, no ROLLBACK at check-in: two round trips fewer per
    request) and answers exactly as a transaction of the write engine does."""
    import psycopg2.extensions as ext

    from cosmodm_ops.ui import queries as Q

    with archive.read_engine.connect() as conn:
        n_read = conn.execute(sa.text("SELECT count(*) FROM products")).scalar()
        assert conn.connection.dbapi_connection.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE
        survey = Q.surveys(conn)[0]
        pages_read = Q.nights(conn, survey=survey)
    with archive.engine.connect() as conn:
        n_write = conn.execute(sa.text("SELECT count(*) FROM products")).scalar()
        assert conn.connection.dbapi_connection.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS
        assert Q.nights(conn, survey=survey) == pages_read
    assert n_read == n_write > 0
    assert pages_read["rows"] and sum(r["exposures"] for r in pages_read["rows"]) > 0


def test_concurrent_bands_of_one_tile_all_reach_tile_words(archive, tmp_path):
    """Five processes register the five bands' coadds of one tile at once: every band's word is kept (each
    rewrite of the tile's words runs under the tile's advisory lock; without it, a transaction that read the
    words before another committed would write them back without that band)."""
    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.archive.tile_words import words_select
    from cosmodm_ops.ui.seed import _fits, _manifest, _product

    tags = {"survey": "demo", "camera": "decam", "stage": "coadd", "version": "v1", "tile": "T1"}
    manifests = []
    for k, band in enumerate("grizY"):
        out = tmp_path / f"job_{band}"
        src = _fits(out / "coadd.fits.fz", np.full((8, 8), float(k)))
        manifests.append(_manifest(out, [_product(out, src, {**tags, "kind": "coadd", "band": band})], [], f"j{band}"))
    run_workers(archive, tmp_path, [("manifest", m) for m in manifests])
    with archive.engine.connect() as conn:
        kept = {(s, t): sorted(w.split()) for s, t, w in conn.execute(sa.select(S.tile_words)).all()}
        live = {(s, t): sorted(w.split()) for s, t, w in conn.execute(words_select()).all()}
    assert kept == live == {("demo", "T1"): ["CY", "Cg", "Ci", "Cr", "Cz"]}
