"""The FastAPI app behind the Airflow UI plugin: the survey pages, their JSON, and downloads.

Mounted by the Airflow API server at ``/cosmodm`` (``plugins/cosmodm_plugin.py``). Every route,
the static files included, depends on :func:`require_user`: Airflow's own ``get_user`` (the
api-server's JWT from the ``_token`` cookie or a Bearer header, checked by the configured auth
manager), with an invalid token answered 401 like a missing or expired one. The app only reads:
nothing here triggers, cancels or approves (that stays with Airflow's own, permission-checked API).
Pages are Jinja2 templates with autoescape; SQL lives in :mod:`cosmodm_ops.ui.queries`
(parameterized); downloads go through :func:`cosmodm_ops.ui.files.safe_archive_file`.
Archive location: ``COSMODM_DB`` and ``COSMODM_ARCHIVE_ROOT`` in the API server's environment.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as P
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from cosmodm_ops.airflow import webapp_downloads as dl
from cosmodm_ops.airflow.webapp_support import (
    HERE,
    RequestGate,
    dag_run_states,
    focal_plane_of,
    freeze_startup_heap,
    pixel_scales,
    preload,
    templates,
)
from cosmodm_ops.ui import find as F
from cosmodm_ops.ui import queries as Q
from cosmodm_ops.ui import svg
from cosmodm_ops.ui import tiles as T

__all__ = ["app", "require_user"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
_NIGHT = r"^\d{4}-\d{2}-\d{2}$"
_DATE = r"^(\d{4}-\d{2}-\d{2})?$"  # a date filter: a night, or empty (the form's blank field)


async def require_user(request: Request) -> Any:
    """Airflow's authenticated user, or 401 (no token, an expired one, or one the auth manager refuses)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    creds = await bearer_scheme(request)
    try:
        return await get_user(request, None, creds)
    except HTTPException as err:
        if err.status_code in (401, 403):
            raise HTTPException(401, "Not authenticated: log in to Airflow", headers={"WWW-Authenticate": "Bearer"}
                                ) from err
        raise


preload()
freeze_startup_heap()
app = FastAPI(title="CosmoDM survey pages", dependencies=[Depends(require_user)])
app.add_middleware(RequestGate, on_first_request=freeze_startup_heap)
_lock = threading.Lock()
_archives: dict[tuple[str, str], Any] = {}


def archive() -> Any:
    """The archive named by ``COSMODM_DB`` / ``COSMODM_ARCHIVE_ROOT`` (one engine per process)."""
    from cosmodm_ops.archive import Archive

    db, root = os.environ.get("COSMODM_DB"), os.environ.get("COSMODM_ARCHIVE_ROOT")
    if not db or not root:
        raise HTTPException(503, "set COSMODM_DB and COSMODM_ARCHIVE_ROOT in the API server's environment")
    with _lock:
        if (db, root) not in _archives:
            _archives[(db, root)] = Archive(db, root)
        return _archives[(db, root)]


def page(request: Request, template: str, **ctx: Any) -> HTMLResponse:
    """Render a template with the mount point (``base``) and the survey list."""
    from markupsafe import Markup

    base = request.scope.get("root_path", "").rstrip("/")
    ctx = {k: Markup(v) if k.endswith("_svg") else v for k, v in ctx.items()}
    html = templates().get_template(template).render(base=base, airflow=base.rsplit("/", 1)[0], **ctx)
    return HTMLResponse(html)


# ---------------------------------------------------------------------------------------------- nights
def _nights_data(survey: str | None, date_from: str | None, date_to: str | None, before: str | None,
                 after: str | None, per_page: int) -> dict[str, Any]:
    date_from, date_to = date_from or None, date_to or None  # the filter form sends empty dates
    with archive().read_engine.connect() as conn:
        all_surveys = Q.surveys(conn)
        survey = survey or (all_surveys[0] if all_surveys else "demo")
        data = Q.nights(conn, survey=survey, date_from=date_from, date_to=date_to, before=before, after=after,
                        per_page=per_page)
    states = dag_run_states([(x["dag_id"], x["run_id"]) for n in data["rows"] for x in n["runs"]])
    for n in data["rows"]:
        for x in n["runs"]:
            x["state"] = states.get((x["dag_id"], x["run_id"]), "unknown")
    # the pager's links keep the filters and the page size (the key of the page is added to them)
    keep = {"survey": survey, "from": date_from, "to": date_to, "per_page": per_page}
    query = urlencode({k: v for k, v in keep.items() if v is not None})
    return {**data, "survey": survey, "surveys": all_surveys, "date_from": date_from, "date_to": date_to,
            "query": query}


@app.get("/", response_class=HTMLResponse)
def nights_page(request: Request, survey: str | None = Query(None, pattern=_NAME),
                date_from: str | None = Query(None, alias="from", pattern=_DATE),
                date_to: str | None = Query(None, alias="to", pattern=_DATE),
                before: str | None = Query(None, pattern=_NIGHT), after: str | None = Query(None, pattern=_NIGHT),
                per_page: int = Query(30, ge=1, le=200)) -> HTMLResponse:
    """Nights: exposures, accepted, quarantined, failed, the DAG runs; filters by survey and dates; keyset pages."""
    return page(request, "nights.html", **_nights_data(survey, date_from, date_to, before, after, per_page))


@app.get("/api/nights", response_model=None)
def nights_json(survey: str | None = Query(None, pattern=_NAME),
                date_from: str | None = Query(None, alias="from", pattern=_DATE),
                date_to: str | None = Query(None, alias="to", pattern=_DATE),
                before: str | None = Query(None, pattern=_NIGHT), after: str | None = Query(None, pattern=_NIGHT),
                per_page: int = Query(30, ge=1, le=200)) -> Response:
    return dl.json_response(_nights_data(survey, date_from, date_to, before, after, per_page))


def _night_data(survey: str, night: str) -> dict[str, Any]:
    with archive().read_engine.connect() as conn:
        scales = pixel_scales(Q.night_cameras(conn, survey=survey, night=night))
        data = Q.night_exposures(conn, survey=survey, night=night, pixel_scale=scales)
    return {**data, "survey": survey, "night": night}


@app.get("/night/{survey}/{night}", response_class=HTMLResponse)
def night_page(request: Request, survey: str = P(..., pattern=_NAME),
               night: str = P(..., pattern=_NIGHT)) -> HTMLResponse:
    """One row per exposure of a night, with the QA verdict spelled out and a thumbnail."""
    data = _night_data(survey, night)
    if not data["exposures"]:
        raise HTTPException(404, f"no exposures of survey {survey} on night {night}")
    return page(request, "night.html", **data)


@app.get("/api/night/{survey}/{night}", response_model=None)
def night_json(survey: str = P(..., pattern=_NAME), night: str = P(..., pattern=_NIGHT)) -> Response:
    return dl.json_response(_night_data(survey, night))


# ---------------------------------------------------------------------------------------------- exposure
def _exposure_data(survey: str, expnum: int) -> dict[str, Any]:
    with archive().read_engine.connect() as conn:
        detail = Q.exposure_detail(conn, survey=survey, expnum=expnum)
        if detail is None:
            raise HTTPException(404, f"no exposure {expnum} in survey {survey}")
        fp = focal_plane_of(detail["exposure"]["camera"])
        detail["ccd_metrics"] = Q.ccd_metrics(conn, detail, [c.ccdnum for c in fp.ccds] if fp else ())
    return detail


@app.get("/exposure/{survey}/{expnum}", response_class=HTMLResponse)
def exposure_page(request: Request, survey: str = P(..., pattern=_NAME), expnum: int = P(..., ge=0),
                  metric: str = Query("fwhm_arcsec", pattern="^(" + "|".join(svg.METRICS) + ")$")) -> HTMLResponse:
    """Every QA value, the focal-plane map by a chosen metric, products with downloads, lineage."""
    d = _exposure_data(survey, expnum)
    fp = focal_plane_of(d["exposure"]["camera"])
    fp_svg = "<p>Unknown camera or camera tables: no focal-plane map.</p>"
    if fp is not None:
        cam = fp.camera
        w, h = cam.ccd_nx * cam.pixel_size_mm, cam.ccd_ny * cam.pixel_size_mm
        fp_svg = svg.focal_plane_svg(fp.ccds, w, h, d["ccd_metrics"], metric)
    thumb = next((x["id"] for x in d["products"] if x["kind"] == "thumbnail" and x["ccd"] is None), None)
    return page(request, "exposure.html", survey=survey, metric=metric, metrics=svg.METRICS, focal_plane_svg=fp_svg,
                thumbnail_id=thumb, **d)


@app.get("/api/exposure/{survey}/{expnum}", response_model=None)
def exposure_json(survey: str = P(..., pattern=_NAME), expnum: int = P(..., ge=0)) -> Response:
    return dl.json_response(_exposure_data(survey, expnum))


# ---------------------------------------------------------------------------------------------- tiles
@app.get("/tiles", response_class=HTMLResponse)
def tiles_page(request: Request, survey: str | None = Query(None, pattern=_NAME)) -> HTMLResponse:
    """The tiling on the sky, coloured by coadd status per band; zoom, pan, click to a tile."""
    data = _tiles_data(survey)
    base = request.scope.get("root_path", "").rstrip("/")
    sky = svg.sky_map_svg(data["tiles"], data["bands"], link_prefix=f"{base}/tile/{data['survey']}/")
    codes = Counter(t["status"] for t in data["tiles"])  # few distinct status strings
    counts = {b: dict.fromkeys(T.TILE_STATES, 0) for b in data["bands"]}
    for code, n in codes.items():
        for b, c in zip(data["bands"], code, strict=True):
            counts[b][T.TILE_CODES[c]] += n
    return page(request, "tiles.html", sky_svg=sky, colours=svg.STATUS_COLOURS, counts=counts,
                states=T.TILE_STATES, **data)


def _tiles_data(survey: str | None) -> dict[str, Any]:
    with archive().read_engine.connect() as conn:
        all_surveys = Q.surveys(conn)
        survey = survey or (all_surveys[0] if all_surveys else "demo")
        return {**T.tiles_status(conn, survey=survey), "survey": survey, "surveys": all_surveys}


@app.get("/api/tiles", response_model=None)
def tiles_json(survey: str | None = Query(None, pattern=_NAME)) -> Response:
    return dl.json_response(_tiles_data(survey))


@app.get("/tile/{survey}/{name}", response_class=HTMLResponse)
def tile_page(request: Request, survey: str = P(..., pattern=_NAME),
              name: str = P(..., pattern=_NAME)) -> HTMLResponse:
    """A tile: per-band coadd thumbnails, calibration and completeness QA, input exposures."""
    d = _tile_data(survey, name)
    bands = sorted({x["band"] for x in d["products"] if x["band"] and x["kind"] != "pseudocolour"})
    return page(request, "tile.html", survey=survey, bands=bands, **d)


def _tile_data(survey: str, name: str) -> dict[str, Any]:
    with archive().read_engine.connect() as conn:
        d = T.tile_detail(conn, survey=survey, name=name)
    if d is None:
        raise HTTPException(404, f"no tile {name} in survey {survey}")
    return d


@app.get("/api/tile/{survey}/{name}", response_model=None)
def tile_json(survey: str = P(..., pattern=_NAME), name: str = P(..., pattern=_NAME)) -> Response:
    return dl.json_response(_tile_data(survey, name))


# ---------------------------------------------------------------------------------------------- products
def _product_data(product_id: int, depth: int) -> dict[str, Any]:
    arch = archive()
    with arch.read_engine.connect() as conn:
        d = Q.product_detail(conn, product_id)
    if d is None:
        raise HTTPException(404, f"no product {product_id}")
    d["up"] = arch.lineage(product_id, direction="up", depth=depth)
    d["down"] = arch.lineage(product_id, direction="down", depth=depth)
    return d


@app.get("/product/{product_id}", response_class=HTMLResponse)
def product_page(request: Request, product_id: int, depth: int = Query(2, ge=1, le=10)) -> HTMLResponse:
    """Metadata, tags, checksum, size, QA and the lineage graph (up and down, to ``depth``)."""
    d = _product_data(product_id, depth)
    base = request.scope.get("root_path", "").rstrip("/")
    graph = svg.lineage_svg(d["product"], d["up"], d["down"], link_prefix=f"{base}/product/")
    return page(request, "product.html", depth=depth, lineage_svg=graph, n_up=len(d["up"]["edges"]),
                n_down=len(d["down"]["edges"]), **{k: d[k] for k in ("product", "qa", "quarantine", "run")})


@app.get("/api/product/{product_id}", response_model=None)
def product_json(product_id: int, depth: int = Query(2, ge=1, le=10)) -> Response:
    return dl.json_response(_product_data(product_id, depth))


_AFTER, _BEFORE = Query(None, ge=0), Query(None, ge=0)  # keyset pages: the page after / before this id
_PER_PAGE = Query(200, ge=1, le=1000)


def _product_tags(survey: str | None = Query(None, pattern=_NAME), night: str | None = Query(None, pattern=_NIGHT),
                  expnum: int | None = Query(None, ge=0), tile: str | None = Query(None, pattern=_NAME),
                  band: str | None = Query(None, pattern=_NAME),
                  kind: str | None = Query(None, pattern=_NAME)) -> dict[str, Any]:
    return {"survey": survey, "night": night, "expnum": expnum, "tile": tile, "band": band, "kind": kind}


_TAGS = Depends(_product_tags)


def _products_data(tags: dict[str, Any], after: int | None, before: int | None, per_page: int) -> dict[str, Any]:
    from cosmodm_ops.ui.paging import products_page

    with archive().read_engine.connect() as conn:
        return products_page(conn, after=after, before=before, per_page=per_page, **tags)


@app.get("/api/products", response_model=None)
def products_json(tags: dict[str, Any] = _TAGS, after: int | None = _AFTER,
                  before: int | None = _BEFORE, per_page: int = Query(200, ge=1, le=5000)) -> Response:
    """Current products matching the given tags, by id, one keyset page (``after``/``before`` an id) with its pager."""
    return dl.json_response(_products_data(tags, after, before, per_page))


@app.get("/products", response_model=None)
def products(request: Request, tags: dict[str, Any] = _TAGS, after: int | None = _AFTER,
             before: int | None = _BEFORE, limit: int = Query(200, ge=1, le=5000)) -> Response:
    """The rows of :func:`products_json` as a bare list; the next and previous pages in ``Link`` (RFC 8288)."""
    d = _products_data(tags, after, before, limit)
    links = [f'<{request.url.remove_query_params(("after", "before")).include_query_params(**{k: d[v]})}>; '
             f'rel="{rel}"' for rel, k, v in (("next", "after", "next_after"), ("prev", "before", "prev_before"))
             if d[v] is not None]
    resp = dl.json_response(d["rows"])
    resp.headers["X-Total-Count"] = str(d["total"])
    if links:
        resp.headers["Link"] = ", ".join(links)
    return resp


@app.get("/lineage/{product_id}")
def lineage(product_id: int, direction: str = Query("up", pattern="^(up|down)$"),
            depth: int = Query(5, ge=1, le=20)) -> dict[str, Any]:
    """Where a product came from (up) or what was made from it (down)."""
    return archive().lineage(product_id, direction=direction, depth=depth)


@app.get("/report/{survey}/{night}")
def report(survey: str = P(..., pattern=_NAME), night: str = P(..., pattern=_NIGHT)) -> Response:
    """The night's QA report (the newest revision in the archive)."""
    found = archive().find(survey=survey, night=night, kind="report", stage="qa")
    if not found:
        raise HTTPException(404, f"no QA report for {survey} {night}")
    return dl.serve(archive(), found[-1], None, inline=True)


# ---------------------------------------------------------------------------------------------- campaigns


@app.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, after: int | None = _AFTER, before: int | None = _BEFORE) -> HTMLResponse:
    """Campaigns with progress bars (done, running, failed, skipped), ETA and core-hours used vs estimated."""
    from cosmodm_ops.ui.campaigns import ITEM_GROUPS

    return page(request, "campaigns.html", groups=list(ITEM_GROUPS), **_campaigns_data(after, before))


def _campaigns_data(after: int | None, before: int | None) -> dict[str, Any]:
    from cosmodm_ops.ui.campaigns import campaigns

    with archive().read_engine.connect() as conn:
        return campaigns(conn, after=after, before=before)


@app.get("/api/campaigns", response_model=None)
def campaigns_json(after: int | None = _AFTER, before: int | None = _BEFORE) -> Response:
    return dl.json_response(_campaigns_data(after, before))


@app.get("/campaign/{cid}", response_class=HTMLResponse)
def campaign_page(request: Request, cid: int = P(..., ge=1),
                  state: str | None = Query(None, pattern=r"^[a-z_]{1,20}$"),
                  after: int | None = _AFTER, before: int | None = _BEFORE) -> HTMLResponse:
    """A campaign: its items (filter by state), failures with the end of their logs, pending decisions."""
    from cosmodm_ops.ui.campaigns import ITEM_GROUPS

    return page(request, "campaign.html", groups=list(ITEM_GROUPS), **_campaign_data(cid, state, after, before))


def _campaign_data(cid: int, state: str | None, after: int | None, before: int | None) -> dict[str, Any]:
    from cosmodm_ops.ui.campaigns import campaign_detail

    with archive().read_engine.connect() as conn:
        d = campaign_detail(conn, cid, state=state, after=after, before=before)
    if d is None:
        raise HTTPException(404, f"no campaign {cid}")
    return d


@app.get("/api/campaign/{cid}", response_model=None)
def campaign_json(cid: int = P(..., ge=1), state: str | None = Query(None, pattern=r"^[a-z_]{1,20}$"),
                  after: int | None = _AFTER, before: int | None = _BEFORE) -> Response:
    return dl.json_response(_campaign_data(cid, state, after, before))


# ---------------------------------------------------------------------------------------------- search
@app.get("/search", response_class=HTMLResponse)
def search_page(request: Request, q: str = Query("", max_length=200)) -> HTMLResponse:
    """Products by tag (``kind=coadd band=r``), an exposure number, a tile name or a sha256."""
    return page(request, "search.html", q=q, found=_search_data(q) if q.strip() else None)


def _search_data(q: str) -> dict[str, Any]:
    with archive().read_engine.connect() as conn:
        return F.search(conn, q)


@app.get("/api/search", response_model=None)
def search_json(q: str = Query("", max_length=200)) -> Response:
    return dl.json_response(_search_data(q))


@app.get("/cone", response_class=HTMLResponse)
def cone_page(request: Request, ra: float | None = Query(None, ge=0, lt=360),
              dec: float | None = Query(None, ge=-90, le=90),
              radius: float = Query(0.1, gt=0, le=5)) -> HTMLResponse:
    """Catalog objects, exposures and tiles within ``radius`` degrees of (ra, dec)."""
    found = _cone_data(ra, dec, radius) if ra is not None and dec is not None else None
    return page(request, "cone.html", ra=ra, dec=dec, radius=radius, found=found)


def _cone_data(ra: float, dec: float, radius: float) -> dict[str, Any]:
    arch = archive()
    with arch.read_engine.connect() as conn:
        out = F.sky_objects(conn, ra=ra, dec=dec, radius=radius)
    out["objects"] = arch.cone(ra, dec, radius, limit=500)
    return out


@app.get("/api/cone", response_model=None)
def cone_json(ra: float = Query(..., ge=0, lt=360), dec: float = Query(..., ge=-90, le=90),
              radius: float = Query(0.1, gt=0, le=5)) -> Response:
    return dl.json_response(_cone_data(ra, dec, radius))


# ---------------------------------------------------------------------------------------------- Airflow links
@app.get("/runs/{dag_id}/{run_id}")
def dag_run_view(request: Request, dag_id: str, run_id: str, after: int | None = _AFTER,
                 before: int | None = _BEFORE, per_page: int = _PER_PAGE) -> Response:
    """The ``dag_run`` external view: a nightly run opens its night; other runs list their products (paged)."""
    base = request.scope.get("root_path", "").rstrip("/")
    with archive().read_engine.connect() as conn:
        found = Q.night_for_run(conn, dag_id=dag_id, run_id=run_id)
        if found and found[1]:
            return RedirectResponse(f"{base}/night/{found[0]}/{found[1]}", status_code=303)
        d = Q.run_products(conn, dag_id=dag_id, run_id=run_id, after=after, before=before, per_page=per_page)
    return page(request, "run.html", dag_id=dag_id, run_id=run_id, task_id=None, **d)


@app.get("/ti/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse)
def task_instance_view(request: Request, dag_id: str, run_id: str, task_id: str,
                       map_index: int = Query(-1), after: int | None = _AFTER,
                       before: int | None = _BEFORE, per_page: int = _PER_PAGE) -> HTMLResponse:
    """The ``task_instance`` external view: the products the task registered, newest first, paged.

    Mapped instances share their task id in the archive's run records, so ``map_index`` does not
    narrow the list.
    """
    with archive().read_engine.connect() as conn:
        d = Q.run_products(conn, dag_id=dag_id, run_id=run_id, task_id=task_id, after=after, before=before,
                           per_page=per_page)
        if not d["total"]:  # a task that registers nothing (e.g. discovery): the run's products
            task_id = None
            d = Q.run_products(conn, dag_id=dag_id, run_id=run_id, after=after, before=before, per_page=per_page)
    return page(request, "run.html", dag_id=dag_id, run_id=run_id, task_id=task_id, **d)


# ---------------------------------------------------------------------------------------------- files
@app.get("/download/{product_id}")
def download(request: Request, product_id: int, inline: bool = False) -> Response:
    """A product's file, streamed (Content-Length, byte ranges, sha256 in ``X-Checksum-Sha256``)."""
    arch = archive()
    with arch.read_engine.connect() as conn:
        row = Q.product_detail(conn, product_id)
    if row is None:
        raise HTTPException(404, f"no product {product_id}")
    return dl.serve(arch, row["product"], request.headers.get("range"), inline=inline)


@app.get("/file/{relpath:path}")
def file_by_path(request: Request, relpath: str) -> Response:
    """A product's file by its archive path (only paths the archive has a product row for)."""
    arch = archive()
    row = dl.product_by_path(arch, relpath)
    return dl.serve(arch, row, request.headers.get("range"), inline=False)


@app.get("/static/{name}")
def static(name: str = P(..., pattern=r"^[a-z0-9_-]+\.(js|css)$")) -> FileResponse:
    """The pages' own script and style (bundled with the package: no CDN)."""
    path = HERE / "static" / name
    if not path.is_file():
        raise HTTPException(404, name)
    media = "text/javascript" if name.endswith(".js") else "text/css"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=300"})


@app.get("/api/ping")
def ping() -> Response:
    """A constant tiny JSON behind the same authentication, no database: ``cosmodm bench ui``'s floor anchor."""
    return Response(b'{"ok":true}', media_type="application/json")


@app.get("/api/health")
def health() -> JSONResponse:
    """Counts of the archive tables (a quick check that the app reaches the archive)."""
    return JSONResponse({"counts": archive().counts(), "time": dt.datetime.now(dt.UTC).isoformat()})
