"""``cosmodm single-epoch run``: the batch job for one exposure.

Raw input::

    cosmodm single-epoch run --exposure RAW --calib DIR --refcat FILE --out DIR [--site SITE] [--workdir DIR] [--jobs N]

Already-detrended input (DECam Community Pipeline InstCal triples, or our own products)::

    cosmodm single-epoch run --detrended IMAGE --weight WEIGHT --mask MASK --refcat FILE --out DIR

Writes ``DIR/manifest.json`` and ``DIR/qa.json``. Exit codes: 0 done; 3 done with some
CCDs failed (see qa.json); 65 bad input (do not retry); 75 transient (retry).

The node's calibration cache (``single_epoch.calib_cache``), built by the first raw job on a node, or ahead
of the night's jobs by its own job::

    cosmodm single-epoch stage-calib --calib DIR --band B --camera C [--site SITE]

prints one JSON line (the cache folder and, per calibration file, its entry, what was done and the source
bytes read); exit codes as above.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["cmd_run", "cmd_stage_calib", "register"]

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``single-epoch`` command group to the ``cosmodm`` parser."""
    group = sub.add_parser("single-epoch", help="single-epoch processing of one exposure (a batch job)")
    gsub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = gsub.add_parser("run", help="process one exposure: detrend, catalogs, astrometry, PSF, QA, manifest",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--exposure", help="raw exposure (multi-extension FITS, may be .fz)")
    run.add_argument("--calib", help="calibration folder (bias.fits, flat_<band>.fits, starflat_<band>.fits, bpm.fits)")
    run.add_argument("--detrended", help="detrended image (MEF or single CCD)")
    run.add_argument("--weight", help="inverse-variance weight matching --detrended")
    run.add_argument("--mask", help="mask / data-quality image matching --detrended")
    run.add_argument("--refcat", required=True, help="reference catalog FITS (ra, dec, ra_error, dec_error, mags)")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--survey", default=None, help="survey config (default: from the camera)")
    run.add_argument("--camera", default=None, help="camera config (default: from the file header)")
    run.add_argument("--site", default="local", help="site config (ramdisk path and limits)")
    run.add_argument("--version", default=None, help="pipeline version tag of the products (default: the config's)")
    run.add_argument("--workdir", default=None,
                     help="parent folder for the RAM-disk work area (default: $COSMODM_RAMDISK, the batch "
                          "job's own RAM-disk folder, else the site's ramdisk.path)")
    run.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    run.set_defaults(func=cmd_run)
    stage = gsub.add_parser("stage-calib", help="stage a calibration folder into the node's calibration cache")
    stage.add_argument("--calib", required=True, help="calibration folder")
    stage.add_argument("--band", required=True, help="band of the flats to stage")
    stage.add_argument("--camera", required=True, help="camera config (its CCDs; single_epoch.only_ccds limits them)")
    stage.add_argument("--survey", default=None, help="survey config (default: the camera's)")
    stage.add_argument("--site", default="local", help="site config (ramdisk path and limits)")
    stage.set_defaults(func=cmd_stage_calib)


def _exit_code(command: str, body: Callable[[], int]) -> int:
    """``body()``, its failures mapped to the shared exit codes: bad input 65 (do not retry), OSError 75 (retry)."""
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT
    from cosmodm_ops.single_epoch.inputs import BadInputError

    try:
        return body()
    except BadInputError as err:
        print(f"cosmodm {command}: bad input: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"cosmodm {command}: transient failure (retry may succeed): {err}", file=sys.stderr)
        return EXIT_TRANSIENT


def cmd_stage_calib(args: argparse.Namespace) -> int:
    """Build or check the cache entries of a calibration folder's files for one band."""
    return _exit_code("single-epoch stage-calib", lambda: _stage_calib(args))


def _stage_calib(args: argparse.Namespace) -> int:
    import json

    from cosmodm_ops.config import ConfigError, load_config
    from cosmodm_ops.single_epoch.calibcache import cache_folder, stage_calibrations
    from cosmodm_ops.single_epoch.inputs import DEFAULT_SURVEY, BadInputError
    from cosmodm_ops.single_epoch.rawcalib import find_calib_files
    from cosmodm_ops.single_epoch.rawcamera import camera_ccds

    try:
        cfg = load_config(args.survey or DEFAULT_SURVEY.get(args.camera, "des"), camera=args.camera, site=args.site)
    except ConfigError as err:
        raise BadInputError(str(err)) from err
    if not cfg.single_epoch.calib_cache:
        raise BadInputError("single_epoch.calib_cache is false: there is no cache to stage into")
    only = cfg.single_epoch.only_ccds
    names = [n.upper() for n, num in camera_ccds(cfg.camera) if only is None or num in only]
    files = [(role, str(p)) for role, p in find_calib_files(args.calib, args.band).items() if p is not None]
    cached = stage_calibrations(cfg, files, names)
    print(json.dumps({"folder": str(cache_folder(cfg)), "ccds": len(names),
                      "entries": {c.role: {"key": c.key, "status": c.status, "source_bytes_read": c.bytes_read}
                                  for c in cached.values()}}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline; map failures to the shared exit codes."""
    return _exit_code("single-epoch", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from astropy.io import fits as afits

    from cosmodm_ops.config import ConfigError, load_config
    from cosmodm_ops.single_epoch.inputs import (
        DEFAULT_SURVEY,
        BadInputError,
        camera_from_header,
        check_fits_file,
    )
    from cosmodm_ops.single_epoch.runner import run_exposure

    if args.detrended:
        missing = [n for n in ("weight", "mask") if not getattr(args, n)]
        if missing:
            raise BadInputError(f"--detrended needs --{' and --'.join(missing)}")
        source = args.detrended
    elif args.exposure:
        if not args.calib:
            raise BadInputError("--exposure needs --calib DIR")
        source = args.exposure
    else:
        raise BadInputError("give --exposure RAW --calib DIR, or --detrended IMAGE --weight W --mask M")
    for path in (source, args.weight, args.mask, args.refcat):
        if path:
            check_fits_file(path)
    if args.jobs is not None and not 1 <= args.jobs <= 256:
        raise BadInputError(f"--jobs {args.jobs}: expected 1 to 256 worker processes (or leave it out: cores)")
    camera = args.camera
    if camera is None:
        try:
            hdr = afits.getheader(source, 0)
        except (OSError, ValueError) as err:
            raise BadInputError(f"{source} HDU 0: cannot read the primary header: {err}") from err
        camera = camera_from_header(hdr, source, 0)
    survey = args.survey or DEFAULT_SURVEY[camera]
    try:
        overrides = {"pipeline_version": args.version} if args.version else None
        cfg = load_config(survey, camera=camera, site=args.site, overrides=overrides)
    except ConfigError as err:
        raise BadInputError(str(err)) from err
    return run_exposure(
        cfg=cfg, outdir=args.out, refcat=args.refcat,
        detrended=(args.detrended, args.weight, args.mask) if args.detrended else None,
        raw=args.exposure if not args.detrended else None, calib=args.calib,
        workdir=args.workdir or os.environ.get("COSMODM_RAMDISK") or None, jobs=args.jobs,
    )
