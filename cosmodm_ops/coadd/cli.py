"""``cosmodm coadd``: the coadd batch jobs.

One tile and band, inputs from the archive (``COSMODM_DB`` / ``COSMODM_ARCHIVE_ROOT``, or
``--db`` / ``--root``)::

    cosmodm coadd run --tile T --band B --survey S --version V --out DIR [--site S] [--tiling NAME|FILE]
    cosmodm coadd run ... --manifests se1/manifest.json se2/manifest.json ...   # without an archive

The multi-band calibration of a tile, from the band jobs' output folders::

    cosmodm coadd calibrate --tile T --bands g,r,i,z --coadds DIR [DIR ...] --survey S --version V --out DIR
                            [--refcat PHOTOMETRIC.fits] [--truth TRUTH.fits]

Both write ``DIR/manifest.json`` (register it with ``cosmodm archive register``) and
``DIR/qa.json``. Exit codes: 0 done (QA verdicts are in qa.json); 65 bad input, e.g.
"no accepted inputs" (do not retry); 75 transient (retry).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["cmd_calibrate", "cmd_run", "gather_inputs", "inputs_from_manifests", "register"]

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``coadd`` command group to the ``cosmodm`` parser."""
    group = sub.add_parser("coadd", help="coadds of a tile: one band (run), all bands (calibrate)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tile", required=True, help="tile name (of the survey's tiling, or of --tiling)")
        p.add_argument("--survey", default="demo", help="survey config (default: demo)")
        p.add_argument("--version", default="v1", help="pipeline version (archive tag; default v1)")
        p.add_argument("--out", required=True, type=lambda s: Path(s).absolute(), help="output folder")
        p.add_argument("--site", default=os.environ.get("COSMODM_SITE", "local"),
                       help="site config (RAM-disk path; default $COSMODM_SITE or local)")
        p.add_argument("--tiling", default=None, help="tiling name or YAML file (default: the survey's)")
        # absolute: SWarp runs in the scratch folder, which may fall back to <out>/.scratch
        p.add_argument("--workdir", default=None, type=lambda s: Path(s).absolute(),
                       help="parent of the scratch folder (default: the site RAM disk)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. coadd.min_stars_per_image=3 (repeatable; YAML values)")

    run = gsub.add_parser("run", help="coadd one band of a tile from the archive's accepted single-epoch images")
    common(run)
    run.add_argument("--band", required=True, help="band")
    run.add_argument("--manifests", nargs="+", default=None, metavar="MANIFEST",
                     help="take the inputs from these single-epoch manifests instead of the archive "
                          "(no quarantine records: the caller's choice)")
    run.add_argument("--db", help="archive database URL (default: $COSMODM_DB)")
    run.add_argument("--root", help="archive root (default: $COSMODM_ARCHIVE_ROOT)")
    run.set_defaults(func=cmd_run)

    cal = gsub.add_parser("calibrate", help="detection image, dual-image catalogs and stellar-locus calibration")
    common(cal)
    cal.add_argument("--bands", required=True, help="comma-separated bands, e.g. g,r,i,z")
    cal.add_argument("--coadds", required=True, nargs="+",
                     help="band job folders (with manifest.json), or their parent holding <band>/ folders")
    cal.add_argument("--refcat", default=None, help="photometric reference catalog with mag_J (absolute anchor)")
    cal.add_argument("--truth", default=None,
                     help="simulations only: truth catalogue (ra, dec, mag_<band>, is_star; the simulator's "
                          "truth/objects.fits) to score completeness and purity by magnitude in qa.json")
    cal.set_defaults(func=cmd_calibrate)


def _overrides(items: list[str], version: str) -> dict[str, Any]:
    import yaml

    tree: dict[str, Any] = {"pipeline_version": version}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"--set {item!r}: expected KEY=VALUE, e.g. coadd.min_stars_per_image=3"
            raise ValueError(msg)
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return tree


def _config_and_tile(args: argparse.Namespace) -> tuple[Any, Any]:
    from cosmodm_ops.coadd.tiling import load_tiling
    from cosmodm_ops.config import load_config
    from cosmodm_ops.model import validate_token

    validate_token("tile", args.tile)
    cfg = load_config(args.survey, site=args.site, overrides=_overrides(args.overrides, args.version))
    tiling = load_tiling(args.tiling or cfg.survey.tiling)
    return cfg, tiling.tile(args.tile)


def gather_inputs(archive: Any, tile: Any, *, survey: str, band: str, version: str
                  ) -> tuple[list[Any], list[dict[str, Any]]]:
    """The tile's accepted single-epoch CCD images of a band, from the archive.

    An image is used when it is current, its footprint (corners from its WCS) overlaps the
    tile, no quarantine record covers it (exposure, CCD or product), and its weight, PSF
    model and catalog are archived too. Every file is checked against its recorded sha256.

    Returns
    -------
    inputs : list of CoaddInput
    skipped : list of dict
        ``{"name", "reason"}`` of overlapping images left out (quarantined, incomplete).
    """
    from cosmodm_ops.archive.layout import resolve_under
    from cosmodm_ops.coadd.imageio import image_hdu_header, wcs_of
    from cosmodm_ops.coadd.inputs import CoaddInput, InputFile
    from cosmodm_ops.coadd.tiling import ccd_corners

    def key(row: dict[str, Any]) -> tuple[int, int]:
        return int(row["expnum"]), int(row["ccd"])

    common = {"survey": survey, "stage": "single_epoch", "band": band, "version": version}
    companions = {kind: {key(r): r for r in archive.find(kind=kind, **common) if r["ccd"] is not None}
                  for kind in ("weight", "psf", "catalog", "mask")}
    inputs, skipped = [], []
    for row in archive.find(kind="image", **common):
        if row["ccd"] is None or row["expnum"] is None:
            continue
        name = f"{int(row['expnum']):08d}_c{int(row['ccd']):02d}"
        path = resolve_under(archive.root, row["path"])
        try:
            hdr = image_hdu_header(path)
            ra, dec = ccd_corners(wcs_of(hdr), int(hdr["NAXIS1"]), int(hdr["NAXIS2"]))
        except (OSError, ValueError) as err:
            skipped.append({"name": name, "reason": f"cannot read the WCS of {row['path']}: {err}"})
            continue
        if not tile.overlaps(ra, dec):
            continue
        reasons = archive.quarantine_reasons(int(row["id"]))
        if reasons:
            skipped.append({"name": name, "reason": "quarantined: " + "; ".join(reasons)})
            log.info("coadd: %s is quarantined (%s): not used", name, "; ".join(reasons))
            continue
        rows = {"image": row, **{k: companions[k].get(key(row)) for k in companions}}
        missing = [k for k in ("weight", "psf", "catalog") if rows[k] is None]
        if missing:
            skipped.append({"name": name, "reason": f"no archived {', '.join(missing)} for this CCD"})
            continue
        files = {}
        for role, r in rows.items():
            if r is None:
                continue
            full = archive.fetch(int(r["id"]))  # checks the sha256: a corrupt file is never coadded
            tags = {k: r[k] for k in ("survey", "camera", "stage", "version", "kind", "night", "expnum", "ccd",
                                      "band", "tile")}
            files[role] = InputFile(role, full, r["sha256"], int(r["size"]), tags)
        inputs.append(CoaddInput(name=name, expnum=int(row["expnum"]), ccd=int(row["ccd"]), files=files))
    return inputs, skipped


def inputs_from_manifests(manifests: list[Path], tile: Any, *, band: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """The CCD images of a band overlapping the tile, from single-epoch job manifests.

    Every CCD with an image, weight, PSF and catalog product whose files match the
    manifest's sha256 is used; CCDs the job failed have no products and do not appear.
    """
    from cosmodm_ops.coadd.imageio import image_hdu_header, wcs_of
    from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput, InputFile
    from cosmodm_ops.coadd.tiling import ccd_corners
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    inputs, skipped = [], []
    for mpath in manifests:
        m = read_manifest(mpath)
        by_ccd: dict[tuple[int, int], dict[str, Any]] = {}
        for p in m.products:
            t = p.tags
            if t.get("band") != band or t.get("ccd") is None or p.kind not in ("image", "weight", "psf", "catalog",
                                                                                  "mask"):
                continue
            by_ccd.setdefault((int(t["expnum"]), int(t["ccd"])), {})[p.kind] = p
        for (expnum, ccd), prods in sorted(by_ccd.items()):
            name = f"{expnum:08d}_c{ccd:02d}"
            missing = [k for k in ("image", "weight", "psf", "catalog") if k not in prods]
            if missing:
                skipped.append({"name": name, "reason": f"{mpath}: no {', '.join(missing)} product"})
                continue
            files = {}
            for kind, p in prods.items():
                path = (mpath.parent / p.path).resolve()
                if not path.is_file() or file_sha256(path) != p.sha256:
                    msg = f"{path}: missing, or its sha256 differs from {mpath}"
                    raise CoaddBadInput(msg)
                files[kind] = InputFile(kind, path, p.sha256, p.size, dict(p.tags))
            hdr = image_hdu_header(files["image"].path)
            if tile.overlaps(*ccd_corners(wcs_of(hdr), int(hdr["NAXIS1"]), int(hdr["NAXIS2"]))):
                inputs.append(CoaddInput(name=name, expnum=expnum, ccd=ccd, files=files))
    return inputs, skipped


def _archive(args: argparse.Namespace, cfg: Any) -> Any:
    from cosmodm_ops.archive import Archive

    db = args.db or os.environ.get("COSMODM_DB") or cfg.site.archive.db_url
    root = args.root or os.environ.get("COSMODM_ARCHIVE_ROOT") or cfg.site.archive.root
    return Archive(db, root)


def _verbose() -> None:
    """Stage progress is part of a batch job's log: INFO for the coadd modules."""
    logging.getLogger("cosmodm_ops.coadd").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_run(args: argparse.Namespace) -> int:
    """``cosmodm coadd run``: map failures to the shared exit codes."""
    from cosmodm_ops.archive.errors import ArchiveError, ArchiveUnavailable
    from cosmodm_ops.astromatic import ToolError
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT
    from cosmodm_ops.coadd.band import run_band
    from cosmodm_ops.coadd.inputs import CoaddBadInput
    from cosmodm_ops.coadd.psfhomog import PSFHomogError
    from cosmodm_ops.coadd.tiling import TilingError
    from cosmodm_ops.config import ConfigError
    from cosmodm_ops.model import TagError, validate_token

    _verbose()
    try:
        validate_token("band", args.band)
        cfg, tile = _config_and_tile(args)
        if args.manifests:
            inputs, skipped = inputs_from_manifests([Path(m) for m in args.manifests], tile, band=args.band)
        else:
            archive = _archive(args, cfg)
            inputs, skipped = gather_inputs(archive, tile, survey=cfg.survey.name, band=args.band,
                                            version=cfg.pipeline_version)
        return run_band(tile, args.band, inputs, cfg, args.out, workdir=args.workdir, skipped=skipped)
    except ArchiveUnavailable as err:
        print(f"cosmodm coadd run: transient failure (retry may succeed): {err}", file=sys.stderr)
        return EXIT_TRANSIENT
    except (CoaddBadInput, ConfigError, TilingError, TagError, PSFHomogError, ToolError, ArchiveError,
            ValueError) as err:
        print(f"cosmodm coadd run: bad input: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"cosmodm coadd run: transient failure (retry may succeed): {err}", file=sys.stderr)
        return EXIT_TRANSIENT


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``cosmodm coadd calibrate``: map failures to the shared exit codes."""
    from cosmodm_ops.astromatic import ToolError
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT
    from cosmodm_ops.coadd.inputs import CoaddBadInput
    from cosmodm_ops.coadd.tile import calibrate_tile
    from cosmodm_ops.coadd.tiling import TilingError
    from cosmodm_ops.config import ConfigError
    from cosmodm_ops.model import TagError, validate_token

    _verbose()
    try:
        bands = [validate_token("band", b.strip()) for b in args.bands.split(",") if b.strip()]
        if not bands:
            raise CoaddBadInput("--bands: give at least one band")
        cfg, tile = _config_and_tile(args)
        return calibrate_tile(tile, bands, [Path(c) for c in args.coadds], cfg, args.out,
                              refcat=args.refcat, workdir=args.workdir, truth=args.truth)
    except (CoaddBadInput, ConfigError, TilingError, TagError, ToolError, ValueError) as err:
        print(f"cosmodm coadd calibrate: bad input: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"cosmodm coadd calibrate: transient failure (retry may succeed): {err}", file=sys.stderr)
        return EXIT_TRANSIENT
