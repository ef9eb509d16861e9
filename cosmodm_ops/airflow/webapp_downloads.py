"""Streaming a product's file to the browser: inside the archive root only, byte ranges, the sha256.

Every download resolves its path with :func:`cosmodm_ops.ui.files.safe_archive_file` (relative, no
``..``, no encoded separators, symbolic links followed and checked against the resolved root), checks
the size against the product row (and the sha256 for files up to :data:`VERIFY_MAX_BYTES`, so a
corrupt small file is never served), then streams it with ``Content-Length``, ``Accept-Ranges``,
``206`` partial content for a single ``Range``, and the recorded sha256 in ``X-Checksum-Sha256``
(plus ``Repr-Digest`` as RFC 9530 spells it).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import mimetypes
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse

from cosmodm_ops.ui.files import FileRefused, RangeNotSatisfiable, iter_file, parse_range, safe_archive_file

__all__ = ["VERIFY_MAX_BYTES", "json_response", "product_by_path", "serve"]

#: Files up to this size are hashed before they are served (larger ones: size check only; the client
#: has the recorded sha256 in the header, and ``cosmodm archive verify`` checks every file).
VERIFY_MAX_BYTES = 64 << 20
_TYPES = {".fz": "application/fits", ".fits": "application/fits", ".png": "image/png", ".html": "text/html",
          ".json": "application/json", ".head": "text/plain", ".psf": "application/fits"}


def product_by_path(arch: Any, relpath: str) -> dict[str, Any]:
    """The product row of an archive path (404 when the path is refused or no product has it)."""
    import sqlalchemy as sa

    from cosmodm_ops.archive import schema as S

    try:
        safe_archive_file(arch.root, relpath)
    except FileRefused as err:
        raise HTTPException(404, str(err)) from err
    with arch.read_engine.connect() as conn:
        row = conn.execute(sa.select(S.products).where(S.products.c.path == relpath)).mappings().first()
    if row is None:
        raise HTTPException(404, f"archive path {relpath!r}: no product has it")
    return dict(row)


def serve(arch: Any, row: dict[str, Any], range_header: str | None, *, inline: bool) -> StreamingResponse:
    """Stream a product's file (see the module docstring); 404 refused/missing, 409 corrupt, 416 bad range."""
    from cosmodm_ops.archive.store import sha256_file

    try:
        full = safe_archive_file(arch.root, row["path"])
    except FileRefused as err:
        raise HTTPException(404, f"product {row['id']}: {err}") from err
    size = full.stat().st_size
    if size != row["size"]:
        raise HTTPException(409, f"product {row['id']}: file size {size} differs from the recorded {row['size']}; "
                                 "run `cosmodm archive verify`")
    if size <= VERIFY_MAX_BYTES and sha256_file(full) != row["sha256"]:
        raise HTTPException(409, f"product {row['id']}: file is corrupt (sha256 differs from the record); "
                                 "run `cosmodm archive verify`")
    try:
        rng = parse_range(range_header, size)
    except RangeNotSatisfiable as err:
        raise HTTPException(416, str(err), headers={"Content-Range": f"bytes */{size}"}) from err
    start, end = rng if rng else (0, size - 1)
    name = full.name
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    media = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    digest = base64.b64encode(bytes.fromhex(row["sha256"])).decode()
    headers = {
        "Content-Length": str(max(0, end - start + 1)),
        "Accept-Ranges": "bytes",
        "X-Checksum-Sha256": row["sha256"],
        "Repr-Digest": f"sha-256=:{digest}:",
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
    }
    if media == "text/html":  # an archived HTML report runs no script in the app's origin
        headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    status = 200
    if rng:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = iter_file(full, start, end) if size else iter(())
    return StreamingResponse(body, status_code=status, media_type=media, headers=headers)


def _json_default(o: Any) -> Any:
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (Path, Decimal)):
        return str(o) if isinstance(o, Path) else float(o)
    msg = f"not JSON serializable: {type(o).__name__}"
    raise TypeError(msg)


def json_response(data: Any) -> Response:
    """JSON straight from the dicts (no response-model validation of large payloads).

    Encoded by msgspec (Airflow's own dependency: 5-10x faster than ``json`` on the tiles' and nights' lists;
    NaN becomes null); a payload msgspec refuses (a dict keyed by None) goes through ``json`` instead.
    """
    import msgspec

    try:
        body = msgspec.json.encode(data, enc_hook=_json_default)
    except TypeError:
        body = json.dumps(data, default=_json_default, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")
