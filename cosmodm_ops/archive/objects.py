"""Catalog objects into the ``objects`` table: binary COPY on PostgreSQL, batched INSERT on SQLite.

Reading the LDAC file and the HEALPix index are :mod:`.catalogs` (no SQL); this module writes
the rows, sorted by HEALPix index (index inserts become near-sequential and the table is
clustered on the sky), inside the caller's transaction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.catalogs import OBJECT_FLOAT_COLUMNS, ObjectColumns
from cosmodm_ops.model import Tags

__all__ = ["copy_objects", "insert_objects", "load_objects"]

_OBJ_FLOATS = tuple(OBJECT_FLOAT_COLUMNS)


def _sorted_by_hpx(cat: ObjectColumns) -> ObjectColumns:
    """Rows in HEALPix order: index inserts become near-sequential and the table is clustered on the sky."""
    order = np.argsort(cat.hpx, kind="stable")
    return ObjectColumns(number=cat.number[order], ra=cat.ra[order], dec=cat.dec[order], hpx=cat.hpx[order],
                         flags=cat.flags[order], floats={k: v[order] for k, v in cat.floats.items()})


def insert_objects(conn: Connection, const: dict[str, Any], cat: ObjectColumns, batch: int = 5000) -> int:
    """Batched INSERT of catalog objects (SQLite, and the row-by-row reference on PostgreSQL)."""
    cat = _sorted_by_hpx(cat)
    cols = [k for k, v in const.items() if v is not None]
    names = [*cols, "number", "ra", "dec", "hpx", "flags", *_OBJ_FLOATS]
    base = [const[c] for c in cols]
    floats = [[v if math.isfinite(v) else None for v in cat.floats[f].tolist()] for f in _OBJ_FLOATS]
    columns = [cat.number.tolist(), cat.ra.tolist(), cat.dec.tolist(), cat.hpx.tolist(), cat.flags.tolist(),
               *floats]
    rows = [tuple(base) + t for t in zip(*columns, strict=True)]
    marks = ", ".join(["?" if conn.dialect.name == "sqlite" else "%s"] * len(names))
    sql = f"INSERT INTO objects ({', '.join(names)}) VALUES ({marks})"
    for i in range(0, len(rows), batch):
        conn.exec_driver_sql(sql, rows[i:i + batch])
    return len(rows)


def copy_objects(conn: Connection, const: dict[str, Any], cat: ObjectColumns) -> int:
    """Bulk-load catalog objects with PostgreSQL ``COPY ... FROM STDIN (FORMAT binary)``.

    The binary COPY buffer is built with numpy in one pass (no per-row Python), sent by
    psycopg2's ``copy_expert`` on the transaction's own connection. Non-finite floats are
    stored as NaN (fixed-width records cannot hold NULLs; :meth:`Archive.cone` answers None for
    them, as on SQLite); constant columns that are None are left out (NULL).
    """
    import io

    cat = _sorted_by_hpx(cat)
    n = cat.n
    fields: list[tuple[str, str, Any]] = []  # (column, numpy big-endian dtype, values)
    for name, value in const.items():
        if value is None:
            continue
        if isinstance(value, str):
            b = value.encode()
            fields.append((name, f"S{len(b)}", np.full(n, b, dtype=f"S{len(b)}")))
        else:
            fields.append((name, ">i8", np.full(n, int(value), dtype=np.int64)))
    fields += [("number", ">i4", cat.number), ("ra", ">f8", cat.ra), ("dec", ">f8", cat.dec),
               ("hpx", ">i8", cat.hpx), ("flags", ">i4", cat.flags)]
    fields += [(f, ">f8", cat.floats[f]) for f in _OBJ_FLOATS]
    # integer columns of the table that are 4 bytes wide
    int4 = {"expnum", "ccd", "number", "flags"}
    dtype = [("nfields", ">i2")]
    for name, dt_, _ in fields:
        if name in int4 and dt_ == ">i8":
            dt_ = ">i4"
        dtype += [(f"len_{name}", ">i4"), (name, dt_)]
    rec = np.empty(n, dtype=dtype)
    rec["nfields"] = len(fields)
    for name, _dt, values in fields:
        rec[f"len_{name}"] = rec.dtype[name].itemsize
        rec[name] = values
    buf = io.BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    buf.write(rec.tobytes())
    buf.write((-1).to_bytes(2, "big", signed=True))
    buf.seek(0)
    cols = ", ".join(name for name, _, _ in fields)
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.copy_expert(f"COPY objects ({cols}) FROM STDIN WITH (FORMAT binary)", buf)
    finally:
        cur.close()
    return n


def load_objects(conn: Connection, product_id: int, tags: Tags, cat: ObjectColumns) -> int:
    """Load a catalog's objects for ``product_id`` (COPY on PostgreSQL, batched INSERT on SQLite); the count."""
    if cat.n == 0:
        return 0
    exp_id = None
    if tags.expnum is not None:
        exp_id = conn.execute(sa.select(S.exposures.c.id).where(
            S.exposures.c.survey == tags.survey, S.exposures.c.camera == tags.camera,
            S.exposures.c.expnum == tags.expnum)).scalar()
    const = {"product_id": product_id, "exposure_id": exp_id, "expnum": tags.expnum, "ccd": tags.ccd,
             "tile": tags.tile, "band": tags.band}
    if conn.dialect.name == "postgresql":
        return copy_objects(conn, const, cat)
    return insert_objects(conn, const, cat)
