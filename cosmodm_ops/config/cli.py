"""``cosmodm config show``: the merged configuration, for people and for debugging layers."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the merged configuration")
    cs = p.add_subparsers(dest="config_cmd", metavar="ACTION", required=True)
    s = cs.add_parser("show", help="merge base -> survey -> camera -> site and print it")
    s.add_argument("--survey", default="demo")
    s.add_argument("--camera", default=None)
    s.add_argument("--site", default="local")
    s.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cosmodm_ops.cli import EXIT_BAD_INPUT
    from cosmodm_ops.config import ConfigError, config_hash, load_config

    try:
        cfg = load_config(args.survey, camera=args.camera, site=args.site)
    except ConfigError as err:
        print(f"cosmodm config: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps({"config_hash": config_hash(cfg), **cfg.model_dump(mode="json")}, indent=2))
    return 0
