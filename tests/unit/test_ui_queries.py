"""The survey pages' read side on a seeded archive (SQLite): counts, verdicts, tile states, safe paths, ranges, PNGs."""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter

import numpy as np
import pytest

from cosmodm_ops.archive import Archive
from cosmodm_ops.qa.thumbnails import bin_image, encode_png, focal_plane_preview
from cosmodm_ops.ui import find as F
from cosmodm_ops.ui import queries as Q
from cosmodm_ops.ui import svg
from cosmodm_ops.ui import tiles as T
from cosmodm_ops.ui.files import FileRefused, RangeNotSatisfiable, parse_range, safe_archive_file
from cosmodm_ops.ui.seed import seed_archive


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    arch = Archive(f"sqlite:///{tmp / 'a.db'}", tmp / "archive")
    truth = seed_archive(arch, tmp / "work", nights=1, per_night=5)
    return arch, truth


def test_nights_counts_match_the_seed(seeded):
    arch, truth = seeded
    with arch.engine.connect() as conn:
        data = Q.nights(conn, survey="demo")
        empty = Q.nights(conn, survey="demo", date_from="2030-01-01")
    assert data["total"] == 1 and empty["rows"] == []
    row = data["rows"][0]
    want = Counter(x["verdict"] for x in truth["exposures"].values())
    assert (row["exposures"], row["accepted"], row["quarantined"], row["failed"]) == (
        5, want["accepted"], want["quarantined"], want["failed"]) == (5, 3, 1, 1)
    assert row["runs"] == [{"dag_id": "nightly_ingest", "run_id": truth["run_ids"][row["night"]]}]


def test_night_rows_verdicts_failed_checks_and_depth(seeded):
    arch, truth = seeded
    night = truth["nights"][0]
    with arch.engine.connect() as conn:
        data = Q.night_exposures(conn, survey="demo", night=night, pixel_scale={"decam-mini": 0.263})
    by = {x["expnum"]: x for x in data["exposures"]}
    for expnum, t in truth["exposures"].items():
        assert by[expnum]["verdict"] == t["verdict"]
        assert sorted(c["name"] for c in by[expnum]["failed_checks"]) == t["failed_checks"]
    cloudy = next(x for x in by.values() if x["verdict"] == "quarantined")
    assert cloudy["quarantine"] and "zeropoint_deficit_mag" in cloudy["quarantine"][0]
    ok = next(x for x in by.values() if x["verdict"] == "accepted")
    assert ok["thumbnail_id"] is not None and 20 < ok["depth_mag"] < 28
    assert [p["kind"] for p in data["plots"]] == ["report"]


def test_night_reads_the_exposure_medians_and_falls_back_to_the_ccds(seeded):
    """Zeropoint and sky come from the exposure-level info rows; an exposure archived before those were
    recorded (only its CCDs' rows) gets the median of its CCDs: the same numbers either way."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S

    arch, truth = seeded
    night, qa = truth["nights"][0], S.qa_results
    with arch.engine.connect() as conn:
        ccd_zp: dict[int, list[float]] = {}
        for expnum, v in conn.execute(sa.select(qa.c.expnum, qa.c.value).where(
                qa.c.ccd.isnot(None), qa.c.check_name == "zeropoint_1s")):
            ccd_zp.setdefault(expnum, []).append(v)
        new = {x["expnum"]: x for x in Q.night_exposures(conn, survey="demo", night=night)["exposures"]}
        conn.rollback()
        tx = conn.begin()
        gone = conn.execute(sa.delete(qa).where(qa.c.ccd.is_(None), qa.c.check_name.in_(
            ("zeropoint_1s", "sky_e", "sky_noise_e")))).rowcount
        old = {x["expnum"]: x for x in Q.night_exposures(conn, survey="demo", night=night)["exposures"]}
        tx.rollback()
    measured = [n for n in new if n in ccd_zp]
    assert gone == 3 * len(measured) and len(measured) == 4  # the 5th exposure's job left no QA
    for n in measured:
        assert new[n]["zeropoint_1s"] == pytest.approx(float(np.median(ccd_zp[n])), abs=1e-12)
        assert old[n]["zeropoint_1s"] == pytest.approx(new[n]["zeropoint_1s"], abs=1e-12)
        assert old[n]["sky_e"] == pytest.approx(new[n]["sky_e"]) and old[n]["depth_mag"] == pytest.approx(
            new[n]["depth_mag"])
        assert new[n]["sky_e"] > 0 and not any(c["name"] == "zeropoint_1s" for c in new[n]["checks"])


def test_depth_formula():
    # zp 26.6, 90 s, 1" seeing at 0.263"/px, sky noise 30 e-: 26.6 + 4.886 - 2.5 log10(5 * 30 * sqrt(2.266 * 14.46))
    got = Q.depth_mag(26.6, 90.0, 1.0, 30.0, 0.263)
    assert got == pytest.approx(26.6 + 2.5 * np.log10(90) - 2.5 * np.log10(150 * np.sqrt(2.266 / 0.263**2)))
    assert Q.depth_mag(None, 90.0, 1.0, 30.0, 0.263) is None


def test_exposure_ccd_metrics_mark_the_failed_ccd(seeded):
    arch, truth = seeded
    expnum = sorted(truth["exposures"])[2]  # the one whose CCD 26 failed
    with arch.engine.connect() as conn:
        d = Q.exposure_detail(conn, survey="demo", expnum=expnum)
        m = Q.ccd_metrics(conn, d, [25, 26, 32, 33])
    assert {c for c, v in m.items() if v["failed"]} == {26}
    assert m[26]["why"] == ["no image product"]
    assert sorted(c for c, v in m.items() if not v["failed"]) == [25, 32, 33]
    assert all(m[c]["n_objects"] > 0 for c in (25, 32, 33))
    assert abs(np.median([m[c]["zp_offset_mag"] for c in (25, 32, 33)])) < 1e-9
    fp_svg = svg.focal_plane_svg([], 1, 1, m, "fwhm_arcsec")
    assert "No focal-plane" in fp_svg


def test_tile_states_match_the_seed(seeded):
    arch, truth = seeded
    with arch.engine.connect() as conn:
        data = T.tiles_status(conn, survey="demo")
    assert data["bands"] == ["g", "r"]
    got = {t["name"]: T.tile_states(t, data["bands"]) for t in data["tiles"]}
    assert got == truth["tiles"]
    assert {s for st in got.values() for s in st.values()} >= {"none", "partial", "done", "stale", "failed"}


def test_tiles_with_coadds_are_placed_from_the_coadd_wcs(seeded):
    """The seed writes no coordinates for tiles it coadded: registering the coadd filled them from its WCS."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.coadd.tiling import load_tiling
    from cosmodm_ops.config import load_config

    arch, _ = seeded
    tiling = load_tiling(load_config(survey="demo").survey.tiling)
    coadded = {x["tile"] for x in arch.find(survey="demo", kind="coadd")}
    assert coadded
    with arch.engine.connect() as conn:
        rows = {r.name: (r.ra, r.dec) for r in conn.execute(sa.select(S.tiles).where(S.tiles.c.survey == "demo"))}
    for name in coadded:
        t = tiling.tile(name)
        ra, dec = rows[name]
        assert abs(ra - t.ra) < 1e-6 and abs(dec - t.dec) < 1e-6, (name, rows[name], (t.ra, t.dec))
    assert all(ra is not None and dec is not None for ra, dec in rows.values())


def test_registering_a_coadd_without_wcs_leaves_the_tile_unplaced(tmp_path):
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.ui.seed import _fits, _manifest, _product

    arch = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "archive")
    arch.init()
    out = tmp_path / "job"
    src = _fits(out / "c.fits.fz", np.ones((8, 8)))
    tags = {"survey": "demo", "camera": "decam", "stage": "coadd", "version": "v1", "kind": "coadd", "tile": "T1",
            "band": "g"}
    arch.register_manifest(_manifest(out, [_product(out, src, tags)], [], "coadd-T1-g"))
    with arch.engine.connect() as conn:
        assert conn.execute(sa.select(S.tiles.c.ra, S.tiles.c.dec).where(S.tiles.c.name == "T1")).one() == (None, None)


def test_tile_detail_shows_the_newest_pseudocolour(seeded):
    arch, truth = seeded
    colour = arch.find(survey="demo", kind="pseudocolour")
    assert len(colour) == 1 and colour[0]["band"] == "gr"
    with arch.engine.connect() as conn:
        d = T.tile_detail(conn, survey="demo", name=colour[0]["tile"])
        other = next(n for n in truth["tiles"] if n != colour[0]["tile"])
        assert T.tile_detail(conn, survey="demo", name=other)["pseudocolour"] is None
    assert d["pseudocolour"]["id"] == colour[0]["id"]
    assert (arch.root / d["pseudocolour"]["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_by_tags_expnum_and_tile(seeded):
    arch, truth = seeded
    expnum = min(truth["exposures"])
    tile = next(iter(truth["tiles"]))
    with arch.engine.connect() as conn:
        by_tag = F.search(conn, "kind=coadd band=g")
        by_exp = F.search(conn, str(expnum))
        by_tile = F.search(conn, tile)
        hostile = F.search(conn, "kind=coadd' OR 1=1 --")
    assert len(by_tag["products"]) == len(arch.find(kind="coadd", band="g")) > 0
    assert [x["expnum"] for x in by_exp["exposures"]] == [expnum]
    assert [x["name"] for x in by_tile["tiles"]] == [tile]
    assert hostile["products"] == []


def test_safe_archive_file(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.fits").write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.write_text("s")
    os.symlink(outside, root / "a" / "link")
    assert safe_archive_file(root, "a/f.fits") == (root / "a" / "f.fits").resolve()
    for bad in ("../secret", "a/../../secret", str(outside), "/etc/passwd", "a/%2e%2e/x", "a\\..\\x", "a/link",
                "", "a//f.fits", "a/missing", "a"):
        with pytest.raises(FileRefused):
            safe_archive_file(root, bad)


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-500", 100) == (50, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)


def test_png_is_valid_and_preview_places_ccds():
    img = (np.arange(12 * 7) % 256).astype(np.uint8).reshape(12, 7)
    png = encode_png(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert (w, h) == (7, 12)
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    rows = np.frombuffer(raw, np.uint8).reshape(12, 8)
    assert (rows[:, 0] == 0).all() and (rows[:, 1:] == img).all()
    assert bin_image(np.ones((10, 10)), 3).shape == (3, 3)
    prev = focal_plane_preview({1: np.zeros((4, 2)), 2: np.full((4, 2), 10.0)}, {1: (0, 0), 2: (10, 0)}, size=64)
    assert prev.shape[1] > prev.shape[0] and prev[:, -1].max() == 255 and prev[:, 0].max() == 0


def test_campaign_progress_matches_the_items(seeded):
    from cosmodm_ops.ui.campaigns import campaign_detail, campaigns

    arch, truth = seeded
    with arch.engine.connect() as conn:
        data = campaigns(conn)
        cid, want = next(iter(truth["campaigns"].items()))
        d = campaign_detail(conn, cid, state="failed")
    assert data["total"] == 2
    row = next(r for r in data["rows"] if r["id"] == cid)
    assert row["counts"]["done"] == want.get("done", 0) and row["counts"]["failed"] == want.get("failed", 0)
    assert row["counts"]["running"] == want.get("running", 0) and row["total"] == sum(want.values())
    assert row["core_hours_used"] == pytest.approx(0.4 * want.get("done", 0))
    assert d["n_items"] == want.get("failed", 0) == len(d["failures"])
    assert all("exit code 65" in f["log_tail"] for f in d["failures"])


def test_sky_map_places_each_tile_and_follows_a_moved_tile():
    """One rect per placed tile with its band letters; the placement is memoised on the tile rows, never stale."""
    import re

    tiles = [{"name": "A", "ra": 10.0, "dec": -5.0, "status": "dn"}, {"name": "B", "ra": 11.0, "dec": -5.0, "status": "fp"},
             {"name": "C<x>", "ra": 12.0, "dec": -5.0, "status": "sd"}, {"name": "D", "ra": None, "dec": None, "status": "nn"}]
    out = svg.sky_map_svg(tiles, ["g", "r"], link_prefix="t/")
    rects = re.findall(r'<rect class="tile" data-name="([^"]+)" x="([-\d.]+)" y="[-\d.]+"[^>]* data-s="(\w+)" '
                       r'fill="(#\w+)"', out)
    assert [(n, s, f) for n, _, s, f in rects] == [("A", "dn", svg.STATUS_COLOURS["done"]),
                                                    ("B", "fp", svg.STATUS_COLOURS["failed"]),
                                                    ("C&lt;x&gt;", "sd", svg.STATUS_COLOURS["stale"])]
    assert 'data-bands="g r"' in out and "g failed, r partial" in out and 'href="t/C&lt;x&gt;"' in out
    xs = [float(x) for _, x, _, _ in rects]
    assert xs[0] > xs[1] > xs[2]  # RA increases to the left
    moved = [dict(t) for t in tiles]
    moved[1]["ra"] = 10.5  # e.g. placed by its coadd's WCS: a new layout, not the memoised one
    x_b = float(re.search(r'data-name="B" x="([-\d.]+)"', svg.sky_map_svg(moved, ["g", "r"], link_prefix="t/"))[1])
    assert xs[0] > x_b > xs[1]


def test_campaign_items_and_nights_page_by_keyset(seeded):
    """Next and previous pages by the last/first key (no OFFSET) walk every row once, in order."""
    from cosmodm_ops.ui.campaigns import campaign_detail

    arch, truth = seeded
    cid, want = next(iter(truth["campaigns"].items()))
    with arch.engine.connect() as conn:
        seen, pages, after = [], [], None
        while True:
            d = campaign_detail(conn, cid, after=after, per_page=2)
            seen += [x["id"] for x in d["items"]]
            pages.append(d["page"])
            if d["next_after"] is None:
                break
            after = d["next_after"]
        back = campaign_detail(conn, cid, before=d["prev_before"], per_page=2) if d["prev_before"] else None
        n_nights = Q.nights(conn, survey="demo")["total"]
        first = Q.nights(conn, survey="demo", per_page=1)
        second = Q.nights(conn, survey="demo", per_page=1, before=first["next_before"]) if n_nights > 1 else None
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == sum(want.values())
    assert pages == list(range(1, len(pages) + 1)) and d["pages"] == len(pages)
    if back is not None:
        assert [x["id"] for x in back["items"]] == seen[-len(d["items"]) - 2:-len(d["items"])]
    assert first["page"] == 1 and first["prev_after"] is None
    if second is not None:
        assert second["rows"][0]["night"] < first["rows"][0]["night"] and second["prev_after"] == second["rows"][0]["night"]


def test_products_list_pages_by_keyset(seeded):
    """Next pages walk every current product once, in id order; a previous page is the rows before, as the DB has them."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.ui.paging import products_page

    arch, _ = seeded
    p = S.products
    with arch.engine.connect() as conn:
        want = [r[0] for r in conn.execute(sa.select(p.c.id).where(p.c.survey == "demo", p.c.state == "current")
                                           .order_by(p.c.id))]
        seen, pages, after = [], [], None
        while True:
            d = products_page(conn, survey="demo", after=after, per_page=7)
            seen += [x["id"] for x in d["rows"]]
            pages.append(d["page"])
            if d["next_after"] is None:
                break
            after = d["next_after"]
        back = products_page(conn, survey="demo", before=d["prev_before"], per_page=7)
        images = products_page(conn, kind="image", per_page=1000)
        with pytest.raises(ValueError, match="unknown tag"):
            products_page(conn, path="x")
    assert len(want) > 14 and seen == want and d["total"] == len(want)
    assert pages == list(range(1, len(pages) + 1)) and d["pages"] == len(pages)
    start = len(seen) - len(d["rows"]) - 7
    assert [x["id"] for x in back["rows"]] == want[start:start + 7] and back["page"] == len(pages) - 1
    assert {x["kind"] for x in images["rows"]} == {"image"} and images["next_after"] is None
    assert images["total"] == len(arch.find(kind="image"))


def test_nights_second_page_matches_the_database(tmp_path):
    """Five nights, two per page: the second page holds the 3rd and 4th newest nights with their counts."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S

    arch = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "archive")
    arch.init()
    nights = [f"2026-03-0{d}" for d in range(1, 6)]
    exps, prods, quar = [], [], []
    for k, night in enumerate(nights):
        for j in range(k + 2):  # a different count each night
            expnum = 100 * k + j
            exps.append({"survey": "s", "camera": "decam", "night": night, "expnum": expnum, "band": "g",
                         "created_at": "2026-03-10"})
            if j:  # the first exposure of each night was never processed
                prods.append({"key": f"q{expnum}", "revision": 1, "survey": "s", "camera": "decam",
                              "stage": "single_epoch", "version": "v1", "kind": "qa", "night": night, "expnum": expnum,
                              "path": f"q/{expnum}.json", "sha256": f"{expnum:064x}", "size": 1, "state": "current",
                              "created_at": "2026-03-10"})
            if j == 1 and k % 2:
                quar.append({"survey": "s", "night": night, "expnum": expnum, "reasons": '["QA seeing"]',
                             "released": 0, "created_at": "2026-03-10"})
    with arch.engine.begin() as conn:
        for table, rows in ((S.exposures, exps), (S.products, prods), (S.quarantine, quar)):
            conn.execute(sa.insert(table), rows)
    with arch.read_engine.connect() as conn:
        first = Q.nights(conn, survey="s", per_page=2)
        second = Q.nights(conn, survey="s", per_page=2, before=first["next_before"])
        back = Q.nights(conn, survey="s", per_page=2, after=second["prev_after"])
        e, p, q = S.exposures, S.products, S.quarantine
        n_exp = dict(conn.execute(sa.select(e.c.night, sa.func.count()).group_by(e.c.night)).all())
        n_qa = dict(conn.execute(sa.select(p.c.night, sa.func.count()).where(p.c.kind == "qa").group_by(p.c.night)).all())
        n_held = dict(conn.execute(sa.select(q.c.night, sa.func.count()).where(q.c.released == 0)
                                   .group_by(q.c.night)).all())
    assert first["total"] == 5 and first["pages"] == 3 and first["next_before"] == "2026-03-04"
    assert [r["night"] for r in second["rows"]] == ["2026-03-03", "2026-03-02"] and second["page"] == 2
    for r in second["rows"]:
        held = n_held.get(r["night"], 0)
        assert (r["exposures"], r["accepted"], r["quarantined"], r["failed"]) == (
            n_exp[r["night"]], n_qa[r["night"]] - held, held, n_exp[r["night"]] - n_qa[r["night"]])
    assert second["next_before"] == "2026-03-02" and second["prev_after"] == "2026-03-03"
    assert [r["night"] for r in back["rows"]] == [r["night"] for r in first["rows"]] and back["prev_after"] is None


def test_migration_0007_fills_night_runs_from_the_products(seeded, tmp_path):
    """An archive made before ``night_runs`` gets the same rows from its products as registration keeps."""
    import sqlite3

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    import cosmodm_ops.archive.db as adb
    from cosmodm_ops.archive import schema as S

    arch, truth = seeded
    src = sqlite3.connect(arch.engine.url.database)
    dst = sqlite3.connect(tmp_path / "copy.db")
    src.backup(dst)
    src.close(), dst.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(adb.Path(adb.__file__).with_name("migrations")))
    rows = sa.select(S.night_runs).order_by(*S.night_runs.c)
    with engine.begin() as conn:
        kept = conn.execute(rows).all()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006_ui")
        assert "night_runs" not in sa.inspect(conn).get_table_names()
        command.upgrade(cfg, "head")
        filled = conn.execute(rows).all()
    engine.dispose()
    assert filled == kept == [("demo", n, "nightly_ingest", truth["run_ids"][n]) for n in truth["nights"]]


def test_run_products_pages_through_every_product_of_the_run_once(seeded):
    """The DAG-run and task-instance views page (newest first) instead of cutting the list at 500 rows."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S

    arch, truth = seeded
    night = truth["nights"][0]
    p, r = S.products, S.runs
    with arch.engine.connect() as conn:
        want = [i for (i,) in conn.execute(sa.select(p.c.id).join(r, r.c.id == p.c.run_id).where(
            r.c.dag_id == "nightly_ingest", r.c.run_id == truth["run_ids"][night]).order_by(p.c.id.desc()))]
        seen, after, pages = [], None, []
        while True:
            d = Q.run_products(conn, dag_id="nightly_ingest", run_id=truth["run_ids"][night], after=after, per_page=7)
            seen += [x["id"] for x in d["rows"]]
            pages.append(d["page"])
            if d["next_after"] is None:
                break
            after = d["next_after"]
        back = Q.run_products(conn, dag_id="nightly_ingest", run_id=truth["run_ids"][night], before=seen[7],
                              per_page=7)
        none = Q.run_products(conn, dag_id="nightly_ingest", run_id="no-such-run")
    assert len(want) > 14 and seen == want and d["total"] == len(want)
    assert pages == list(range(1, -(-len(want) // 7) + 1)) and d["pages"] == pages[-1]
    assert [x["id"] for x in back["rows"]] == want[:7] and back["prev_before"] is None
    assert none["rows"] == [] and none["total"] == 0


def _words(conn, stmt):
    return {(s, t): sorted(w.split()) for s, t, w in conn.execute(stmt).all()}


def test_tile_words_kept_by_registration_match_the_products(seeded, tmp_path):
    """``tile_words`` (the tiles page's per-tile words) equals the aggregate of the current coadd products, after
    the seed's registrations, and an archive made before it gets the same rows from migration 0009."""
    import sqlite3

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    import cosmodm_ops.archive.db as adb
    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.archive.tile_words import words_select

    arch, truth = seeded
    with arch.engine.connect() as conn:
        kept, live = _words(conn, sa.select(S.tile_words)), _words(conn, words_select())
    want = {("demo", name): sorted(f"{'CK'[i]}{b}" for b, st in bands.items() if st != "none"
                                   for i in range(1 if st == "partial" else 2))
            for name, bands in truth["tiles"].items() if any(st != "none" for st in bands.values())}
    assert kept == live == want and len(want) == 4
    src, dst = sqlite3.connect(arch.engine.url.database), sqlite3.connect(tmp_path / "copy.db")
    src.backup(dst)
    src.close(), dst.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(adb.Path(adb.__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008_campaign_progress")
        assert "tile_words" not in sa.inspect(conn).get_table_names()
        command.upgrade(cfg, "head")
        assert _words(conn, sa.select(S.tile_words)) == kept
    engine.dispose()


def test_tile_words_follow_a_new_band_and_keep_through_a_revision(tmp_path):
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S
    from cosmodm_ops.ui.seed import _fits, _manifest, _product

    arch = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "archive")
    arch.init()
    tags = {"survey": "demo", "camera": "decam", "stage": "coadd", "version": "v1", "tile": "T1"}

    def register(band: str, kind: str, value: float, job: str) -> None:
        out = tmp_path / job
        src = _fits(out / f"{kind}.fits.fz", np.full((8, 8), value))
        arch.register_manifest(_manifest(out, [_product(out, src, {**tags, "kind": kind, "band": band})], [], job))

    def words() -> dict:
        with arch.engine.connect() as conn:
            return _words(conn, sa.select(S.tile_words))

    register("g", "coadd", 1.0, "j1")
    assert words() == {("demo", "T1"): ["Cg"]}
    register("r", "coadd_homog", 1.0, "j2")
    assert words() == {("demo", "T1"): ["Cg", "Hr"]}
    register("g", "coadd", 2.0, "j3")  # a new revision of the g coadd: the old one superseded, the words the same
    assert words() == {("demo", "T1"): ["Cg", "Hr"]}
    assert len(arch.find(survey="demo", kind="coadd", include_superseded=True)) == 2
    with arch.engine.connect() as conn:
        assert T.tiles_status(conn, survey="demo")["tiles"] == [
            {"name": "T1", "ra": None, "dec": None, "status": "pp"}]
