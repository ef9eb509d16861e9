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
    pl = cs.add_parser("pools", help="the Airflow pools of the sites, as JSON for 'airflow pools import'")
    pl.add_argument("--site", action="append", help="a site (repeatable; default: every site in include/configs)")
    pl.set_defaults(func=_pools)


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


def pools(sites: list[str] | None = None) -> dict[str, dict]:
    """``{"cosmodm_<site>": {"slots", "description", "include_deferred"}}`` from ``site.batch.max_concurrent``."""
    from cosmodm_ops.batch.base import pool_name
    from cosmodm_ops.config import load_config
    from cosmodm_ops.config.loader import available

    names = sites or available("sites")
    out = {}
    for name in names:
        site = load_config("demo", site=name).site
        out[pool_name(site.name)] = {
            "slots": site.batch.max_concurrent, "include_deferred": True,
            "description": f"batch jobs at site {site.name} ({site.batch.system}): running and deferred tasks",
        }
    return out


def _pools(args: argparse.Namespace) -> int:
    from cosmodm_ops.cli import EXIT_BAD_INPUT
    from cosmodm_ops.config import ConfigError

    try:
        print(json.dumps(pools(args.site), indent=2))
    except ConfigError as err:
        print(f"cosmodm config: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
