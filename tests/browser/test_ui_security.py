"""The survey pages' security on a real api-server: 401s, forged and expired JWTs, path traversal, a read-only viewer.

Raw HTTP (http.client) so that ``..`` and encoded slashes reach the server as written.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.parse

import jwt
import pytest
import sqlalchemy as sa

from cosmodm_ops.archive import schema as S

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PAGES = ["/cosmodm/", "/cosmodm/api/nights", "/cosmodm/tiles", "/cosmodm/api/tiles", "/cosmodm/search?q=1001001",
         "/cosmodm/static/cosmodm.js", "/cosmodm/download/1", "/cosmodm/product/1", "/cosmodm/api/product/1",
         "/cosmodm/lineage/1", "/cosmodm/products", "/cosmodm/api/products", "/cosmodm/api/ping"]


def request(url: str, path: str, *, token: str | None = None, cookie: str | None = None, method: str = "GET",
            headers: dict[str, str] | None = None, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if cookie:
        h["Cookie"] = f"_token={cookie}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


def test_no_token_forged_or_expired_is_401(survey_ui):
    good = survey_ui.token("admin")
    claims = jwt.decode(good, options={"verify_signature": False})
    header = jwt.get_unverified_header(good)
    forged = jwt.encode(claims, os.urandom(64).hex(), algorithm=header["alg"])
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60, "iat": int(time.time()) - 3600,
                          "nbf": int(time.time()) - 3600}, survey_ui.server.jwt_secret, algorithm=header["alg"])
    for path in PAGES:
        assert request(survey_ui.url, path)[0] == 401, path
        assert request(survey_ui.url, path, token=forged)[0] == 401, path
        assert request(survey_ui.url, path, cookie=forged)[0] == 401, path
        assert request(survey_ui.url, path, token=expired)[0] == 401, path
        assert request(survey_ui.url, path, token="garbage")[0] == 401, path
        assert request(survey_ui.url, path, token=good)[0] == 200, path
        assert request(survey_ui.url, path, cookie=good)[0] == 200, path


def test_download_headers_and_ranges(survey_ui):
    tok = survey_ui.token("viewer")
    row = survey_ui.archive.find(kind="catalog")[0]
    status, h, body = request(survey_ui.url, f"/cosmodm/download/{row['id']}", token=tok)
    assert status == 200 and int(h["content-length"]) == row["size"] == len(body)
    assert h["x-checksum-sha256"] == row["sha256"] == hashlib.sha256(body).hexdigest()
    assert h["accept-ranges"] == "bytes"
    status, h, part = request(survey_ui.url, f"/cosmodm/download/{row['id']}", token=tok,
                              headers={"Range": "bytes=10-99"})
    assert status == 206 and part == body[10:100] and h["content-length"] == "90"
    assert h["content-range"] == f"bytes 10-99/{row['size']}"
    status, _, tail = request(survey_ui.url, f"/cosmodm/download/{row['id']}", token=tok,
                              headers={"Range": "bytes=-16"})
    assert status == 206 and tail == body[-16:]
    status, h, _ = request(survey_ui.url, f"/cosmodm/download/{row['id']}", token=tok,
                           headers={"Range": f"bytes={row['size'] + 5}-"})
    assert status == 416 and h["content-range"] == f"bytes */{row['size']}"
    status, _, same = request(survey_ui.url, f"/cosmodm/file/{row['path']}", token=tok)
    assert status == 200 and same == body


def test_downloads_stay_inside_the_archive_root(survey_ui, tmp_path):
    tok = survey_ui.token("admin")
    arch = survey_ui.archive
    secret = tmp_path / "outside.txt"
    secret.write_text("SECRET OUTSIDE THE ARCHIVE")
    link = arch.root / "demo" / "link.fits"
    link.symlink_to(secret)
    with arch.engine.begin() as conn:  # a row that points at the symlink (as a tampered DB would)
        pid = conn.execute(sa.insert(S.products).values(
            key="forged", revision=1, survey="demo", camera="decam-mini", stage="calib", version="v1", kind="flat",
            path="demo/link.fits", sha256=hashlib.sha256(secret.read_bytes()).hexdigest(), size=secret.stat().st_size,
            state="current", created_at="2026-01-01T00:00:00+00:00").returning(S.products.c.id)).scalar_one()
        pid2 = conn.execute(sa.insert(S.products).values(
            key="forged2", revision=1, survey="demo", camera="decam-mini", stage="calib", version="v1", kind="flat",
            path="../../../../etc/passwd", sha256="0" * 64, size=1, state="current",
            created_at="2026-01-01T00:00:00+00:00").returning(S.products.c.id)).scalar_one()
    try:
        for path in [f"/cosmodm/download/{pid}", f"/cosmodm/download/{pid2}", "/cosmodm/file/demo/link.fits",
                     "/cosmodm/file/../../../../etc/passwd", "/cosmodm/file/demo/../../../../etc/passwd",
                     "/cosmodm/file/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/cosmodm/file/demo%2f..%2f..%2fetc%2fpasswd",
                     "/cosmodm/file/%2Fetc%2Fpasswd", "/cosmodm/file//etc/passwd", f"/cosmodm/file/{secret}",
                     "/cosmodm/file/demo/%252e%252e/%252e%252e/etc/passwd", "/cosmodm/file/demo\\..\\..\\etc\\passwd"]:
            status, _, body = request(survey_ui.url, path, token=tok)
            assert status in (400, 404, 422), (path, status)
            assert b"SECRET" not in body and b"root:" not in body, path
    finally:
        with arch.engine.begin() as conn:
            conn.execute(sa.delete(S.products).where(S.products.c.id.in_([pid, pid2])))
        link.unlink()


def test_viewer_reads_but_cannot_trigger_cancel_or_approve(survey_ui):
    viewer = survey_ui.token("viewer")
    night = survey_ui.truth["nights"][0]
    run_id = survey_ui.truth["run_ids"][night]
    for path in ("/cosmodm/", f"/cosmodm/night/demo/{night}", "/cosmodm/api/tiles"):
        assert request(survey_ui.url, path, token=viewer)[0] == 200
    assert request(survey_ui.url, "/api/v2/dags/nightly_ingest/dagRuns", token=viewer)[0] == 200
    status, _, _ = request(survey_ui.url, "/api/v2/dags/nightly_ingest/dagRuns", token=viewer, method="POST",
                           body={"logical_date": None, "conf": {}})
    assert status == 403
    quoted = urllib.parse.quote(run_id, safe="")
    status, _, _ = request(survey_ui.url, f"/api/v2/dags/nightly_ingest/dagRuns/{quoted}", token=viewer,
                           method="PATCH", body={"state": "failed"})
    assert status == 403
    status, _, _ = request(survey_ui.url, f"/api/v2/dags/nightly_ingest/dagRuns/{quoted}/hitlDetails", token=viewer,
                           method="GET")
    assert status in (200, 404)
    status, _, _ = request(survey_ui.url, f"/api/v2/dags/nightly_ingest/dagRuns/{quoted}/taskInstances/t/-1/hitlDetails",
                           token=viewer, method="PATCH", body={"chosen_options": ["Approve"], "params_input": {}})
    assert status == 403
    # the survey app itself has no write route at all
    admin = survey_ui.token("admin")
    for path in ("/cosmodm/", "/cosmodm/api/nights", "/cosmodm/download/1"):
        assert request(survey_ui.url, path, token=admin, method="POST", body={})[0] == 405


def test_task_instance_view_pages_its_products(survey_ui):
    """The task-instance view lists every product the task registered once, newest first, over its pages
    (following the page's own "next" links), with the total as the database counts it."""
    import re

    p, r = S.products, S.runs
    with survey_ui.archive.engine.connect() as conn:
        dag_id, run_id, task_id, n = conn.execute(
            sa.select(r.c.dag_id, r.c.run_id, r.c.task_id, sa.func.count()).join(p, p.c.run_id == r.c.id)
            .where(r.c.task_id.isnot(None)).group_by(r.c.dag_id, r.c.run_id, r.c.task_id)
            .order_by(sa.func.count().desc())).first()
        want = [i for (i,) in conn.execute(sa.select(p.c.id).join(r, r.c.id == p.c.run_id).where(
            r.c.dag_id == dag_id, r.c.run_id == run_id, r.c.task_id == task_id).order_by(p.c.id.desc()))]
    assert n == len(want) > 5
    tok = survey_ui.token("viewer")
    base = "/cosmodm/ti/" + "/".join(urllib.parse.quote(x, safe="") for x in (dag_id, run_id, task_id))
    path, seen, pages = f"{base}?per_page=4", [], 0
    while path:
        status, _, body = request(survey_ui.url, path, token=tok)
        html = body.decode()
        assert status == 200 and f"{len(want)} products registered" in html
        seen += [int(x) for x in re.findall(r'<tr data-product="(\d+)"', html)]
        nxt = re.search(r'href="(\?[^"]*after=\d+)" id="next"', html)
        path = base + nxt.group(1).replace("&amp;", "&") if nxt else None
        pages += 1
    assert seen == want and pages == -(-len(want) // 4)
