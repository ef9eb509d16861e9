"""Registration: a job's manifest (or one raw exposure) into runs, products, lineage, QA and object rows.

Two phases, so that bad input leaves nothing behind. :func:`check_manifest` reads the
manifest and checks everything against the files (tags, containment, sha256 and size, LDAC
catalogs, product ``inputs``, ``qa.json``) and raises one :class:`ArchiveInputError` listing
every problem. Only then does :func:`register_manifest` write, in one transaction: the run
row (keyed by the manifest's bytes, so re-registering adds nothing), the products
(:mod:`.storage`), exposure / CCD-image / tile rows, lineage edges, QA rows and the catalog
objects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import qa
from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.catalogs import read_ldac_objects
from cosmodm_ops.archive.db import Database, chunks, insert_stmt, now, upsert_id
from cosmodm_ops.archive.errors import ArchiveInputError
from cosmodm_ops.archive.layout import relpath_for, resolve_under, tag_key
from cosmodm_ops.archive.objects import load_objects
from cosmodm_ops.archive.storage import Item, StoredProduct, make_item, store_items
from cosmodm_ops.archive.store import sha256_file
from cosmodm_ops.model import ProductKind, Stage, TagError, Tags

if TYPE_CHECKING:
    from cosmodm_ops.manifest import Manifest, ManifestProduct

__all__ = ["CheckedManifest", "check_manifest", "register_manifest", "register_raw"]

_CATALOG_KINDS = {ProductKind.CATALOG.value, ProductKind.COADD_CATALOG.value}


@dataclass
class CheckedManifest:
    """A manifest whose every file, tag, input name and QA document was checked against the disk."""

    path: Path
    """The ``manifest.json``, resolved."""
    manifest: Manifest
    items: list[Item]
    """Products to store, in manifest order (catalogs with their objects read)."""
    qa_checks: list[dict[str, Any]]
    """Checks of the ``qa.json`` beside the manifest (empty when there is none)."""


def _check_product(folder: Path, where: str, prod: ManifestProduct) -> Item | str:
    """The product as an :class:`Item`, or the problem with it (one line)."""
    try:
        tags = prod.tags_obj()
        if tags.kind.value != prod.kind:
            return f"{where}: kind {prod.kind!r} differs from tags kind {tags.kind.value!r}"
        relpath_for(tags)
    except TagError as err:
        return f"{where}: bad tags: {err}"
    try:
        src = resolve_under(folder, prod.path)
    except TagError:
        return f"{where}: path escapes the manifest folder"
    if not src.is_file():
        return f"{where}: file {src} is missing"
    size = src.stat().st_size
    actual = sha256_file(src)
    if actual != prod.sha256:
        return f"{where}: sha256 of {src} is {actual}, the manifest says {prod.sha256}"
    if size != prod.size:
        return f"{where}: size of {src} is {size}, the manifest says {prod.size}"
    item = Item(tags=tags, src=src, sha256=actual, size=size, manifest_path=prod.path, inputs=prod.inputs)
    if prod.kind in _CATALOG_KINDS:
        try:
            item.catalog = read_ldac_objects(src)
        except ValueError as err:
            return f"{where}: {err}"
    return item


def _input_problems(path: Path, manifest: Manifest, items: Sequence[Item]) -> list[str]:
    """Product ``inputs`` that name neither a job input role nor another product of the manifest."""
    roles = {inp.role for inp in manifest.inputs}
    paths = {it.manifest_path for it in items}
    return [f"{path}: product {it.manifest_path}: input {name!r} is neither an input "
            f"role ({sorted(roles)}) nor a product path of this manifest"
            for it in items for name in it.inputs or [] if name not in roles and name not in paths]


def _read_qa_file(qa_path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Checks of a ``qa.json`` (none when it does not exist), and its problems."""
    if not qa_path.exists():
        return [], []
    try:
        return qa.read_qa_checks(json.loads(qa_path.read_text())), []
    except json.JSONDecodeError as err:
        return [], [f"{qa_path}: not valid JSON (line {err.lineno}: {err.msg})"]
    except ArchiveInputError as err:
        return [], [f"{qa_path}: {err}"]


def check_manifest(path: str | os.PathLike[str]) -> CheckedManifest:
    """Read a manifest and check it against the files beside it; every problem in one error.

    Raises
    ------
    ArchiveInputError
        Listing every problem found (unreadable manifest, bad tags, a path escaping the
        folder, a missing file, a sha256 or size that differs, an unreadable catalog, an
        unknown product input, a bad ``qa.json``).
    """
    from cosmodm_ops.manifest import read_manifest

    path = Path(path).resolve()
    try:
        manifest = read_manifest(path)
    except ValueError as err:
        raise ArchiveInputError(str(err)) from err
    problems: list[str] = []
    items: list[Item] = []
    for i, prod in enumerate(manifest.products):
        checked = _check_product(path.parent, f"{path}: products[{i}] ({prod.path})", prod)
        if isinstance(checked, str):
            problems.append(checked)
        else:
            items.append(checked)
    problems += _input_problems(path, manifest, items)
    qa_checks, qa_problems = _read_qa_file(path.parent / "qa.json")
    problems += qa_problems
    if problems:
        msg = ("manifest not registered (nothing was): re-run or re-transfer the job's output, then register "
               "again\n  " + "\n  ".join(problems))
        raise ArchiveInputError(msg)
    return CheckedManifest(path=path, manifest=manifest, items=items, qa_checks=qa_checks)


def _run_values(manifest: Manifest, path: Path, run_info: dict[str, Any] | None) -> dict[str, Any]:
    """The ``runs`` row of a manifest; ``run_info`` overrides what the manifest's ``job`` says."""
    info = dict(run_info or {})
    job = manifest.job
    # one manifest = one execution of a job (its bytes carry the job's start and timings): keyed by the
    # bytes alone, a cleared register task or a later DAG run that re-registers it adds no run
    key_src = path.read_bytes()
    b = manifest.bytes or {}

    def pick(name: str, default: Any) -> Any:
        return info.get(name, default)

    return {
        "run_key": hashlib.sha256(key_src).hexdigest(),
        "dag_id": pick("dag_id", None), "run_id": pick("run_id", None), "task_id": pick("task_id", None),
        "try_number": pick("try_number", None), "batch_job_id": pick("batch_job_id", None),
        "job_name": pick("job_name", job.name), "site": pick("site", job.site), "host": pick("host", job.host),
        "start": pick("start", job.start), "end": pick("end", job.end), "state": pick("state", job.state),
        "exit_code": pick("exit_code", job.exit_code),
        "versions": json.dumps(manifest.versions or {}, sort_keys=True),
        "config_hash": manifest.config_hash,
        "bytes_read": pick("bytes_read", b.get("read", sum(i.size for i in manifest.inputs))),
        "bytes_written": pick("bytes_written", b.get("output", sum(p.size for p in manifest.products))),
        "manifest_path": str(path), "created_at": now(),
    }


def _job_tags(manifest: Manifest, items: Sequence[Item]) -> dict[str, Any]:
    """Tags that scope the job's QA rows: the manifest's, completed from its first product."""
    tags = dict(manifest.tags or {})
    if items:
        first = items[0].tags
        for k in ("survey", "expnum", "tile", "band"):
            tags.setdefault(k, getattr(first, k))
    return tags


def _exposure_id(conn: Connection, tags: Tags, **extra: Any) -> int | None:
    """Upsert the ``exposures`` row of ``tags`` (None without night and expnum); ``extra`` fills NULLs."""
    if tags.expnum is None or tags.night is None:
        return None
    values = {"survey": tags.survey, "camera": tags.camera, "night": tags.night, "expnum": tags.expnum,
              "band": tags.band, "created_at": now(), **extra}
    return upsert_id(conn, S.exposures, values, ("survey", "camera", "expnum"),
                     update=("band", "exptime", "ra", "dec", "raw_product_id"))


def _index_products(conn: Connection, items: Sequence[Item], stored: Sequence[StoredProduct]) -> None:
    """Exposure, CCD-image and tile rows for newly stored products."""
    exp_cache: dict[tuple[str, str, int], int | None] = {}
    ccd_rows = []
    for it, st in zip(items, stored, strict=True):
        t = it.tags
        if t.tile is not None and t.stage is not Stage.CLUSTERS:  # a follow-up's label is not a sky tile
            ra, dec = _coadd_centre(it) if t.kind is ProductKind.COADD else (None, None)
            tid = upsert_id(conn, S.tiles, {"survey": t.survey, "name": t.tile, "ra": ra, "dec": dec},
                            ("survey", "name"), update=("ra", "dec"))
            if ra is not None and dec is not None:  # the newest coadd's WCS places the tile (over a nominal centre)
                conn.execute(sa.update(S.tiles).where(S.tiles.c.id == tid).values(ra=ra, dec=dec))
        if t.expnum is None or t.night is None:
            continue
        k = (t.survey, t.camera, t.expnum)
        if k not in exp_cache:
            exp_cache[k] = _exposure_id(conn, t)
        if t.kind is ProductKind.IMAGE and t.ccd is not None and st.outcome != "same":
            ccd_rows.append({"exposure_id": exp_cache[k], "ccd": t.ccd, "version": t.version, "product_id": st.id})
    if ccd_rows:
        conn.execute(insert_stmt(conn, S.ccd_images).on_conflict_do_nothing(index_elements=["product_id"]), ccd_rows)


def _coadd_centre(item: Item) -> tuple[float | None, float | None]:
    """RA, Dec (deg) of a coadd image's central pixel from its WCS, so the tile row can be placed on the sky.

    (None, None) when the file has no celestial WCS (the tile row then keeps NULL coordinates).
    """
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(item.src, memmap=False) as hdul, warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            for hdu in hdul:
                h = hdu.header
                if "CRVAL1" in h and "CRVAL2" in h and h.get("NAXIS", 0) >= 2:
                    w = WCS(h, naxis=2)
                    if not w.has_celestial:
                        continue
                    ra, dec = w.all_pix2world([[(h["NAXIS1"] - 1) / 2, (h["NAXIS2"] - 1) / 2]], 0)[0]
                    return float(ra) % 360.0, float(dec)
    except (OSError, ValueError, KeyError):
        pass
    return None, None


def _add_lineage(conn: Connection, manifest: Manifest, items: Sequence[Item], stored: Sequence[StoredProduct],
                 run_id: int) -> None:
    """Edges product <- each job input (or the product's ``inputs``: roles, or products of this manifest)."""
    p = S.products
    known: dict[str, int] = {}
    for part in chunks(sorted({inp.sha256 for inp in manifest.inputs})):
        for sha, pid in conn.execute(sa.select(p.c.sha256, sa.func.min(p.c.id))
                                     .where(p.c.sha256.in_(part)).group_by(p.c.sha256)):
            known[sha] = int(pid)
    by_path = {it.manifest_path: (it, st) for it, st in zip(items, stored, strict=True)}
    edges: list[dict[str, Any]] = []
    for it, st in zip(items, stored, strict=True):
        wanted = it.inputs
        for inp in manifest.inputs:
            if wanted is None or inp.role in wanted:
                edges.append({"product_id": st.id, "input_product_id": known.get(inp.sha256),
                              "input_sha256": inp.sha256, "input_path": inp.path, "role": inp.role,
                              "run_id": run_id})
        for name in wanted or []:
            if name in by_path:
                src_it, src_st = by_path[name]
                edges.append({"product_id": st.id, "input_product_id": src_st.id,
                              "input_sha256": src_it.sha256, "input_path": src_st.path,
                              "role": src_it.tags.kind.value, "run_id": run_id})
    if edges:
        conn.execute(insert_stmt(conn, S.lineage).on_conflict_do_nothing(
            index_elements=["product_id", "input_sha256", "role"]), edges)


def _note_night_runs(conn: Connection, items: Sequence[Item], stored: Sequence[StoredProduct]) -> None:
    """The (survey, night, DAG run) of the manifest's single-epoch QA products into ``night_runs`` (the nights
    page's runs); a product registered again keeps the run that first filed it, as its row does."""
    ids = [st.id for it, st in zip(items, stored, strict=True)
           if it.tags.stage is Stage.SINGLE_EPOCH and it.tags.kind is ProductKind.QA and it.tags.night]
    if not ids:
        return
    p, r, nr = S.products, S.runs, S.night_runs
    sel = (sa.select(p.c.survey, p.c.night, r.c.dag_id, r.c.run_id).join(r, r.c.id == p.c.run_id)
           .where(p.c.id.in_(ids), r.c.dag_id.isnot(None), r.c.run_id.isnot(None)).distinct())
    conn.execute(insert_stmt(conn, nr).from_select(["survey", "night", "dag_id", "run_id"], sel)
                 .on_conflict_do_nothing())


def register_manifest(db: Database, root: Path, path: str | os.PathLike[str],
                      run_info: dict[str, Any] | None = None) -> list[int]:
    """Check a manifest (:func:`check_manifest`), then file everything in one transaction; the product ids."""
    checked = check_manifest(path)
    items = checked.items
    run = _run_values(checked.manifest, checked.path, run_info)
    with db.transaction() as conn:
        run_id = upsert_id(conn, S.runs, run, ("run_key",))
        stored = store_items(conn, root, items, run_id)
        _index_products(conn, items, stored)
        _add_lineage(conn, checked.manifest, items, stored, run_id)
        _note_night_runs(conn, items, stored)
        if checked.qa_checks:
            qa.insert_qa(conn, checked.qa_checks, run_id=run_id, tags=_job_tags(checked.manifest, items))
        for it, st in zip(items, stored, strict=True):
            if it.catalog is not None and st.outcome != "same":
                load_objects(conn, st.id, it.tags, it.catalog)
    return [st.id for st in stored]


def register_raw(db: Database, root: Path, path: str | os.PathLike[str], tags: Tags | dict[str, Any], *,
                 sha256: str | None = None, header: dict[str, Any] | None = None) -> int:
    """File a raw exposure and upsert its ``exposures`` row (see :meth:`Archive.register_raw`); the product id."""
    item = make_item(tags, path, sha256)
    if item.tags.stage is not Stage.RAW or item.tags.kind is not ProductKind.RAW:
        msg = f"{path}: register_raw needs stage 'raw' and kind 'raw' tags, got {tag_key(item.tags)}"
        raise ArchiveInputError(msg)
    header = {str(k).upper(): v for k, v in (header or {}).items()}
    with db.transaction() as conn:
        stored = store_items(conn, root, [item], None)[0]
        _exposure_id(conn, item.tags, exptime=qa.as_number(header.get("EXPTIME")),
                     ra=qa.as_number(header.get("RA")), dec=qa.as_number(header.get("DEC")),
                     raw_product_id=stored.id)
    return stored.id
