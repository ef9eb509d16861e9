"""The FastAPI app behind the Airflow UI plugin: nights, QA reports, products and lineage.

Every route depends on Airflow's ``get_user`` (JWT from the ``_token`` cookie or a Bearer
header): nothing here is served to an unauthenticated client. Output is escaped; paths are
resolved inside the archive root only.
"""

from __future__ import annotations

import html
import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["app"]


def _user():
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def _archive():
    from cosmodm_ops.archive import Archive

    db = os.environ.get("COSMODM_DB")
    root = os.environ.get("COSMODM_ARCHIVE_ROOT")
    if not db or not root:
        raise HTTPException(503, "set COSMODM_DB and COSMODM_ARCHIVE_ROOT in the API server's environment")
    return Archive(db, root)


app = FastAPI(title="CosmoDM archive", dependencies=[Depends(_user())])


@app.get("/", response_class=HTMLResponse)
def index(survey: str = Query("demo", max_length=64)) -> str:
    """Nights with their exposure counts, quarantines and report links."""
    archive = _archive()
    raws = archive.find(survey=survey, kind="raw", stage="raw")
    nights = sorted({r["night"] for r in raws if r["night"]}, reverse=True)
    rows = []
    for night in nights[:100]:
        exps = sorted({int(r["expnum"]) for r in raws if r["night"] == night})
        bad = [e for e in exps if archive.is_quarantined({"survey": survey, "night": night, "expnum": e})]
        rep = archive.find(survey=survey, night=night, kind="report", stage="qa")
        link = f"<a href='report/{html.escape(survey)}/{html.escape(night)}'>report</a>" if rep else ""
        rows.append(f"<tr><td>{html.escape(night)}</td><td>{len(exps)}</td><td>{len(exps) - len(bad)}</td>"
                    f"<td>{len(bad)}</td><td>{link}</td></tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>CosmoDM archive</title></head><body>"
            f"<h1>CosmoDM archive: {html.escape(survey)}</h1><table border=1 cellpadding=4>"
            "<tr><th>night</th><th>exposures</th><th>accepted</th><th>quarantined</th><th></th></tr>"
            + "".join(rows) + "</table></body></html>")


@app.get("/report/{survey}/{night}")
def report(survey: str, night: str) -> FileResponse:
    """The night's QA report (the newest revision in the archive)."""
    from cosmodm_ops.model import TagError, validate_night, validate_token

    try:
        validate_token("survey", survey)
        validate_night(night)
    except TagError as err:
        raise HTTPException(400, str(err)) from err
    archive = _archive()
    found = archive.find(survey=survey, night=night, kind="report", stage="qa")
    if not found:
        raise HTTPException(404, f"no QA report for {survey} {night}")
    return FileResponse(archive.fetch(found[-1]["id"]), media_type="text/html")


@app.get("/products")
def products(survey: str | None = None, night: str | None = None, expnum: int | None = None,
             tile: str | None = None, band: str | None = None, kind: str | None = None,
             limit: int = Query(200, le=5000)) -> list[dict[str, Any]]:
    """Products matching the given tags (JSON)."""
    return _archive().find(survey=survey, night=night, expnum=expnum, tile=tile, band=band, kind=kind, limit=limit)


@app.get("/lineage/{product_id}")
def lineage(product_id: int, direction: str = Query("up", pattern="^(up|down)$"),
            depth: int = Query(5, ge=1, le=20)) -> dict[str, Any]:
    """Where a product came from (up) or what was made from it (down)."""
    return _archive().lineage(product_id, direction=direction, depth=depth)
