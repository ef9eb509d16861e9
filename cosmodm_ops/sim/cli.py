"""``cosmodm sim night``: simulate a night of raw exposures, calibrations, reference catalogs and truth."""

from __future__ import annotations

import argparse
import json
import logging
import sys

__all__ = ["register"]

log = logging.getLogger(__name__)

_DEFAULT_SURVEY = {"decam": "des", "decam-mini": "demo"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sim`` command group."""
    p = sub.add_parser("sim", help="the survey simulator")
    ss = p.add_subparsers(dest="sim_cmd", metavar="COMMAND", required=True)
    n = ss.add_parser("night", help="simulate a night: raw/, calib/, refcat/, truth/ under --out")
    n.add_argument("--camera", required=True, help="camera config (decam, decam-mini)")
    n.add_argument("--night", required=True, help="observing night YYYY-MM-DD")
    n.add_argument("--exposures", type=int, required=True, help="number of exposures")
    n.add_argument("--bands", default="g,r", help="comma-separated bands, cycled over the exposures (default g,r)")
    n.add_argument("--cloudy", type=int, default=0, help="number of cloudy exposures (>= 0.7 mag extinction)")
    n.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    n.add_argument("--survey", default=None, help="survey config (default: decam -> des, decam-mini -> demo)")
    n.add_argument("--site", default="local", help="site config (default local)")
    n.add_argument("--ra", type=float, default=60.0, help="field centre RA (deg)")
    n.add_argument("--dec", type=float, default=-30.0, help="field centre Dec (deg)")
    n.add_argument("--density-scale", type=float, default=1.0,
                   help="multiply the star and galaxy densities (e.g. 0.05 for a quick layout test)")
    n.add_argument("--density", default=None, choices=("real", "crowded"),
                   help="sky density: real (DES-wide high latitude; default) or crowded (default for decam-mini)")
    n.add_argument("--threads", type=int, default=2, help="worker threads per exposure (default 2)")
    n.add_argument("--no-progress", action="store_true", help="no progress bar")
    n.add_argument("--out", required=True, help="output folder")
    n.set_defaults(func=_night)


def _night(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK
    from cosmodm_ops.config import ConfigError, load_config
    from cosmodm_ops.model import TagError, validate_night
    from cosmodm_ops.sim.density import sky_preset
    from cosmodm_ops.sim.night import plan_night, run_night

    survey = args.survey or _DEFAULT_SURVEY.get(args.camera, "des")
    bands = [b.strip() for b in args.bands.split(",") if b.strip()]
    try:
        validate_night(args.night)
        cfg = load_config(survey, camera=args.camera, site=args.site)
        if args.exposures < 1:
            msg = f"--exposures {args.exposures}: expected at least 1"
            raise ValueError(msg)
        if args.density_scale <= 0:
            msg = f"--density-scale {args.density_scale}: expected > 0"
            raise ValueError(msg)
        sky = sky_preset(args.density, args.camera, args.density_scale)
        plan = plan_night(cfg, args.night, args.exposures, bands, seed=args.seed, cloudy=args.cloudy,
                          ra=args.ra, dec=args.dec, sky=sky)
    except (ConfigError, TagError, ValueError) as err:
        print(f"cosmodm sim night: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = run_night(plan, Path(args.out), threads=args.threads, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}))
    return EXIT_OK
