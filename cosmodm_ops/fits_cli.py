"""``cosmodm fits compress | decompress | info``."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fits", help="FITS tile compression and inspection")
    fs = p.add_subparsers(dest="fits_cmd", metavar="ACTION", required=True)
    c = fs.add_parser("compress", help="RICE-compress every image (q=4 dithered floats, lossless integers)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--q", type=float, default=4.0, help="quantization level for floats (default 4)")
    c.set_defaults(func=_compress)
    d = fs.add_parser("decompress", help="write every HDU uncompressed")
    d.add_argument("input")
    d.add_argument("output")
    d.set_defaults(func=_decompress)
    i = fs.add_parser("info", help="list HDUs: name, type, shape, compression")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_info)


def _fail(err: Exception) -> int:
    from cosmodm_ops.cli import EXIT_BAD_INPUT

    print(f"cosmodm fits: {err}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _compress(args: argparse.Namespace) -> int:
    from cosmodm_ops.fits import FitsError, compress_file

    try:
        out = compress_file(args.input, args.output, qlevel=args.q)
    except FitsError as err:
        return _fail(err)
    size_in, size_out = os.path.getsize(args.input), os.path.getsize(out)
    print(f"{out}: {size_out} bytes (ratio {size_in / max(size_out, 1):.2f})")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from cosmodm_ops.fits import FitsError, decompress_file

    try:
        out = decompress_file(args.input, args.output)
    except FitsError as err:
        return _fail(err)
    print(f"{out}: {os.path.getsize(out)} bytes")
    return 0


def _info(args: argparse.Namespace) -> int:
    from cosmodm_ops.fits import FitsError, hdu_summary

    try:
        hdus = hdu_summary(args.file)
    except FitsError as err:
        return _fail(err)
    if args.json:
        print(json.dumps({"file": args.file, "size": os.path.getsize(args.file), "hdus": hdus}))
        return 0
    for h in hdus:
        shape = "x".join(str(n) for n in reversed(h.get("shape", []))) if h["type"] == "IMAGE_HDU" else f"{h['nrows']} rows"
        comp = h.get("zcmptype") or ("" if not h.get("compressed") else "compressed")
        print(f"{h['hdu']:3d} {h['extname'] or '':12s} {h['type']:14s} {shape:>14s} {comp}")
    return 0
