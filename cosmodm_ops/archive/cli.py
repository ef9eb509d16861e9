"""``cosmodm archive ...``: file products, ask where they came from and what was made from them.

Every command reads the database URL from ``--db`` or ``COSMODM_DB`` and the root from
``--root`` or ``COSMODM_ARCHIVE_ROOT``, and prints JSON with ``--json``.

Examples (the README's "where did this come from?")::

    export COSMODM_DB=sqlite:///var/archive/cosmodm.db COSMODM_ARCHIVE_ROOT=var/archive
    cosmodm archive init
    cosmodm archive register var/work/2024-01-05/00241238/manifest.json
    cosmodm archive find --tile DES0001-0001 --band r --kind coadd
    # where did this coadd come from (every input, 5 levels up)?
    cosmodm archive lineage demo/coadd/v1/DES0001-0001/r/DES0001-0001_r_coadd.fits.fz --up --depth 5
    # a flat was replaced: what must be redone?
    cosmodm archive register new_flat/manifest.json       # same tags, new checksum -> revision 2
    cosmodm archive stale --superseded demo/calib/v1/any/decam_r_c01_flat.fits.fz
    cosmodm archive verify            # exit 65 when a file is missing or corrupt
    cosmodm archive cone 60.72 -51.45 0.01 --json

Exit codes: 0 done; 65 bad input (missing file, checksum mismatch, bad tags, unknown
product) or verify found problems; 75 database unreachable or busy (retry).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["register"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_TRANSIENT = 0, 65, 75


def _archive(args: argparse.Namespace) -> Any:
    from cosmodm_ops.archive.api import Archive

    db = args.db or os.environ.get("COSMODM_DB")
    root = args.root or os.environ.get("COSMODM_ARCHIVE_ROOT")
    if not db or not root:
        msg = "set the database and root: --db/--root or COSMODM_DB/COSMODM_ARCHIVE_ROOT"
        raise _Usage(msg)
    return Archive(db, root)


class _Usage(Exception):
    pass


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, default=str, sort_keys=True))
    else:
        for line in lines:
            print(line)


def _row_line(r: dict[str, Any]) -> str:
    state = "" if r.get("state", "current") == "current" else f"  [{r['state']}]"
    return f"{r['id']:>8}  {r['kind']:<13} {r['path']}{state}"


def _cmd_init(args: argparse.Namespace) -> int:
    arch = _archive(args)
    rev = arch.init()
    _emit(args, {"schema_revision": rev, "root": str(arch.root)}, [f"archive ready at {arch.root} (schema {rev})"])
    return EXIT_OK


def _cmd_register(args: argparse.Namespace) -> int:
    arch = _archive(args)
    run_info = json.loads(args.run_info) if args.run_info else None
    ids = arch.register_manifest(args.manifest, run_info=run_info)
    _emit(args, {"manifest": args.manifest, "products": ids}, [f"registered {len(ids)} product(s) from {args.manifest}"])
    return EXIT_OK


def _cmd_find(args: argparse.Namespace) -> int:
    arch = _archive(args)
    rows = arch.find(survey=args.survey, night=args.night, expnum=args.expnum, ccd=args.ccd, tile=args.tile,
                     band=args.band, kind=args.kind, version=args.version, stage=args.stage,
                     include_superseded=args.all, limit=args.limit)
    _emit(args, rows, [_row_line(r) for r in rows] + [f"{len(rows)} product(s)"])
    return EXIT_OK


def _cmd_lineage(args: argparse.Namespace) -> int:
    arch = _archive(args)
    direction = "down" if args.down else "up"
    g = arch.lineage(args.product, direction=direction, depth=args.depth)
    prods = g["products"]
    lines = [_row_line(g["product"]), f"{'inputs (up)' if direction == 'up' else 'made from it (down)'}:"]
    for e in g["edges"]:
        other = e["input_id"] if direction == "up" else e["product_id"]
        row = prods.get(other) if other is not None else None
        where = row["path"] if row else f"{e['input_path']} (not archived, sha256 {e['input_sha256'][:12]})"
        if row and row["state"] != "current":
            where += f"  [{row['state']}]"
        arrow = f"{e['product_id']} <- {e['input_id'] if e['input_id'] is not None else '-'}"
        lines.append(f"  {'  ' * (e['depth'] - 1)}[{e['depth']}] {e['role']:<10} {arrow:<20} {where}")
    _emit(args, {"product": g["product"], "direction": direction, "edges": g["edges"],
                 "products": list(prods.values())}, lines)
    return EXIT_OK


def _cmd_stale(args: argparse.Namespace) -> int:
    arch = _archive(args)
    rows = arch.stale(args.superseded)
    _emit(args, rows, [f"{r['depth']:>3}  {_row_line(r)}" for r in rows] + [f"{len(rows)} product(s) to redo"])
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    arch = _archive(args)
    rep = arch.verify(quarantine=not args.no_quarantine)
    lines = [f"checked {rep.checked}: {rep.ok} ok, {len(rep.missing)} missing, {len(rep.corrupt)} corrupt"]
    lines += [f"MISSING {m['id']} {m['path']}" for m in rep.missing]
    lines += [f"CORRUPT {c['id']} {c['path']}" for c in rep.corrupt]
    lines += [f"leftover temporary (a killed writer's; safe to delete when no register runs): {t}"
              for t in rep.temporaries]
    _emit(args, rep.to_dict(), lines)
    return EXIT_OK if rep.clean else EXIT_BAD_INPUT


def _cmd_cone(args: argparse.Namespace) -> int:
    arch = _archive(args)
    rows = arch.cone(args.ra, args.dec, args.radius, limit=args.limit)
    lines = [f"{r['ra']:11.6f} {r['dec']:+11.6f} {r['dist'] * 3600:8.2f}\"  mag_auto={r['mag_auto']}  {r['path']}"
             for r in rows] + [f"{len(rows)} object(s)"]
    _emit(args, rows, lines)
    return EXIT_OK


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from cosmodm_ops.archive.errors import (
            ArchiveError,
            ArchiveInputError,
            ArchiveUnavailable,
            ProductNotFound,
        )
        from cosmodm_ops.model import TagError

        try:
            return func(args)
        except ArchiveUnavailable as err:
            print(f"cosmodm archive: {err}", file=sys.stderr)
            return EXIT_TRANSIENT
        except (ArchiveInputError, ProductNotFound, TagError, _Usage, json.JSONDecodeError) as err:
            print(f"cosmodm archive: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except ArchiveError as err:
            print(f"cosmodm archive: {err}", file=sys.stderr)
            return 1

    return wrapped


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``archive`` command group to the ``cosmodm`` parser."""
    group = sub.add_parser("archive", help="the archive and lineage database",
                           description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    cmds = group.add_subparsers(dest="archive_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_, description=help_)
        p.add_argument("--db", help="SQLAlchemy URL (default: $COSMODM_DB)")
        p.add_argument("--root", help="archive root (default: $COSMODM_ARCHIVE_ROOT)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=_run(func))
        return p

    add("init", _cmd_init, "create the root and migrate the database to the newest schema")
    p = add("register", _cmd_register, "verify a job manifest's files, then file products, lineage, run, QA, catalogs")
    p.add_argument("manifest", help="manifest.json (qa.json beside it is read too)")
    p.add_argument("--run-info", help="JSON object: dag_id, run_id, task_id, try_number, batch_job_id, ...")
    p = add("find", _cmd_find, "find products by tags")
    for name in ("survey", "night", "tile", "band", "kind", "version", "stage"):
        p.add_argument(f"--{name}")
    p.add_argument("--expnum", type=int)
    p.add_argument("--ccd", type=int)
    p.add_argument("--all", action="store_true", help="include superseded revisions")
    p.add_argument("--limit", type=int)
    p = add("lineage", _cmd_lineage, "what a product was made from (--up) or what was made from it (--down)")
    p.add_argument("product", help="product id, archive path or sha256")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--up", action="store_true", help="inputs, recursively (default)")
    way.add_argument("--down", action="store_true", help="products made from it, recursively")
    p.add_argument("--depth", type=int, help="levels to follow (default: all)")
    p = add("stale", _cmd_stale, "current products made, directly or not, from a superseded product")
    p.add_argument("--superseded", metavar="PRODUCT", help="that product (default: every superseded product)")
    p = add("verify", _cmd_verify, "check every archived file against its sha256; exit 65 on problems")
    p.add_argument("--no-quarantine", action="store_true", help="report only; do not quarantine bad files")
    p = add("cone", _cmd_cone, "catalog objects within RADIUS degrees of (RA, DEC), nearest first")
    p.add_argument("ra", type=float)
    p.add_argument("dec", type=float)
    p.add_argument("radius", type=float)
    p.add_argument("--limit", type=int)
