"""The survey pages in a real headless Chromium (Debian's) through Airflow's own login and navigation.

Night -> exposure -> product -> lineage node -> download, with what each page shows compared with the
archive's rows; any console error or failed request fails the test. A screenshot of every page goes to
``test-output/browser/``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import pytest
import sqlalchemy as sa

from cosmodm_ops.archive import schema as S
from tests.fixtures.browser import Watch, login, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

def test_click_through_the_survey(survey_ui, browser, tmp_path):
    arch, truth = survey_ui.archive, survey_ui.truth
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    login(page, survey_ui.url, "admin", survey_ui.server.passwords["admin"])
    page.wait_for_load_state("networkidle")
    watch = Watch(page)

    # Airflow's navigation: the top-level "Survey" entry opens the plugin in Airflow's frame
    page.get_by_role("link", name="Survey").first.click()
    page.wait_for_url(re.compile(r".*/plugin/cosmodm.*"))
    frame = page.frame_locator("iframe[title=Survey]")
    frame.locator("table#nights tbody tr").first.wait_for()
    shot(page, "nights")
    for night in truth["nights"]:
        row = frame.locator(f"tr[data-night='{night}']")
        want = Counter(x["verdict"] for x in truth["exposures"].values() if x["night"] == night)
        assert row.locator("td.exposures").inner_text() == str(sum(want.values()))
        assert row.locator("td.accepted").inner_text() == str(want["accepted"])
        assert row.locator("td.quarantined").inner_text() == str(want["quarantined"])
        assert row.locator("td.failed").inner_text() == str(want["failed"])
    assert "nightly_ingest: queued" in frame.locator(f"tr[data-night='{truth['nights'][0]}']").inner_text()

    # night: one row per exposure, the verdict and the failed checks spelled out
    night = truth["nights"][0]
    frame.locator(f"tr[data-night='{night}'] a.night-link").click()
    frame.locator("table#exposures").wait_for()
    frame.locator("img.thumb").first.wait_for()
    shot(page, "night")
    mine = {e: x for e, x in truth["exposures"].items() if x["night"] == night}
    assert frame.locator("table#exposures tbody tr").count() == len(mine)
    for expnum, x in mine.items():
        row = frame.locator(f"tr[data-expnum='{expnum}']")
        assert row.get_attribute("data-verdict") == x["verdict"]
        for name in x["failed_checks"]:
            assert name in row.locator("td.verdict").inner_text()
    # every thumbnail loaded (a PNG with a width)
    assert frame.locator("img.thumb").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")

    # exposure with a failed CCD: the focal plane marks it, the QA table has every value
    bad = next(e for e, x in mine.items() if x["verdict"] == "accepted" and
               arch.qa_results(expnum=e, ccd=26) == [])
    frame.locator(f"tr[data-expnum='{bad}'] a.exposure-link").click()
    frame.locator("svg.focal-plane").wait_for()
    shot(page, "exposure")
    assert frame.locator("svg.focal-plane g.ccd").count() == 4
    assert frame.locator("svg.focal-plane g.ccd.failed").get_attribute("data-ccd") == "26"
    assert frame.locator("table#qa tbody tr").count() == len(arch.qa_results(expnum=bad))
    frame.locator("select#metric").select_option("astrom_rms_mas")
    frame.locator("svg[aria-label='focal plane coloured by astrom_rms_mas']").wait_for()

    # product: a catalog, its checksum and size as the archive has them
    cat = arch.find(expnum=bad, kind="catalog", ccd=25)[0]
    frame.locator(f"tr[data-product='{cat['id']}'] a.product-link").click()
    frame.locator("#sha256").wait_for()
    shot(page, "product")
    assert frame.locator("#sha256").inner_text() == cat["sha256"]
    assert frame.locator("#size").get_attribute("data-bytes") == str(cat["size"])

    # lineage: click the image it was made from
    image = arch.find(expnum=bad, kind="image", ccd=25)[0]
    frame.locator(f"svg#lineage a[data-product='{image['id']}']").click()
    frame.locator(f"h1:has-text('Product {image['id']}')").wait_for()
    shot(page, "lineage")
    assert frame.locator("#sha256").inner_text() == image["sha256"]

    # download: the bytes match the recorded sha256
    with page.expect_download() as info:
        frame.locator("a#download").click()
    path = tmp_path / "download.bin"
    info.value.save_as(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]

    # tiles: one square per tile, the counts by status match the seed
    frame.locator("a#nav-tiles").click()
    frame.locator("svg#skymap").wait_for()
    shot(page, "tiles")
    with arch.engine.connect() as conn:
        n_tiles = conn.execute(sa.select(sa.func.count()).select_from(S.tiles)).scalar()
    assert frame.locator("svg#skymap rect.tile").count() == n_tiles
    for band in ("g", "r"):
        want = Counter(st[band] for st in truth["tiles"].values())
        for state, n in want.items():
            assert frame.locator(f"td[data-band='{band}'][data-state='{state}']").inner_text() == str(n), (band, state)
    frame.locator("button#zoom-in").click()
    frame.locator("select#band").select_option("r")
    done = next(n for n, st in truth["tiles"].items() if st["r"] == "done")
    assert frame.locator(f"rect[data-name='{done}']").get_attribute("fill") == "#4caf50"
    frame.locator(f"rect[data-name='{done}']").dispatch_event("click")
    frame.locator("table#qa").wait_for()
    shot(page, "tile")
    assert frame.locator("img.preview").count() >= 1
    # the newest pseudo-colour product of the tile, loaded (a PNG of its size), or the plain "not yet"
    colour = arch.find(survey="demo", tile=done, kind="pseudocolour")
    if colour:
        img = frame.locator("img.pseudocolour")
        assert img.get_attribute("src").endswith(f"/download/{max(c['id'] for c in colour)}?inline=1")
        # decode() waits for the load (on a busy machine the PNG may still be on its way when the table shows)
        assert img.evaluate("i => i.decode().then(() => i.naturalWidth)") == 48
    else:
        assert frame.locator("#pseudocolour p.none").inner_text() == "No pseudo-colour image yet."
    assert any(arch.find(survey="demo", kind="pseudocolour")), "the seed archives one pseudo-colour PNG"

    # campaigns: progress counts as the items table has them; the failed items with their log tails
    frame.locator("a#nav-campaigns").click()
    frame.locator("table#campaigns").wait_for()
    shot(page, "campaigns")
    cid, want = next(iter(truth["campaigns"].items()))
    row = frame.locator(f"tr[data-campaign='{cid}']")
    for group in ("done", "failed", "running"):
        assert row.locator(f"span.count-{group}").inner_text() == f"{group} {want.get(group, 0)}"
    row.locator("a.campaign-link").click()
    frame.locator("select#item-state").select_option("failed")
    frame.locator("table#items").wait_for()
    shot(page, "campaign")
    assert frame.locator("table#items tbody tr").count() == want.get("failed", 0)
    assert frame.locator("details.failure").count() == want.get("failed", 0)

    # search and cone
    frame.locator("input#search-q").fill("kind=coadd band=r")
    frame.locator("input#search-q").press("Enter")
    frame.locator("table.products").wait_for()
    shot(page, "search")
    assert frame.locator("table.products tbody tr").count() == len(arch.find(kind="coadd", band="r"))
    frame.locator("input[name=ra]").first.fill("150.1")
    frame.locator("input[name=dec]").first.fill("2.0")
    frame.locator("input[name=radius]").first.fill("0.05")
    frame.locator("input[name=radius]").first.press("Enter")
    frame.locator("table#objects").wait_for()
    shot(page, "cone")
    want_objects = min(200, len(arch.cone(150.1, 2.0, 0.05)))
    assert frame.locator("table#objects tbody tr").count() == want_objects

    # the DAG run's external view opens its night
    run_id = truth["run_ids"][night]
    page.goto(f"{survey_ui.url}/dags/nightly_ingest/runs/{run_id}/plugin/cosmodm-run")
    frame = page.frame_locator("iframe")
    frame.locator(f"h1:has-text('Night {night}')").wait_for(timeout=60000)
    shot(page, "dag_run_view")
    assert not watch.problems, "\n".join(watch.problems)
    ctx.close()


def test_nights_next_page_and_products_pages(survey_ui, browser):
    """More than one page of nights: "next" opens the older night, its counts as the database has them; the
    products list pages by its Link header through every current product once."""
    import json
    import urllib.request

    arch, truth = survey_ui.archive, survey_ui.truth
    assert len(truth["nights"]) >= 2
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    login(page, survey_ui.url, "viewer", survey_ui.server.passwords["viewer"])
    watch = Watch(page)
    page.goto(f"{survey_ui.url}/cosmodm/?per_page=1")
    assert page.locator("table#nights tbody tr").count() == 1 and page.locator("#prev").count() == 0
    page.click("#next")
    page.wait_for_url(re.compile(r".*before=.*"))
    rows = page.locator("table#nights tbody tr")
    assert rows.count() == 1 and "page 2 of" in page.locator("p.pager").inner_text()
    night = rows.first.get_attribute("data-night")
    assert night == sorted(truth["nights"], reverse=True)[1]
    e, p, q = S.exposures, S.products, S.quarantine
    with arch.engine.connect() as conn:
        n_exp = conn.execute(sa.select(sa.func.count()).where(e.c.night == night)).scalar()
        n_qa = conn.execute(sa.select(sa.func.count(sa.distinct(p.c.expnum))).where(
            p.c.night == night, p.c.kind == "qa", p.c.stage == "single_epoch", p.c.state == "current")).scalar()
        held = conn.execute(sa.select(sa.func.count()).where(q.c.night == night, q.c.released == 0,
                                                             q.c.expnum.isnot(None), q.c.ccd.is_(None))).scalar()
        want_ids = [r[0] for r in conn.execute(sa.select(p.c.id).where(p.c.survey == "demo", p.c.state == "current")
                                               .order_by(p.c.id))]
    shown = [rows.first.locator(f"td.{k}").inner_text() for k in ("exposures", "accepted", "quarantined", "failed")]
    assert shown == [str(n_exp), str(n_qa - held), str(held), str(n_exp - n_qa)]
    page.click("#prev")
    page.wait_for_url(re.compile(r".*after=.*"))
    assert page.locator("table#nights tbody tr").first.get_attribute("data-night") == max(truth["nights"])
    assert watch.problems == []
    ctx.close()

    tok, url, seen = survey_ui.token("viewer"), f"{survey_ui.url}/cosmodm/products?survey=demo&limit=5", []
    while url:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})) as r:
            seen += [x["id"] for x in json.loads(r.read())]
            assert r.headers["X-Total-Count"] == str(len(want_ids))
            nxt = re.search(r'<([^>]+)>; rel="next"', r.headers.get("Link") or "")
        url = nxt[1] if nxt else None
    assert seen == want_ids and len(want_ids) > 5
