"""Read-side queries of the survey pages: SQLAlchemy Core over :mod:`cosmodm_ops.archive.schema`.

Every function takes an open connection and bound parameters only (no string-built SQL), pages
long lists (``page``, ``per_page``), and reads through the indexes of the archive schema and of
migration ``0003_ui_indexes``. Results are plain dicts (JSON-ready).

Definitions the pages use
-------------------------
accepted     an exposure with a current single-epoch ``qa`` product and no active quarantine
quarantined  an exposure covered by an active exposure-level quarantine record
failed       an exposure with neither (its processing failed, or has not run yet)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.qa.checks import EXPOSURE_INFO
from cosmodm_ops.ui.paging import keyset, pager

__all__ = [
    "ccd_metrics",
    "depth_mag",
    "exposure_detail",
    "night_cameras",
    "night_exposures",
    "night_for_run",
    "nights",
    "product_detail",
    "reasons_by_key",
    "run_products",
    "surveys",
]

p, e, q, qa, lin, r = S.products, S.exposures, S.quarantine, S.qa_results, S.lineage, S.runs


def _active_exposure_quarantine(survey: str) -> list[Any]:
    return [q.c.released == 0, q.c.ccd.is_(None), q.c.product_id.is_(None),
            sa.or_(q.c.survey.is_(None), q.c.survey == survey)]


def surveys(conn: Connection) -> list[str]:
    """Surveys that have exposures or tiles: one index probe per survey, not a scan of every exposure (both
    tables' walks in one statement: one round trip)."""
    return sorted({x for (x,) in conn.execute(_surveys_stmt()).all()})


@lru_cache(maxsize=1)
def _surveys_stmt() -> Any:
    """The statement of :func:`surveys`, built once (the nights and tiles pages call it on every request)."""
    return sa.union(_distinct_stmt(e.c.survey, "exp_walk"), _distinct_stmt(S.tiles.c.survey, "tile_walk"))


def _distinct_stmt(col: Any, name: str) -> Any:
    """The distinct values of an indexed column by a loose index scan (a recursive CTE: min, then the next min)."""
    walk = sa.select(sa.func.min(col).label("x")).cte(name, recursive=True)
    nxt = sa.select(sa.func.min(col)).where(col > walk.c.x).scalar_subquery()
    walk = walk.union_all(sa.select(nxt).where(walk.c.x.isnot(None)))
    return sa.select(walk.c.x).where(walk.c.x.isnot(None))


def _count_nights(conn: Connection, survey: str, lo: str | None, hi: str | None, *, inclusive: bool = True) -> int:
    """How many distinct nights of ``survey`` lie from ``lo`` (or after it) to ``hi``: a loose index scan of
    ``(survey, night)``, one probe per night (``count(DISTINCT night)`` reads every exposure)."""
    params = {"survey": survey, **({"lo": lo} if lo else {}), **({"hi": hi} if hi else {})}
    return int(conn.execute(_count_nights_stmt(bool(lo), bool(hi), inclusive), params).scalar() or 0)


@lru_cache(maxsize=8)
def _count_nights_stmt(has_lo: bool, has_hi: bool, inclusive: bool) -> Any:
    """The statement of :func:`_count_nights` for one shape of filter (bound parameters ``survey``, ``lo``, ``hi``)."""
    cond = [e.c.survey == sa.bindparam("survey")] + ([e.c.night <= sa.bindparam("hi")] if has_hi else [])
    first = [e.c.night >= sa.bindparam("lo") if inclusive else e.c.night > sa.bindparam("lo")] if has_lo else []
    walk = sa.select(sa.func.min(e.c.night).label("x")).where(*cond, *first).cte("nights_walk", recursive=True)
    nxt = sa.select(sa.func.min(e.c.night)).where(*cond, e.c.night > walk.c.x).scalar_subquery()
    walk = walk.union_all(sa.select(nxt).where(walk.c.x.isnot(None)))
    return sa.select(sa.func.count(walk.c.x))


def nights(conn: Connection, *, survey: str, date_from: str | None = None, date_to: str | None = None,
           before: str | None = None, after: str | None = None, per_page: int = 30) -> dict[str, Any]:
    """One page of nights, newest first, with exposure counts and the runs that processed them.

    Keyset pages (no OFFSET): ``before`` a night (the next, older page) or ``after`` one (the previous,
    newer page). Returns ``{"rows": [{"night", "exposures", "accepted", "quarantined", "failed", "runs":
    [{"dag_id", "run_id"}]}], "total", "page", "pages", "per_page", "next_before", "prev_after"}``.
    """
    total = _count_nights(conn, survey, date_from, date_to)
    # the page's nights with their exposures and quarantined exposures, in one pass over (survey, night)
    older = not (after and not before)
    key = before if older else after
    params = {"survey": survey, "limit": per_page, **{k: v for k, v in (("lo", date_from), ("hi", date_to),
                                                                          ("key", key)) if v}}
    page_rows = sorted(conn.execute(_nights_page_stmt(bool(date_from), bool(date_to), bool(key), older),
                                    params).all(), reverse=True)
    chosen = [row[0] for row in page_rows]
    # nights newer than the page: none on the first page (newest first, no key), else a loose index scan
    newer = _count_nights(conn, survey, chosen[0], date_to, inclusive=False) if chosen and key else 0
    out = {"rows": [], "total": total, "page": newer // per_page + 1, "pages": max(1, -(-total // per_page)),
           "per_page": per_page, "next_before": chosen[-1] if chosen and newer + len(chosen) < total else None,
           "prev_after": chosen[0] if chosen and newer else None}
    if not chosen:
        return out
    n_exp = {n: int(k) for n, k, _ in page_rows}
    n_bad = {n: int(b or 0) for n, _, b in page_rows}
    st, arg = _night_stmts(), {"survey": survey, "nights": chosen, "lo": chosen[-1], "hi": chosen[0]}
    n_accepted = dict(conn.execute(st["accepted"], arg).all())
    runs: dict[str, list[dict[str, str]]] = defaultdict(list)
    for night, dag_id, run_id in conn.execute(st["runs"], arg).all():
        runs[night].append({"dag_id": dag_id, "run_id": run_id})
    rows = []
    for n in chosen:
        accepted = n_accepted.get(n, 0)
        total_n = n_exp.get(n, 0)
        rows.append({"night": n, "exposures": total_n, "accepted": accepted, "quarantined": n_bad[n],
                     "failed": total_n - accepted - n_bad[n], "runs": sorted(runs.get(n, []), key=lambda x: x["run_id"])})
    out["rows"] = rows
    return out


def _held(survey: Any) -> Any:
    """Exposure numbers under an active exposure-level quarantine (records without one, e.g. a tile's, left out:
    a NULL would make ``NOT IN`` empty)."""
    return sa.select(q.c.expnum).where(*_active_exposure_quarantine(survey), q.c.expnum.isnot(None))


@lru_cache(maxsize=16)
def _nights_page_stmt(has_lo: bool, has_hi: bool, has_key: bool, older: bool) -> Any:
    """One keyset page of nights with their exposure and quarantined counts, for one shape of filter (bound
    ``survey``, ``lo``, ``hi``, ``key`` (the night the page starts past), ``limit``); built once per shape."""
    survey = sa.bindparam("survey")
    cond = [e.c.survey == survey]
    cond += [e.c.night >= sa.bindparam("lo")] if has_lo else []
    cond += [e.c.night <= sa.bindparam("hi")] if has_hi else []
    if has_key:
        cond.append(e.c.night < sa.bindparam("key") if older else e.c.night > sa.bindparam("key"))
    n_held = sa.func.sum(sa.case((e.c.expnum.in_(_held(survey)), 1), else_=0))
    return (sa.select(e.c.night, sa.func.count(), n_held).where(*cond).group_by(e.c.night)
            .order_by(e.c.night.desc() if older else e.c.night.asc()).limit(sa.bindparam("limit")))


@lru_cache(maxsize=1)
def _night_stmts() -> dict[str, Any]:
    """Per night of a page (bound ``survey``, the expanding ``nights`` and their range ``lo``..``hi``): accepted
    exposures (a current QA product, not quarantined) and the DAG runs (``night_runs``, kept by registration: a
    night's few runs, not its every job's row). The page's nights are every night of the survey from ``lo`` to
    ``hi``, so the accepted count reads that one range of the index (one descent, not one per night: 2.9 -> 2.1
    ms on PostgreSQL for a page of 30 nights of 100 exposures)."""
    survey, chosen, nr = sa.bindparam("survey"), sa.bindparam("nights", expanding=True), S.night_runs
    return {
        "accepted": sa.select(p.c.night, sa.func.count(sa.distinct(p.c.expnum))).where(
            p.c.survey == survey, p.c.night.between(sa.bindparam("lo"), sa.bindparam("hi")),
            p.c.stage == "single_epoch", p.c.kind == "qa",
            p.c.state == "current", p.c.expnum.not_in(_held(survey))).group_by(p.c.night),
        "runs": sa.select(nr.c.night, nr.c.dag_id, nr.c.run_id).where(nr.c.survey == survey, nr.c.night.in_(chosen)),
    }


def depth_mag(zeropoint_1s: float | None, exptime: float | None, fwhm_arcsec: float | None,
              sky_noise_e: float | None, pixel_scale: float | None) -> float | None:
    """5-sigma point-source depth (mag) of an exposure.

    ``m5 = zp_1s + 2.5 log10(t) - 2.5 log10(5 sigma_sky sqrt(NEA))`` with the Gaussian noise-equivalent
    area ``NEA = 2.266 (FWHM / pixel scale)^2`` pixels; ``sigma_sky`` is the per-pixel sky noise of the
    exposure (electrons), ``zp_1s`` the magnitude of 1 e-/s. None when a value is missing.
    """
    vals = (zeropoint_1s, exptime, fwhm_arcsec, sky_noise_e, pixel_scale)
    if any(v is None or not math.isfinite(v) or v <= 0 for v in vals[1:]) or zeropoint_1s is None:
        return None
    nea = 2.266 * (fwhm_arcsec / pixel_scale) ** 2
    return zeropoint_1s + 2.5 * math.log10(exptime) - 2.5 * math.log10(5.0 * sky_noise_e * math.sqrt(nea))


def _median(vals: list[float]) -> float | None:
    good = sorted(v for v in vals if v is not None and math.isfinite(v))
    if not good:
        return None
    n = len(good)
    return good[n // 2] if n % 2 else 0.5 * (good[n // 2 - 1] + good[n // 2])


def reasons_by_key(rows: Any) -> dict[Any, list[str]]:
    """Quarantine reasons (JSON lists) of ``(key, reasons)`` rows, merged per key without repeats."""
    out: dict[Any, list[str]] = defaultdict(list)
    for key, text in rows:
        for reason in json.loads(text):
            if reason not in out[key]:
                out[key].append(reason)
    return out


def night_exposures(conn: Connection, *, survey: str, night: str,
                    pixel_scale: dict[str, float] | None = None) -> dict[str, Any]:
    """Every exposure of a night with its QA summary, verdict, failed checks and thumbnail id.

    ``pixel_scale`` maps camera -> arcsec/pixel (for the depth). Returns ``{"exposures": [...], "plots":
    [product rows of the night's QA stage]}``.
    """
    st, arg = _night_page_stmts(), {"survey": survey, "night": night}
    exps = [dict(x) for x in conn.execute(st["exposures"], arg).mappings().all()]
    exp_checks, info = _night_qa(conn, survey, night)
    reasons = reasons_by_key(conn.execute(st["reasons"], arg).all())
    thumbs, processed = {}, set()
    for pid, expnum, kind in conn.execute(st["products"], arg).all():
        if kind == "thumbnail":
            thumbs[expnum] = pid
        else:
            processed.add(expnum)
    scales = pixel_scale or {}
    for x in exps:
        n = x["expnum"]
        checks = exp_checks.get(n, {})
        seeing = (checks.get("seeing_arcsec") or {}).get("value")
        zp, sky, noise = (info.get((n, k)) for k in EXPOSURE_INFO)
        listed = list(checks.values())
        x.update(seeing_arcsec=seeing, zeropoint_1s=zp, sky_e=sky,
                 depth_mag=depth_mag(zp, x["exptime"], seeing, noise, scales.get(x["camera"])),
                 checks=listed, failed_checks=[c for c in listed if c["verdict"] == "fail"],
                 quarantine=reasons.get(n, []), thumbnail_id=thumbs.get(n))
        x["verdict"] = ("quarantined" if x["quarantine"] else "accepted" if n in processed else "failed")
    plots = [dict(x) for x in conn.execute(st["plots"], arg).mappings().all()]
    return {"exposures": exps, "plots": plots}


@lru_cache(maxsize=1)
def _night_page_stmts() -> dict[str, Any]:
    """The statements of the night page, built once (bound ``survey`` and ``night``): its exposures, their
    exposure-level QA rows, active quarantine reasons, thumbnails and QA products, the night's report plots."""
    survey, night = sa.bindparam("survey"), sa.bindparam("night")
    return {
        "cameras": sa.select(e.c.camera).where(e.c.survey == survey, e.c.night == night).distinct(),
        "exposures": sa.select(e).where(e.c.survey == survey, e.c.night == night).order_by(e.c.expnum),
        "qa": sa.select(qa.c.expnum, qa.c.check_name, qa.c.value, qa.c.threshold, qa.c.verdict).join(
            e, sa.and_(e.c.expnum == qa.c.expnum, e.c.survey == survey)).where(
            e.c.night == night, sa.or_(qa.c.survey.is_(None), qa.c.survey == survey), qa.c.ccd.is_(None))
        .order_by(qa.c.id),
        "reasons": sa.select(q.c.expnum, q.c.reasons).join(e, e.c.expnum == q.c.expnum).where(
            e.c.survey == survey, e.c.night == night, *_active_exposure_quarantine(survey)),
        "products": sa.select(p.c.id, p.c.expnum, p.c.kind).where(
            p.c.survey == survey, p.c.night == night, p.c.stage == "single_epoch", p.c.ccd.is_(None),
            p.c.kind.in_(("thumbnail", "qa")), p.c.state == "current"),
        "plots": sa.select(p).where(p.c.survey == survey, p.c.night == night, p.c.stage == "qa",
                                    p.c.state == "current", p.c.kind.in_(("report", "thumbnail"))).order_by(p.c.id),
    }


def night_cameras(conn: Connection, *, survey: str, night: str) -> list[str]:
    """The cameras of a night's exposures (for their pixel scales)."""
    return [c for (c,) in conn.execute(_night_page_stmts()["cameras"], {"survey": survey, "night": night}).all()]


def _night_qa(conn: Connection, survey: str, night: str) -> tuple[dict[int, dict[str, dict[str, Any]]],
                                                                  dict[tuple[int, str], float | None]]:
    """A night's exposure-level QA: ``({expnum: {check: row}}, {(expnum, info name): value})``.

    The median zeropoint, sky and sky noise are exposure-level ``info`` rows (``EXPOSURE_INFO``); an exposure
    archived before they were recorded has only its CCDs' rows, and its medians are taken from those.
    """
    checks: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    info: dict[tuple[int, str], float | None] = {}
    rows = conn.execute(_night_page_stmts()["qa"], {"survey": survey, "night": night}).all()
    for expnum, name, value, threshold, verdict in rows:
        if name in EXPOSURE_INFO:  # later runs overwrite earlier ones
            info[(expnum, name)] = value
        else:
            checks[expnum][name] = {"name": name, "value": value, "threshold": threshold, "verdict": verdict}
    older = sorted({n for n in checks if any((n, k) not in info for k in EXPOSURE_INFO)})
    if older:
        per_ccd: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)
        for expnum, ccd, name, value in conn.execute(
                sa.select(qa.c.expnum, qa.c.ccd, qa.c.check_name, qa.c.value).where(
                    qa.c.expnum.in_(older), qa.c.ccd.isnot(None), qa.c.check_name.in_(EXPOSURE_INFO),
                    sa.or_(qa.c.survey.is_(None), qa.c.survey == survey)).order_by(qa.c.id)).all():
            if value is not None:
                per_ccd[(expnum, name)][ccd] = value
        for key, vals in per_ccd.items():
            info.setdefault(key, _median(list(vals.values())))
    return checks, info


def exposure_detail(conn: Connection, *, survey: str, expnum: int) -> dict[str, Any] | None:
    """One exposure: its row, every QA value (exposure and CCD), quarantines, products, downstream coadds."""
    st, arg = _exposure_stmts(), {"survey": survey, "expnum": expnum}
    row = conn.execute(st["exposure"], arg).mappings().first()
    if row is None:
        return None
    exp = dict(row)
    checks: dict[tuple[Any, str], dict[str, Any]] = {}
    for ccd, name, value, threshold, verdict in conn.execute(st["qa"], arg).all():
        checks[(ccd, name)] = {"ccd": ccd, "check_name": name, "value": value, "threshold": threshold,
                               "verdict": verdict}
    reasons = reasons_by_key(conn.execute(st["quarantine"], arg).all())
    products = [dict(x) for x in conn.execute(st["products"], {**arg, "night": exp["night"]}).mappings().all()]
    images = [x["id"] for x in products if x["kind"] == "image"]
    coadds = [dict(x) for x in conn.execute(st["coadds"], {"images": images}).mappings().all()] if images else []
    return {"exposure": exp, "checks": sorted(checks.values(), key=lambda c: (c["ccd"] is not None, c["ccd"] or 0,
                                                                               c["check_name"])),
            "quarantine": reasons.get(None, []),
            "ccd_quarantine": {k: v for k, v in reasons.items() if k is not None},
            "products": products, "coadds": coadds,
            "raw_id": exp.get("raw_product_id")}


@lru_cache(maxsize=1)
def _exposure_stmts() -> dict[str, Any]:
    """The exposure page's statements, built once (bound ``survey``, ``expnum``, ``night``, expanding ``images``):
    the exposure, its QA rows (later runs overwrite earlier ones), quarantines, products, the coadds made from it."""
    survey, expnum = sa.bindparam("survey"), sa.bindparam("expnum")
    of_survey = [sa.or_(qa.c.survey.is_(None), qa.c.survey == survey)]
    used = sa.select(lin.c.product_id).where(lin.c.input_product_id.in_(sa.bindparam("images", expanding=True)))
    return {
        "exposure": sa.select(e).where(e.c.survey == survey, e.c.expnum == expnum).order_by(e.c.id),
        "qa": sa.select(qa.c.ccd, qa.c.check_name, qa.c.value, qa.c.threshold, qa.c.verdict).where(
            qa.c.expnum == expnum, *of_survey).order_by(qa.c.id),
        "quarantine": sa.select(q.c.ccd, q.c.reasons).where(
            q.c.expnum == expnum, q.c.released == 0, q.c.product_id.is_(None),
            sa.or_(q.c.survey.is_(None), q.c.survey == survey)),
        "products": sa.select(p).where(p.c.survey == survey, p.c.night == sa.bindparam("night"),
                                       p.c.expnum == expnum, p.c.state == "current")
        .order_by(p.c.stage, p.c.kind, p.c.ccd),
        "coadds": sa.select(p.c.id, p.c.tile, p.c.band, p.c.kind, p.c.path).where(
            p.c.id.in_(used.distinct()), p.c.stage == "coadd", p.c.state == "current")
        .order_by(p.c.tile, p.c.band, p.c.kind),
    }


def ccd_metrics(conn: Connection, detail: dict[str, Any], all_ccds: Sequence[int] = ()) -> dict[int, dict[str, Any]]:
    """Per CCD of an exposure: fwhm, zeropoint offset from the median, astrometric scatter, object count, failed.

    A CCD is failed when a check of it failed, a quarantine covers it, or it has no image product
    (``all_ccds``: the camera's CCD numbers, so that a CCD that left no row at all is found too).
    """
    expnum = detail["exposure"]["expnum"]
    out: dict[int, dict[str, Any]] = defaultdict(lambda: {"failed": False, "why": []})
    for c in detail["checks"]:
        ccd = c["ccd"]
        if ccd is None:
            continue
        m = out[ccd]
        m[c["check_name"]] = c["value"]
        if c["verdict"] == "fail":
            m["failed"] = True
            m["why"].append(f"{c['check_name']} = {c['value']:.4g} (limit {c['threshold']:.4g})"
                            if c["value"] is not None and c["threshold"] is not None else c["check_name"])
    for ccd, why in detail["ccd_quarantine"].items():
        out[ccd]["failed"] = True
        out[ccd]["why"] += why
    with_image = {x["ccd"] for x in detail["products"] if x["kind"] == "image"}
    for ccd in sorted(set(out) | set(all_ccds)):
        if ccd not in with_image:
            out[ccd]["failed"] = True
            out[ccd]["why"].append("no image product")
    o = S.objects
    for ccd, n in conn.execute(sa.select(o.c.ccd, sa.func.count()).where(o.c.expnum == expnum)
                               .group_by(o.c.ccd)):
        if ccd is not None:
            out[ccd]["n_objects"] = int(n)
    zps = [m.get("zeropoint_1s") for m in out.values()]
    zmed = _median([z for z in zps if z is not None])
    for m in out.values():
        z = m.get("zeropoint_1s")
        m["zp_offset_mag"] = (z - zmed) if (z is not None and zmed is not None) else None
    return dict(out)


def product_detail(conn: Connection, product_id: int) -> dict[str, Any] | None:
    """A product row with its QA rows, quarantine reasons (product-level) and run."""
    st, arg = _product_stmts(), {"id": product_id}
    row = conn.execute(st["product"], arg).mappings().first()
    if row is None:
        return None
    prod = dict(row)
    qa_rows = [dict(x) for x in conn.execute(st["qa"], arg).mappings().all()]
    if not qa_rows and prod["expnum"] is not None:
        cond = [qa.c.expnum == prod["expnum"], qa.c.product_id.is_(None)]
        cond.append(qa.c.ccd == prod["ccd"] if prod["ccd"] is not None else qa.c.ccd.is_(None))
        qa_rows = [dict(x) for x in conn.execute(sa.select(qa).where(*cond).order_by(qa.c.id)).mappings().all()]
    elif not qa_rows and prod["tile"] is not None:
        qa_rows = [dict(x) for x in conn.execute(sa.select(qa).where(
            qa.c.tile == prod["tile"], qa.c.band == prod["band"], qa.c.product_id.is_(None)).order_by(qa.c.id))
            .mappings().all()]
    reasons = reasons_by_key(conn.execute(st["quarantine"], arg).all()).get(product_id, [])
    run = None
    if prod["run_id"] is not None:
        found = conn.execute(st["run"], {"run": prod["run_id"]}).mappings().first()
        run = dict(found) if found else None
    return {"product": prod, "qa": qa_rows, "quarantine": reasons, "run": run}


@lru_cache(maxsize=1)
def _product_stmts() -> dict[str, Any]:
    """The product page's statements, built once (bound ``id``, ``run``)."""
    pid = sa.bindparam("id")
    return {"product": sa.select(p).where(p.c.id == pid),
            "qa": sa.select(qa).where(qa.c.product_id == pid).order_by(qa.c.id),
            "quarantine": sa.select(q.c.product_id, q.c.reasons).where(q.c.product_id == pid, q.c.released == 0),
            "run": sa.select(r).where(r.c.id == sa.bindparam("run"))}


def run_products(conn: Connection, *, dag_id: str, run_id: str, task_id: str | None = None,
                 after: int | None = None, before: int | None = None, per_page: int = 200) -> dict[str, Any]:
    """One keyset page (newest first: ``after``/``before`` a product id) of the products a DAG run (and task,
    when given) registered: ``{"rows", "total", "page", "pages", "per_page", "next_after", "prev_before"}``."""
    cond = [r.c.dag_id == dag_id, r.c.run_id == run_id] + ([r.c.task_id == task_id] if task_id else [])
    ids = sa.select(p.c.id).join(r, r.c.id == p.c.run_id).where(*cond)
    total = int(conn.execute(sa.select(sa.func.count()).select_from(ids.subquery())).scalar() or 0)
    rows = [dict(x) for x in conn.execute(keyset(sa.select(p).join(r, r.c.id == p.c.run_id).where(*cond), p.c.id,
                                                 after=after, before=before, per_page=per_page, desc=True))
            .mappings().all()]
    rows.sort(key=lambda x: -x["id"])
    return {"rows": rows, "total": total, "per_page": per_page,
            **pager(conn, ids, p.c.id, [x["id"] for x in rows], total, per_page=per_page, desc=True)}


def night_for_run(conn: Connection, *, dag_id: str, run_id: str) -> tuple[str, str] | None:
    """(survey, night) of the products a DAG run registered, if any."""
    row = conn.execute(sa.select(p.c.survey, p.c.night).join(r, r.c.id == p.c.run_id).where(
        r.c.dag_id == dag_id, r.c.run_id == run_id, p.c.night.isnot(None)).limit(1)).first()
    return (row[0], row[1]) if row else None
