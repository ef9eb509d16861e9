"""``cosmodm clusters find | target | sim``: red-sequence follow-up of a candidate list, or of one candidate (a
campaign item's batch job); a simulated field to try it on."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``clusters`` command group."""
    p = sub.add_parser("clusters", help="cluster follow-up: red-sequence richness and photometric redshifts")
    ss = p.add_subparsers(dest="clusters_cmd", metavar="COMMAND", required=True)
    f = ss.add_parser("find", help="run the red-sequence finder on every candidate of a list")
    f.add_argument("--candidates", required=True, help="FITS or CSV list: NAME, RA, DEC [, radius_arcmin | POS_ERR]")
    f.add_argument("--catalog", required=True, nargs="+",
                   help="a merged multi-band table, or BAND=PATH SExtractor dual-image catalogues")
    f.add_argument("--footprint", default=None, metavar="RA0,RA1,DEC0,DEC1",
                   help="the catalogue's sky box in degrees (default: the objects' extent)")
    f.add_argument("--mag-limit", type=float, default=None, help="i-band completeness limit (MAG_AUTO)")
    f.add_argument("--min-significance", type=float, default=5.0, help="detection threshold (default 5)")
    f.add_argument("--no-plots", action="store_true", help="no richness-vs-z PNG per candidate")
    f.add_argument("--out", required=True, help="output folder: clusters.fits, results.json, curves/")
    f.set_defaults(func=_find)
    t = ss.add_parser("target", help="follow up ONE candidate (a cluster_followup campaign item's job)")
    t.add_argument("--candidates", required=True, help="FITS or CSV list: NAME, RA, DEC [, radius_arcmin | POS_ERR]")
    t.add_argument("--name", required=True, help="the candidate (its NAME in the list)")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--warps", default=None, help="image level: a folder of PS1-like warps")
    src.add_argument("--catalog", nargs="+", default=None,
                     help="catalogue level: a merged multi-band table, or BAND=PATH dual-image catalogues")
    t.add_argument("--out", required=True, help="output folder (written atomically): result.json, curve.png, "
                   "inspection.png")
    t.add_argument("--config", default=None, help="YAML of finder settings (FinderConfig fields, or a clusters: section; with --warps also a chain: section)")
    t.add_argument("--min-significance", type=float, default=None, help="detection threshold (default: config, 5)")
    t.add_argument("--pseudocolour", default=None, help="catalogue level: the tile's pseudo-colour PNG")
    t.add_argument("--pseudocolour-wcs", default=None, help="a FITS file whose header is the PNG's WCS (its coadd)")
    t.set_defaults(func=_target)
    s = ss.add_parser("sim", help="simulate a catalogue-level field with clusters and a candidate list")
    s.add_argument("--clusters", default="0.15:40,0.35:30,0.55:60",
                   help="comma-separated z:richness of the injected clusters")
    s.add_argument("--nulls", type=int, default=2, help="empty positions added to the candidate list")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="folder: catalog.fits, candidates.csv, truth/objects.fits, "
                   "truth/clusters.fits")
    s.set_defaults(func=_sim)


def _find(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK
    from cosmodm_ops.clusters.catalog import CandidateListError, read_candidates, read_catalog
    from cosmodm_ops.clusters.finder import FinderConfig, Footprint
    from cosmodm_ops.clusters.followup import follow_up

    try:
        candidates = read_candidates(args.candidates)
        catalog = read_catalog(args.catalog)
        footprint = None
        if args.footprint:
            try:
                footprint = Footprint(*(float(v) for v in args.footprint.split(",")))
            except (TypeError, ValueError) as err:
                msg = f"--footprint {args.footprint!r}: expected four numbers RA0,RA1,DEC0,DEC1 (degrees)"
                raise ValueError(msg) from err
    except (CandidateListError, ValueError, OSError, KeyError) as err:
        print(f"cosmodm clusters find: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    config = replace(FinderConfig(), mag_limit=args.mag_limit, min_significance=args.min_significance)
    summary = follow_up(candidates, catalog, Path(args.out), config, footprint=footprint, plots=not args.no_plots)
    print(json.dumps(summary))
    return EXIT_OK


def _target(args: argparse.Namespace) -> int:
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK
    from cosmodm_ops.clusters.catalog import CandidateListError, read_candidates
    from cosmodm_ops.clusters.target import TargetInputError, finder_config, pick_candidate, run_target

    try:
        candidate = pick_candidate(read_candidates(args.candidates), args.name, args.candidates)
        config = finder_config(args.config, min_significance=args.min_significance)
        doc = run_target(candidate, args.out, warps=args.warps, catalog=args.catalog, config=config,
                         pseudocolour=args.pseudocolour, pseudocolour_wcs=args.pseudocolour_wcs,
                         chain=args.config if args.warps else None)
    except (CandidateListError, TargetInputError) as err:
        print(f"cosmodm clusters target: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps({k: doc[k] for k in ("name", "status", "z_phot", "richness", "significance", "detected")}))
    return EXIT_OK


def _sim(args: argparse.Namespace) -> int:
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK
    from cosmodm_ops.clusters.followup import simulate_field

    try:
        specs = [(float(a), int(b)) for a, b in (item.split(":") for item in args.clusters.split(",") if item)]
    except ValueError:
        print(f"cosmodm clusters sim: --clusters {args.clusters!r}: expected z:richness,z:richness,...",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(simulate_field(specs, args.nulls, args.seed, Path(args.out))))
    return EXIT_OK
