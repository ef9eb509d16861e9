"""One candidate of a follow-up, as one batch job: ``cosmodm clusters target`` (a campaign item's command).

:func:`run_target` runs the finder on one candidate and writes, atomically (in ``DIR.tmp-<pid>``, renamed
to ``DIR`` at the end), ``result.json``, ``curve.png`` (when the status is ``ok``) and ``inspection.png``
(when a pseudo-colour image is given): the contract between the image-level chain (``--warps``,
:mod:`cosmodm_ops.clusters.chain`) and the ``cluster_followup`` DAG. Two inputs:

* ``catalog``: an existing object catalogue (one merged table, or ``BAND=PATH`` dual-image catalogues, as
  ``clusters find --catalog`` takes); optionally the tile's pseudo-colour PNG and a FITS file whose header
  carries the PNG's WCS (the coadd it was made from) for the inspection picture;
* ``warps``: a folder of PS1-like warps (the image-level chain builds the target-centred tile, its coadds
  and catalogues first).

A candidate outside the inputs is reported (``status`` ``no_coverage`` / ``no_warps``), never a crash.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from cosmodm_ops.clusters.finder import Candidate, ClusterResult, FinderConfig

__all__ = ["RESULT_KEYS", "TargetInputError", "finder_config", "pick_candidate", "result_dict", "run_target"]

#: Keys of ``result.json`` (the interface with the DAG; ``products`` holds only files that exist).
RESULT_KEYS = ("name", "status", "message", "z_phot", "z_err", "richness", "significance", "detected", "bcg_ra",
               "bcg_dec", "unused_colours", "missing_bands", "inputs", "products", "cpu_s")
#: Bands a follow-up may use (PS1 grizy).
BANDS = ("g", "r", "i", "z", "y")


class TargetInputError(ValueError):
    """Bad input of one target job (unknown name, unreadable catalogue, bad config): exit 65, nothing written."""


def pick_candidate(candidates: Sequence[Candidate], name: str, source: str | Path) -> Candidate:
    """The candidate called ``name``; :class:`TargetInputError` naming the list and some names otherwise."""
    for c in candidates:
        if c.name == name:
            return c
    shown = ", ".join(c.name for c in candidates[:8]) + (" ..." if len(candidates) > 8 else "")
    msg = f"{source}: no candidate named {name!r} (column NAME has: {shown})"
    raise TargetInputError(msg)


def finder_config(config: FinderConfig | Mapping[str, Any] | str | Path | None, **changes: Any) -> FinderConfig:
    """A :class:`FinderConfig` from itself, a mapping of its fields, or a YAML file (its ``clusters:`` section,
    or the top level); ``changes`` (not None) go on top. An unknown key names the file and the known keys."""
    if isinstance(config, FinderConfig):
        base = config
    else:
        values: Mapping[str, Any] = {}
        where = "config"
        if isinstance(config, (str, Path)):
            import yaml

            where = str(config)
            try:
                doc = yaml.safe_load(Path(config).read_text()) or {}
            except (OSError, yaml.YAMLError) as err:
                msg = f"{where}: cannot read the finder configuration ({err})"
                raise TargetInputError(msg) from err
            doc = doc if isinstance(doc, dict) else {}
            values = doc.get("clusters", {k: v for k, v in doc.items() if k != "chain"})
        elif config is not None:
            values = config
        known = {f.name for f in fields(FinderConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            msg = f"{where}: unknown finder setting(s) {unknown}; known: {', '.join(sorted(known))}"
            raise TargetInputError(msg)
        try:
            base = FinderConfig(**values)
        except TypeError as err:
            raise TargetInputError(f"{where}: {err}") from err
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def result_dict(result: ClusterResult, *, inputs: Sequence[str | Path], products: Mapping[str, str | Path],
                missing_bands: Sequence[str], cpu_s: float, status: str | None = None,
                message: str | None = None) -> dict[str, Any]:
    """The ``result.json`` document of one candidate (NaN numbers as null)."""
    st = status or (result.status if result.status in ("ok", "no_coverage", "no_warps") else "error")
    return {"name": result.name, "status": st, "message": message if message is not None else result.message,
            "z_phot": _num(result.z_phot), "z_err": _num(result.z_err), "richness": _num(result.richness),
            "significance": _num(result.significance), "detected": bool(result.detected),
            "bcg_ra": _num(result.bcg_ra), "bcg_dec": _num(result.bcg_dec),
            "unused_colours": list(result.unused_colours), "missing_bands": list(missing_bands),
            "inputs": [str(Path(p).resolve()) for p in inputs],
            "products": {k: str(v) for k, v in products.items()}, "cpu_s": round(cpu_s, 3)}


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _catalog_files(catalog: str | Sequence[str]) -> list[str]:
    items = [catalog] if isinstance(catalog, (str, Path)) else list(catalog)
    paths = [str(i).partition("=")[2] if "=" in str(i) else str(i) for i in items]
    for p in paths:
        if not Path(p).is_file():
            msg = f"catalogue {p}: no such file (expected a merged table or BAND=PATH dual-image catalogues)"
            raise TargetInputError(msg)
    return [str(Path(p).resolve()) for p in paths]


def _from_catalog(candidate: Candidate, catalog: str | Sequence[str], config: FinderConfig
                  ) -> tuple[ClusterResult, Any, list[str], list[str]]:
    """The finder on one candidate of an object catalogue: (result, galaxies, inputs, missing bands)."""
    from cosmodm_ops.clusters.catalog import footprint_of, read_catalog
    from cosmodm_ops.clusters.finder import run, select_galaxies

    inputs = _catalog_files(catalog)
    try:
        table = read_catalog([str(c) for c in catalog] if not isinstance(catalog, str) else catalog)
        galaxies = table[select_galaxies(table, config)]
    except (OSError, ValueError, KeyError) as err:
        msg = f"catalogue {', '.join(inputs)}: {err} (expected the columns `clusters find --catalog` reads)"
        raise TargetInputError(msg) from err
    have = {n[len("mag_detmodel_"):] for n in table.dtype.names if n.startswith("mag_detmodel_")}
    return run(candidate, galaxies, footprint_of(table), config), galaxies, inputs, [b for b in BANDS if b not in have]


def _inspection(result: ClusterResult, galaxies: Any, png: str | Path, wcs_file: str | Path, path: Path) -> bool:
    """Draw ``inspection.png`` on the pseudo-colour image; False when the candidate is not on it."""
    import warnings

    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from matplotlib.image import imread

    from cosmodm_ops.clusters.inspection import inspection_png, member_pixels

    rgb = imread(str(png))
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.asarray(rgb[..., :3]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    with fits.open(wcs_file, memmap=False) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        header = next((h.header for h in hdul if "CRVAL1" in h.header), None)
        if header is None:
            msg = f"{wcs_file}: no celestial WCS in any header (give the coadd the pseudo-colour PNG was made from)"
            raise TargetInputError(msg)
        wcs = WCS(header, naxis=2)
    mem = result.member_index
    bcg = (result.bcg_ra, result.bcg_dec) if math.isfinite(result.bcg_ra) else None
    ov = member_pixels(wcs, rgb.shape[0], galaxies["ra"][mem], galaxies["dec"][mem], bcg, (result.ra, result.dec))
    cx, cy = ov.candidate
    if not (0 <= cx < rgb.shape[1] and 0 <= cy < rgb.shape[0]):
        return False
    inspection_png(rgb, ov, result, path, half_size_px=min(400, max(rgb.shape[:2]) // 2))
    return True


def _publish(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out`` (an older ``out`` is moved aside first, then removed)."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _chain_section(path: str | Path) -> Mapping[str, Any]:
    """The ``chain:`` section of a follow-up YAML (beside its ``clusters:`` finder section); {} without one."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise TargetInputError(f"{path}: cannot read the configuration ({err})") from err
    section = doc.get("chain", {}) if isinstance(doc, dict) else {}
    if not isinstance(section, dict):
        raise TargetInputError(f"{path}: chain: must be a mapping of image-chain settings")
    return section


def _from_warps(candidate: Candidate, out: str | Path, warps: str | Path, config: Any,
                chain: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """The image-level branch: :func:`cosmodm_ops.clusters.chain.run_chain` (coadds, catalogues, finder, pictures).

    ``chain``: the image chain's settings (a mapping, or a YAML file whose ``chain:`` section holds them; the
    chain's defaults without). ``config``: a :class:`FinderConfig` (what the CLI and the DAG give: these finder
    settings, the chain's background cap kept unless set), or the chain's own mapping / ``ChainConfig``.
    """
    from cosmodm_ops.clusters.chain import ChainConfig, chain_config, run_chain

    if not Path(warps).is_dir():
        raise TargetInputError(f"--warps {warps}: not a folder of warps")
    try:
        if isinstance(config, FinderConfig):
            base = chain_config(_chain_section(chain) if isinstance(chain, (str, Path)) else (chain or {}))
            cap = config.background_exclusion_max_deg
            finder = replace(config, background_exclusion_max_deg=(base.finder.background_exclusion_max_deg
                                                                    if cap is None else cap))
            settings = replace(base, finder=finder)
        else:
            settings = chain_config(config) if config is not None else ChainConfig()
    except (ValueError, TypeError) as err:
        raise TargetInputError(f"{chain or config}: {err}") from err
    return run_chain(candidate, Path(out).resolve(), Path(warps), settings)


def run_target(candidate: Candidate, out: str | Path, *, warps: str | Path | None = None,
               catalog: str | Sequence[str] | None = None, config: Any = None,
               pseudocolour: str | Path | None = None, pseudocolour_wcs: str | Path | None = None,
               chain: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Follow up one candidate; write ``out/result.json`` (+ pictures) atomically and return the document.

    Exactly one of ``warps`` (image level) and ``catalog`` (catalogue level). ``config``: see
    :func:`finder_config`; ``chain``: the image chain's settings (see :func:`_from_warps`). Raises :class:`TargetInputError` for bad input (nothing is written).
    """
    if (warps is None) == (catalog is None):
        msg = "give exactly one input: --warps DIR (image level) or --catalog FILE [BAND=FILE ...] (catalogue level)"
        raise TargetInputError(msg)
    if (pseudocolour is None) != (pseudocolour_wcs is None):
        msg = "--pseudocolour PNG needs --pseudocolour-wcs FITS (the header of the image it was made from), and back"
        raise TargetInputError(msg)
    if warps is not None:  # image level: the chain writes its own folder atomically (clusters/chain.py)
        return _from_warps(candidate, out, warps, config, chain)
    cfg = finder_config(config)
    cpu0 = _cpu_s()
    out = Path(out).resolve()
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # each branch gives the finder's result, its galaxy table, the input files, the bands missing, and may
        # add products it wrote in ``tmp`` (coadd_<band>, catalog_<band>, pseudocolour + pseudocolour_wcs)
        products: dict[str, Path] = {}
        result, galaxies, inputs, missing = _from_catalog(candidate, catalog, cfg)  # type: ignore[arg-type]
        if result.status == "ok":
            from cosmodm_ops.clusters.plots import plot_curve

            plot_curve(result, tmp / "curve.png")
            products["curve"] = tmp / "curve.png"
            pseudocolour = products.get("pseudocolour", pseudocolour)
            pseudocolour_wcs = products.pop("pseudocolour_wcs", pseudocolour_wcs)
            if pseudocolour is not None and _inspection(result, galaxies, pseudocolour, pseudocolour_wcs,
                                                        tmp / "inspection.png"):
                products["inspection"] = tmp / "inspection.png"
        products = {k: out / Path(v).relative_to(tmp) if Path(v).is_relative_to(tmp) else Path(v)
                    for k, v in products.items()}
        doc = result_dict(result, inputs=inputs, products=products, missing_bands=missing, cpu_s=_cpu_s() - cpu0)
        (tmp / "result.json").write_text(json.dumps(doc, indent=1))
        _publish(tmp, out)
        return doc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
