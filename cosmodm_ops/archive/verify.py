"""Files against their recorded checksums: serve one (:func:`fetch`), check all (:func:`verify`).

A missing or corrupt file is never served silently: :func:`fetch` refuses it, :func:`verify`
reports it and, by default, quarantines its product (never deletes it). Leftover temporaries
of killed writers are listed, not counted as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cosmodm_ops.archive import qa
from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.db import Database
from cosmodm_ops.archive.errors import ArchiveError
from cosmodm_ops.archive.layout import resolve_under
from cosmodm_ops.archive.queries import product
from cosmodm_ops.archive.store import sha256_file, stale_temporaries

__all__ = ["VerifyReport", "fetch", "verify"]


@dataclass
class VerifyReport:
    """What :meth:`Archive.verify` found."""

    checked: int = 0
    ok: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    corrupt: list[dict[str, Any]] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)
    """Leftover ``.*.part`` files of killed writers (never served; not counted as problems)."""

    @property
    def clean(self) -> bool:
        return not self.missing and not self.corrupt

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "missing": self.missing, "corrupt": self.corrupt,
                "temporaries": self.temporaries, "clean": self.clean}


def fetch(db: Database, root: Path, spec: int | str) -> Path:
    """Path of a product's file after checking its sha256 (a corrupt file is never served silently)."""
    row = product(db, root, spec)
    full = resolve_under(root, row["path"])
    if not full.exists():
        msg = f"product {row['id']} ({row['path']}): file is missing from the archive; run `cosmodm archive verify`"
        raise ArchiveError(msg)
    actual = sha256_file(full)
    if actual != row["sha256"]:
        msg = (f"product {row['id']} ({row['path']}): file is corrupt (sha256 {actual}, "
               f"recorded {row['sha256']}); run `cosmodm archive verify`")
        raise ArchiveError(msg)
    return full


def verify(db: Database, root: Path, *, quarantine: bool = True) -> VerifyReport:
    """Check every archived file (current and superseded) against its recorded size and sha256.

    Missing and corrupt files are reported and, with ``quarantine=True``, quarantined (so
    :func:`~cosmodm_ops.archive.qa.quarantine_reasons` and ``find`` consumers see them);
    :func:`fetch` refuses them anyway.
    """
    p = S.products
    with db.transaction() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(p.c.id, p.c.path, p.c.sha256, p.c.size)
                                              .order_by(p.c.id)).mappings()]
    report = VerifyReport()
    for r in rows:
        report.checked += 1
        full = resolve_under(root, r["path"])
        if not full.is_file():
            report.missing.append({"id": r["id"], "path": r["path"]})
            continue
        actual = sha256_file(full)
        if full.stat().st_size != r["size"] or actual != r["sha256"]:
            report.corrupt.append({"id": r["id"], "path": r["path"], "sha256": actual, "expected": r["sha256"]})
            continue
        report.ok += 1
    report.temporaries = [str(t.relative_to(root)) for t in stale_temporaries(root)]
    if quarantine:
        for r in report.missing:
            qa.quarantine(db, root, r["id"], [f"verify: file {r['path']} is missing from the archive"])
        for r in report.corrupt:
            reason = f"verify: file {r['path']} is corrupt (sha256 {r['sha256']}, recorded {r['expected']})"
            qa.quarantine(db, root, r["id"], [reason])
    return report
