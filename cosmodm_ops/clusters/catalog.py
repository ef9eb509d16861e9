"""Inputs and outputs of cluster follow-up: candidate lists, galaxy catalogues, the cluster catalogue product.

Candidate lists are FITS tables or CSV files with Planck-like columns: a name (``NAME``), ``RA`` and
``DEC`` in degrees (case-insensitive; ``RAdeg``/``DEdeg`` also accepted) and optionally a prior search
radius in arcmin (``radius_arcmin``, or Planck's ``POS_ERR``). A bad list raises
:class:`CandidateListError` naming the file, the row (1-based, as a person counts data rows) and the
column, before any work starts.

Galaxy catalogues: one merged multi-band table (columns ``ra, dec, mag_auto_<b>, magerr_auto_<b>,
mag_detmodel_<b>, magerr_detmodel_<b>, spread_model, spreaderr_model``), or SExtractor dual-image
catalogues, one per band (``BAND=PATH``; LDAC or plain FITS; joined on ``NUMBER``; ALPHA_J2000,
DELTA_J2000, MAG_AUTO, MAG_DETMODEL, their errors; SPREAD_MODEL from the i band, else the first).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cosmodm_ops.clusters.finder import Candidate, ClusterResult, Footprint

__all__ = ["CandidateListError", "footprint_of", "join_dual_image", "read_candidates", "read_catalog",
           "write_cluster_catalogue"]

_ALIASES = {"name": ("name", "psz2_name", "id"), "ra": ("ra", "radeg", "ra_deg", "raj2000"),
            "dec": ("dec", "dedeg", "dec_deg", "dej2000", "decj2000"),
            "radius_arcmin": ("radius_arcmin", "pos_err", "radius")}


class CandidateListError(ValueError):
    """A candidate list that cannot be used; the message names file, row and column and what was expected."""


def _rows_of(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    if path.suffix.lower() in (".csv", ".txt"):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    import fitsio

    try:
        data = fitsio.read(str(path), ext=1)
    except OSError as err:
        msg = f"{path}: not a FITS table or CSV file ({err}); expected a table with NAME, RA, DEC columns"
        raise CandidateListError(msg) from err
    names = list(data.dtype.names or [])
    return names, [{n: data[n][k] for n in names} for k in range(len(data))]


def _number(value: object, path: Path, row: int, column: str) -> float:
    try:
        out = float(value.decode() if isinstance(value, bytes) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        msg = f"{path}: row {row}, column {column}: {value!r} is not a number (expected degrees / arcmin)"
        raise CandidateListError(msg) from err
    if not math.isfinite(out):
        msg = f"{path}: row {row}, column {column}: {value!r} is not a finite number"
        raise CandidateListError(msg)
    return out


def read_candidates(path: str | Path) -> list[Candidate]:
    """Candidates of a FITS or CSV list, validated (names unique, RA in [0, 360), Dec in [-90, 90])."""
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such candidate list (expected a FITS table or CSV with NAME, RA, DEC)"
        raise CandidateListError(msg)
    columns, rows = _rows_of(path)
    lower = {c.strip().lower(): c for c in columns}
    found = {k: next((lower[a] for a in al if a in lower), None) for k, al in _ALIASES.items()}
    missing = [k.upper() for k in ("name", "ra", "dec") if found[k] is None]
    if missing:
        msg = (f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(columns) or 'none'}); "
               "expected NAME, RA, DEC in degrees and optionally radius_arcmin or POS_ERR")
        raise CandidateListError(msg)
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for k, row in enumerate(rows, start=1):
        name = str(row[found["name"]]).strip()  # type: ignore[index]
        if isinstance(row[found["name"]], bytes):  # type: ignore[index]
            name = row[found["name"]].decode().strip()  # type: ignore[index,union-attr]
        if not name:
            msg = f"{path}: row {k}, column {found['name']}: empty name"
            raise CandidateListError(msg)
        if name in seen:
            msg = f"{path}: row {k}: duplicate candidate name {name!r} (first in row {seen[name]}); names must be unique"
            raise CandidateListError(msg)
        seen[name] = k
        ra = _number(row[found["ra"]], path, k, found["ra"])  # type: ignore[index,arg-type]
        dec = _number(row[found["dec"]], path, k, found["dec"])  # type: ignore[index,arg-type]
        if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
            msg = f"{path}: row {k}: RA {ra}, Dec {dec} outside [0, 360) x [-90, 90] degrees"
            raise CandidateListError(msg)
        radius = None
        if found["radius_arcmin"] is not None and str(row[found["radius_arcmin"]]).strip() not in ("", "nan"):
            radius = _number(row[found["radius_arcmin"]], path, k, found["radius_arcmin"])  # type: ignore[arg-type]
        out.append(Candidate(name, ra, dec, radius))
    if not out:
        msg = f"{path}: no candidates (the table has no rows)"
        raise CandidateListError(msg)
    return out


def _read_table(path: str) -> np.ndarray:
    import fitsio

    with fitsio.FITS(path) as f:
        ext = "LDAC_OBJECTS" if "LDAC_OBJECTS" in f else 1
        return f[ext].read()


def read_catalog(sources: str | Sequence[str]) -> np.ndarray:
    """The galaxy catalogue as one table with the finder's lower-case columns.

    ``sources``: a merged table's path, or ``BAND=PATH`` entries (SExtractor dual-image catalogues).
    A missing band simply has no columns (the finder names the colours it cannot use).
    """
    if isinstance(sources, str):
        sources = [sources]
    if len(sources) == 1 and "=" not in sources[0]:
        data = _read_table(sources[0])
        data.dtype.names = tuple(n.lower() for n in data.dtype.names)
        return data
    per_band = {}
    for item in sources:
        band, _, path = item.partition("=")
        if not path:
            msg = f"catalogue {item!r}: expected BAND=PATH (e.g. i=tile_i_cat.fits) or one merged table"
            raise ValueError(msg)
        per_band[band.strip()] = _read_table(path)
    lengths = {b: len(t) for b, t in per_band.items()}
    if len(set(lengths.values())) != 1:
        msg = f"dual-image catalogues differ in length {lengths}: they must come from one detection image"
        raise ValueError(msg)
    return join_dual_image(per_band)


def join_dual_image(tables: Mapping[str, np.ndarray], ref_band: str = "i",
                    position: tuple[str, str] = ("ALPHA_J2000", "DELTA_J2000"), flags: bool = False) -> np.ndarray:
    """The finder's table from SExtractor dual-image catalogues of one detection image (rows aligned).

    Positions (``position`` columns) and SPREAD_MODEL (and FLAGS with ``flags``) from ``ref_band`` (or the
    first band without it); ``mag_auto_<b>``, ``mag_detmodel_<b>`` and their errors per band (99 where a
    catalogue lacks the column).
    """
    first = tables.get(ref_band, next(iter(tables.values())))
    cols = [("ra", "f8"), ("dec", "f8"), ("spread_model", "f4"), ("spreaderr_model", "f4")]
    cols += [("flags", "i4")] if flags else []
    for b in tables:
        cols += [(f"mag_auto_{b}", "f4"), (f"magerr_auto_{b}", "f4"), (f"mag_detmodel_{b}", "f4"),
                 (f"magerr_detmodel_{b}", "f4")]
    out = np.zeros(len(first), dtype=cols)
    out["ra"], out["dec"] = first[position[0]], first[position[1]]
    out["spread_model"], out["spreaderr_model"] = first["SPREAD_MODEL"], first["SPREADERR_MODEL"]
    if flags:
        out["flags"] = first["FLAGS"]
    for b, t in tables.items():
        for ours, theirs in (("mag_auto", "MAG_AUTO"), ("magerr_auto", "MAGERR_AUTO"),
                             ("mag_detmodel", "MAG_DETMODEL"), ("magerr_detmodel", "MAGERR_DETMODEL")):
            out[f"{ours}_{b}"] = t[theirs] if theirs in t.dtype.names else 99.0
    return out


def footprint_of(catalog: np.ndarray) -> Footprint:
    """The RA/Dec box a catalogue covers (RA through 0 handled)."""
    ra = np.asarray(catalog["ra"], float) % 360.0
    if len(ra) == 0:
        return Footprint(0.0, 0.0, 0.0, 0.0)
    if ra.max() - ra.min() > 180.0:  # wraps through 0
        shifted = (ra + 180.0) % 360.0
        return Footprint((shifted.min() - 180.0) % 360.0, (shifted.max() - 180.0) % 360.0,
                         float(catalog["dec"].min()), float(catalog["dec"].max()))
    return Footprint(float(ra.min()), float(ra.max()), float(catalog["dec"].min()), float(catalog["dec"].max()))


def write_cluster_catalogue(results: Sequence[ClusterResult], path: str | Path,
                            decisions: dict[str, tuple[str, str]] | None = None) -> Path:
    """The cluster catalogue product (FITS), written atomically (temporary file, then rename).

    ``decisions``: candidate name -> (verdict 'confirm' | 'reject' | 'unsure', who). Without one a
    detected candidate is ``confirmed = 'pending'`` (a person decides), else 'no'; ``who_confirmed``
    names the person or ``finder``.
    """
    import fitsio

    decisions = decisions or {}
    dtype = [("name", "U32"), ("ra", "f8"), ("dec", "f8"), ("z_phot", "f4"), ("z_err", "f4"),
             ("richness", "f4"), ("significance", "f4"), ("confirmed", "U8"), ("who_confirmed", "U64"),
             ("status", "U16"), ("bcg_ra", "f8"), ("bcg_dec", "f8"), ("unused_colours", "U80")]
    out = np.zeros(len(results), dtype=dtype)
    for k, r in enumerate(results):
        verdict, who = decisions.get(r.name, ("pending" if r.detected else "no", "finder"))
        verdict = {"confirm": "yes", "reject": "no"}.get(verdict, verdict)
        out[k] = (r.name, r.ra, r.dec, r.z_phot, r.z_err, r.richness, r.significance, verdict, who, r.status,
                  r.bcg_ra, r.bcg_dec, "; ".join(r.unused_colours))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fitsio.write(str(tmp), out, extname="CLUSTERS", clobber=True)
    tmp.replace(path)
    return path
