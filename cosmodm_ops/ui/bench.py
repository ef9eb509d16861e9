"""``cosmodm bench ui``: the survey pages' latency on a survey-sized archive, against Airflow's own REST list.

For each backend (SQLite, PostgreSQL): bulk-insert 10^4 exposures (100 nights), 10^3 tiles and 10^5
products with their runs, QA rows, lineage and quarantines, and about 10^5 catalog objects (the cone
search's); start the real api-server with the plugin; then 10 concurrent clients request every page and JSON endpoint
(30 requests each by default: a p95 of 300 requests), and Airflow's
``/api/v2/dags/nightly_ingest/dagRuns`` in the same run as the anchor. Figures: p50 and p95 per endpoint
(ms). Targets: pages p95 <= 300 ms, JSON <= 100 ms. Ten campaigns of 1000 items each are seeded too.
Two floor anchors are measured first and again last with the same clients: the app's ``/cosmodm/api/ping``
(same authentication, a constant JSON, no database) and Airflow's ``/api/v2/providers?limit=1`` (its cheapest
authenticated endpoint); each endpoint's ``over_floor_ms`` is its p95 minus the first floor's p95.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_results", "seed_bulk", "target_ms", "ui"]

N_NIGHTS, PER_NIGHT, N_TILES, BANDS, CCDS = 100, 100, 1000, ("g", "r", "i", "z", "Y"), (1, 2, 3)
NOW = "2026-12-01T00:00:00+00:00"
OBJ_PER_CAT = 50  # x ~2000 coadd catalogs: 10^5 objects for the cone search
#: api-server workers (``--workers``): on 2 cores, 2 and 4 were measured (README, Survey pages)
WORKERS = 2


def _chunks(conn: Any, table: Any, rows: list[dict[str, Any]], n: int = 5000) -> None:
    import sqlalchemy as sa

    for i in range(0, len(rows), n):
        conn.execute(sa.insert(table), rows[i:i + n])


def seed_bulk(arch: Any, *, seed: int = 3) -> dict[str, int]:
    """Bulk-insert the survey (rows only; one real file, for the download). Returns the row counts."""
    import datetime as dt

    from cosmodm_ops.archive import schema as S

    rng = np.random.default_rng(seed)
    arch.init()
    first = dt.date(2026, 1, 1)
    exps, prods, runs, qa, lin, quar = [], [], [], [], [], []
    pid = 0

    def prod(**kw: Any) -> int:
        nonlocal pid
        pid += 1
        d = {"id": pid, "revision": 1, "survey": "bench", "camera": "decam", "version": "v1", "night": None,
             "expnum": None, "ccd": None, "band": None, "tile": None, "size": 1000, "state": "current",
             "superseded_by": None, "run_id": None, "created_at": NOW, **kw}
        d["key"] = f"k{pid}"
        d["path"] = d.get("path") or f"bench/p/{pid}.dat"
        d["sha256"] = f"{pid:064x}"
        prods.append(d)
        return pid

    expnum = 500000
    images_by_band: dict[str, list[int]] = {b: [] for b in BANDS}
    for n in range(N_NIGHTS):
        night = (first + dt.timedelta(days=n)).isoformat()
        for _ in range(PER_NIGHT):
            expnum += 1
            band = BANDS[expnum % len(BANDS)]
            rid = len(runs) + 1
            runs.append({"id": rid, "run_key": f"r{rid}", "dag_id": "nightly_ingest", "run_id": f"manual__{night}",
                         "task_id": "exposure.single_epoch", "state": "done", "created_at": NOW})
            tags = {"night": night, "expnum": expnum, "band": band}
            raw = prod(stage="raw", kind="raw", **tags)
            exps.append({"id": expnum - 500000, "survey": "bench", "camera": "decam", "night": night, "expnum": expnum,
                         "band": band, "exptime": 90.0, "ra": float(rng.uniform(0, 60)),
                         "dec": float(rng.uniform(-60, -30)), "raw_product_id": raw, "created_at": NOW})
            prod(stage="single_epoch", kind="qa", run_id=rid, **tags)
            prod(stage="single_epoch", kind="thumbnail", run_id=rid, **tags)
            for c in CCDS:
                img = prod(stage="single_epoch", kind="image", ccd=c, run_id=rid, **tags)
                cat = prod(stage="single_epoch", kind="catalog", ccd=c, run_id=rid, **tags)
                lin += [{"product_id": img, "input_product_id": raw, "input_sha256": f"{raw:064x}", "role": "raw"},
                        {"product_id": cat, "input_product_id": img, "input_sha256": f"{img:064x}", "role": "image"}]
                images_by_band[band].append(img)
                for name, v in (("zeropoint_1s", 26.5), ("sky_e", 1000.0), ("sky_noise_e", 32.0)):
                    qa.append({"run_id": rid, "survey": "bench", "expnum": expnum, "ccd": c, "scope": f"ccd{c}",
                               "check_name": name, "value": v + rng.normal(0, 0.01), "threshold": None, "verdict": "info",
                               "created_at": NOW})
            for name, v in (("zeropoint_1s", 26.5), ("sky_e", 1000.0), ("sky_noise_e", 32.0)):  # the CCDs' medians
                qa.append({"run_id": rid, "survey": "bench", "expnum": expnum, "ccd": None, "scope": "exposure",
                           "check_name": name, "value": v, "threshold": None, "verdict": "info", "created_at": NOW})
            for name, v, t in (("seeing_arcsec", 1.1, 1.8), ("zeropoint_deficit_mag", 0.1, 0.5),
                               ("astrom_rms_mas", 30.0, 100.0), ("n_stars", 300.0, 100.0)):
                value = v + abs(rng.normal(0, 0.2 * v))
                qa.append({"run_id": rid, "survey": "bench", "expnum": expnum, "ccd": None, "scope": "exposure",
                           "check_name": name, "value": value, "threshold": t,
                           "verdict": "fail" if (name != "n_stars" and value > t) else "pass", "created_at": NOW})
            if rng.uniform() < 0.05:
                quar.append({"survey": "bench", "night": night, "expnum": expnum, "reasons": '["QA seeing"]',
                             "released": 0, "created_at": NOW})
    tiles, objs = [], []
    for k in range(N_TILES):
        name = f"DES{k:04d}-bench"
        tiles.append({"survey": "bench", "name": name, "ra": (k % 50) * 1.2, "dec": -60 + (k // 50) * 1.5})
        for band in BANDS[: 1 + k % len(BANDS)]:
            rid = len(runs) + 1
            runs.append({"id": rid, "run_key": f"r{rid}", "dag_id": "tile_coadd", "run_id": f"manual__{name}_{band}",
                         "task_id": "coadd.register", "state": "done", "created_at": NOW})
            co = prod(stage="coadd", kind="coadd", tile=name, band=band, run_id=rid)
            if k % 3:
                cat = prod(stage="coadd", kind="coadd_catalog", tile=name, band=band, run_id=rid)
                objs.append((cat, name, band, tiles[-1]["ra"], tiles[-1]["dec"]))
            pool = images_by_band[band]
            for img in rng.choice(pool, size=min(10, len(pool)), replace=False):
                lin.append({"product_id": co, "input_product_id": int(img), "input_sha256": f"{int(img):064x}",
                            "role": "image"})
    while pid < 100_000:  # calibration frames etc. up to 10^5 products
        prod(stage="calib", kind="flat", band=BANDS[pid % 5], night=f"2025-{1 + pid % 12:02d}-01")
    f = arch.root / prods[0]["path"]
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x" * 1000)
    import hashlib

    prods[0]["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    objects = _objects(objs, rng)
    with arch.engine.begin() as conn:
        _chunks(conn, S.runs, runs)
        _chunks(conn, S.objects, objects)
        _chunks(conn, S.products, prods)
        _chunks(conn, S.exposures, exps)
        _chunks(conn, S.tiles, tiles)
        _chunks(conn, S.lineage, lin)
        _chunks(conn, S.qa_results, qa)
        _chunks(conn, S.quarantine, quar)
        _chunks(conn, S.night_runs, [{"survey": "bench", "night": n, "dag_id": "nightly_ingest", "run_id": f"manual__{n}"}
                                     for n in sorted({x["night"] for x in exps})])  # as registration keeps it
        from cosmodm_ops.archive.tile_words import words_select

        conn.execute(S.tile_words.insert().from_select(["survey", "tile", "words"], words_select()))  # likewise
        if arch.is_postgres:
            import sqlalchemy as sa

            for t in ("runs", "products", "exposures"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"))
            conn.execute(sa.text("ANALYZE"))
        else:
            import sqlalchemy as sa

            conn.execute(sa.text("ANALYZE"))
    from cosmodm_ops.ui.seed import seed_campaigns

    seed_campaigns(arch, [x["expnum"] for x in exps[:1000]], n=10)
    if arch.is_postgres:  # a settled archive: autovacuum has set the visibility map (index-only scans need it)
        import sqlalchemy as sa

        with arch.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE)"))
    return {"products": len(prods), "exposures": len(exps), "tiles": len(tiles), "lineage": len(lin),
            "qa_results": len(qa), "quarantine": len(quar), "objects": len(objects), "campaigns": 10, "campaign_items": 10 * 1000}


def _objects(catalogs: list[tuple[int, str, str, float, float]], rng: Any) -> list[dict[str, Any]]:
    """About 10^5 catalog objects: OBJ_PER_CAT per coadd catalog, spread over its tile (1.2 x 1.5 deg)."""
    from cosmodm_ops.archive.catalogs import healpix_index

    n = OBJ_PER_CAT
    ra = np.concatenate([c[3] + rng.uniform(-0.6, 0.6, n) for c in catalogs]) % 360.0
    dec = np.concatenate([c[4] + rng.uniform(-0.75, 0.75, n) for c in catalogs])
    hpx = healpix_index(ra, dec)
    mag = rng.uniform(18, 25, ra.size)
    return [{"product_id": c[0], "tile": c[1], "band": c[2], "number": j + 1, "ra": float(ra[i]), "dec": float(dec[i]),
             "hpx": int(hpx[i]), "mag_auto": float(mag[i]), "magerr_auto": 0.02, "flags": 0}
            for k, c in enumerate(catalogs) for j in range(n) for i in (k * n + j,)]


def _endpoints() -> dict[str, str]:
    mid = "2026-02-19"
    return {
        "nights": "/cosmodm/", "nights_json": "/cosmodm/api/nights",
        "nights_page5": "/cosmodm/?before=2026-02-10", "night": f"/cosmodm/night/bench/{mid}",
        "night_json": f"/cosmodm/api/night/bench/{mid}", "exposure": "/cosmodm/exposure/bench/505000",
        "exposure_json": "/cosmodm/api/exposure/bench/505000", "tiles": "/cosmodm/tiles?survey=bench",
        "tiles_json": "/cosmodm/api/tiles?survey=bench", "tile": "/cosmodm/tile/bench/DES0500-bench",
        "tile_json": "/cosmodm/api/tile/bench/DES0500-bench", "product": "/cosmodm/product/30000",
        "product_json": "/cosmodm/api/product/30000", "search": "/cosmodm/search?q=505000",
        "search_json": "/cosmodm/api/search?q=kind%3Dcoadd+tile%3DDES0500-bench",
        "cone_json": "/cosmodm/api/cone?ra=30&dec=-45&radius=0.5", "download": "/cosmodm/download/1",
        "campaigns": "/cosmodm/campaigns", "campaigns_json": "/cosmodm/api/campaigns",
        "campaign": "/cosmodm/campaign/5", "campaign_json": "/cosmodm/api/campaign/5?state=failed",
        "anchor": "/api/v2/dags/nightly_ingest/dagRuns?limit=50",
    }


#: the floor anchors, measured first and again last: our app's constant JSON behind the same authentication
#: (no database) and Airflow's cheapest authenticated endpoint (no database; version and health need no token)
FLOORS = {"floor": "/cosmodm/api/ping", "airflow_floor": "/api/v2/providers?limit=1"}


def _measure(url: str, tok: str, path: str, clients: int, per_client: int) -> list[float]:
    def one(_: int) -> list[float]:
        out = []
        for _ in range(per_client):
            req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {tok}"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
                if r.status != 200:
                    msg = f"{path}: HTTP {r.status}"
                    raise RuntimeError(msg)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    with cf.ThreadPoolExecutor(clients) as pool:
        return [x for chunk in pool.map(one, range(clients)) for x in chunk]


def _backend(name: str, db: str, tmp: Path, clients: int, per_client: int, workers: int,
             concurrency: int) -> dict[str, Any]:
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.ui.server import REPO, start_api_server, token

    arch = Archive(db, tmp / f"archive_{name}")
    t0 = time.perf_counter()
    counts = seed_bulk(arch)
    _settle(arch)
    seed_s = time.perf_counter() - t0
    dags = tmp / "dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(REPO / "dags" / "nightly_ingest.py", dags / "nightly_ingest.py")
    server = start_api_server(tmp / f"airflow_{name}", db=db, root=str(arch.root), timeout=300,
                              env_extra={"AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__API__WORKERS": str(workers),
                                         "COSMODM_UI_CONCURRENCY": str(concurrency)})
    try:
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "reserialize"], env=server.env,
                       check=True, capture_output=True, timeout=600)
        tok = token(server.url, "admin", server.passwords["admin"])
        load = [round(os.getloadavg()[0], 1)]
        first = {k: _endpoint(server, tok, path, clients, per_client) for k, path in FLOORS.items()}
        pages = {key: _endpoint(server, tok, path, clients, per_client) for key, path in _endpoints().items()}
        last = {k: _endpoint(server, tok, path, clients, per_client) for k, path in FLOORS.items()}
        load.append(round(os.getloadavg()[0], 1))
    finally:
        server.stop()
    anchor = pages.pop("anchor")
    floor = first["floor"]["p95_ms"]
    for v in pages.values():
        v["over_floor_ms"] = round(v["p95_ms"] - floor, 1)
    out = {"pages": pages, "anchor_p50_ms": anchor["p50_ms"], "anchor_p95_ms": anchor["p95_ms"],
           "anchor_server_cpu_ms": anchor["server_cpu_ms"]}
    for k in FLOORS:  # the floors as the run began and as it ended (the machine's load drifts)
        out.update({f"{k}_p50_ms": first[k]["p50_ms"], f"{k}_p95_ms": first[k]["p95_ms"],
                    f"{k}_server_cpu_ms": first[k]["server_cpu_ms"], f"{k}_end_p95_ms": last[k]["p95_ms"]})
    return {**out, "load_1min_start_end": load, "workers": server.env.get("AIRFLOW__API__WORKERS"),
            "seed_s": round(seed_s, 1), "counts": counts}


def _settle(arch: Any) -> None:
    """Write the bulk load out before measuring: the pages of a settled archive, not a load's write-back.

    Right after the seed, PostgreSQL's log showed a checkpoint starting during the measurement (``checkpoint
    starting: wal``, 180-350 MB of WAL behind it, spread over 4.5 minutes: the whole run), and the kernel held
    the files' dirty pages; SQLite held the load in its WAL. So: ``CHECKPOINT`` (SQLite: a truncating WAL
    checkpoint), then ``sync``.
    """
    raw = arch.engine.raw_connection()  # outside SQLAlchemy's transaction (SQLite's hook would BEGIN IMMEDIATE)
    try:
        if arch.is_postgres:
            raw.dbapi_connection.autocommit = True
        cur = raw.cursor()
        cur.execute("CHECKPOINT" if arch.is_postgres else "PRAGMA wal_checkpoint(TRUNCATE)")
        cur.close()
    finally:
        if arch.is_postgres:
            raw.dbapi_connection.autocommit = False  # back to the pool as it came
        raw.close()
    os.sync()


def _endpoint(server: Any, tok: str, path: str, clients: int, per_client: int) -> dict[str, float]:
    """p50, p95 (ms) of ``clients`` x ``per_client`` requests, and the api-server's CPU ms per request."""
    # warm every worker (imports, compiled statements and templates, a PostgreSQL backend's catalog caches):
    # one request per client, so both api-server workers see the endpoint (2 requests could reach only one, and the
    # other's first-time cost, with the gate's queue behind it, would land in the measured p95)
    _measure(server.url, tok, path, clients, 1)
    cpu0 = _server_cpu_s(server.proc.pid)
    lat = np.array(_measure(server.url, tok, path, clients, per_client))
    cpu = (_server_cpu_s(server.proc.pid) - cpu0) / lat.size * 1000
    return {"p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "server_cpu_ms": round(cpu, 1)}


def _server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the api-server and its workers so far (per request: app cost, not queueing)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
    except psutil.Error:
        return 0.0
    return total


def ui(clients: int = 10, per_client: int = 30, backends: str = "sqlite,postgres", workers: int = WORKERS,
       pg_db: str = "ui_bench", concurrency: int = 1) -> dict[str, Any]:
    """Run the benchmark; returns ``{"pages", "anchor_p95_ms", ...}`` (the first backend's) and per backend.

    ``workers``: api-server worker processes; ``pg_db``: the PostgreSQL database it creates and drops;
    ``concurrency``: survey requests run at once per worker (``COSMODM_UI_CONCURRENCY``, the app's gate).
    """
    import re

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", pg_db):
        msg = f"--pg-db {pg_db!r}: use lower-case letters, digits and _ (it is created and dropped)"
        raise ValueError(msg)
    out: dict[str, Any] = {"clients": clients, "requests_per_endpoint": clients * per_client, "workers": workers,
                           "concurrency": concurrency}
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp_s:
        tmp = Path(tmp_s)
        for name in backends.split(","):
            if name == "sqlite":
                db = f"sqlite:///{tmp / 'bench.db'}"
                out[name] = _backend(name, db, tmp, clients, per_client, workers, concurrency)
            elif name == "postgres":
                out[name] = _with_postgres(lambda db: _backend("postgres", db, tmp, clients, per_client, workers,
                                                                  concurrency),
                                           pg_db)
    first = out[backends.split(",")[0]]
    out["pages"], out["anchor_p95_ms"], out["floor_p95_ms"] = first["pages"], first["anchor_p95_ms"], first["floor_p95_ms"]
    slow = {f"{b}:{k}": v["p95_ms"] for b in backends.split(",") for k, v in out[b]["pages"].items()
            if v["p95_ms"] > target_ms(k)}
    out["over_target"] = slow
    return out


def target_ms(name: str) -> int:
    """The p95 target of an endpoint: 100 ms for JSON, 300 ms for pages (and the download)."""
    return 100 if name.endswith("_json") else 300


def format_results(out: dict[str, Any]) -> str:
    """The table ``cosmodm bench ui`` prints: per backend, each endpoint's p50, p95, CPU, p95 over the floor."""
    lines = []
    for b in ("sqlite", "postgres"):
        if b not in out:
            continue
        r = out[b]
        head = (f"{b}: load {r['load_1min_start_end']}, workers {r['workers']}; floor_p95_ms {r['floor_p95_ms']} "
                f"(at the end {r['floor_end_p95_ms']}, CPU {r['floor_server_cpu_ms']} ms/request); Airflow's "
                f"providers {r['airflow_floor_p95_ms']} (end {r['airflow_floor_end_p95_ms']}); anchor dagRuns "
                f"p95 {r['anchor_p95_ms']}")
        lines += [head,
                  f"  {'endpoint':<16}{'p50':>8}{'p95':>8}{'cpu/req':>9}{'p95-floor':>11}{'target':>8}  met"]
        for k, v in r["pages"].items():
            lines.append(f"  {k:<16}{v['p50_ms']:>8}{v['p95_ms']:>8}{v['server_cpu_ms']:>9}{v['over_floor_ms']:>11}"
                         f"{target_ms(k):>8}  {'yes' if v['p95_ms'] <= target_ms(k) else 'no'}")
    return "\n".join(lines)


def _with_postgres(fn: Any, name: str) -> Any:
    import sqlalchemy as sa

    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        return fn(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> None:  # pragma: no cover - ``python -m cosmodm_ops.ui.bench``
    print(json.dumps(ui()))
