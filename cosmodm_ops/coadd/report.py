"""The coadd's HTML QA reports (through :func:`cosmodm_ops.common.write_html_report`) and their tables.

:func:`write_band_report` writes ``<tile>_<band>_report.html`` (input images, images left out);
:func:`write_tile_report` writes ``<tile>_report.html`` (zeropoints, completeness by magnitude).
The table builders are pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosmodm_ops.common import write_html_report

__all__ = ["Table", "band_tables", "completeness_tables", "write_band_report", "write_tile_report"]

#: A report table: (title, column heads, rows).
Table = tuple[str, list[str], list[list[Any]]]


def band_tables(images: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, Any]],
                not_homogenized: Sequence[Mapping[str, Any]]) -> list[Table]:
    """The band report's tables: input images, images left out before the calibration, plain-coadd-only images."""
    return [
        ("Input images", ["image", "zeropoint", "error", "flxscale", "FWHM (arcsec)", "sky", "used", "removed"],
         [[im["name"], im["zeropoint"], im["zeropoint_err"], im["flxscale"], im["fwhm_arcsec"], im["sky"],
           im["used"], im["removed"] or ""] for im in images]),
        ("Left out before the calibration", ["image", "reason"],
         [[s.get("name"), s.get("reason")] for s in skipped]),
        ("In the plain coadd only (PSF broader than the target)", ["image", "reason"],
         [[s["name"], s["reason"]] for s in not_homogenized]),
    ]


def write_band_report(path: Path, tile: str, band: str, summary: Mapping[str, Any],
                      checks: Sequence[Mapping[str, Any]], plots: Sequence[tuple[str, Path]],
                      tables: Sequence[Table]) -> Path:
    """``Coadd <tile> band <band>``: summary, checks, plots and the band's tables."""
    return write_html_report(path, f"Coadd {tile} band {band}", summary, checks, plots, tables)


def completeness_tables(comp: Mapping[str, Any]) -> list[Table]:
    """Report tables: one summary row per band, then each band's bins.

    ``comp`` maps band -> :class:`cosmodm_ops.qa.completeness.CompletenessResult`.
    """
    if not comp:
        return []
    head = ["band", "90% complete (mag)", "50% complete (mag)", "truth objects", "matched", "detections",
            "purity", "mag offset applied"]
    rows = [[b, r.mag90, r.mag50, int(r.n_true.sum()), r.n_matched, int(r.n_detected.sum()),
             float(r.n_detected_matched.sum() / max(1, r.n_detected.sum())), r.mag_offset] for b, r in comp.items()]
    tables: list[Table] = [("Completeness and purity against truth", head, rows)]
    for b, r in comp.items():
        cls = r.classification or {}
        body = [[f"{lo:.2f}-{hi:.2f}", int(nt), float(c), int(nd), float(p),
                 *(float(cls[k][i]) if k in cls else None for k in ("star_completeness", "star_purity"))]
                for i, (lo, hi, nt, c, nd, p) in enumerate(zip(r.edges[:-1], r.edges[1:], r.n_true, r.completeness,
                                                               r.n_detected, r.purity, strict=True))
                if nt or nd]
        tables.append((f"Band {b} by magnitude", ["mag", "truth", "completeness", "detections", "purity",
                                                  "star completeness", "star purity"], body))
    return tables


def write_tile_report(path: Path, tile: str, summary: Mapping[str, Any], checks: Sequence[Mapping[str, Any]],
                      plots: Sequence[tuple[str, Path]], zeropoint_rows: list[list[Any]],
                      comp: Mapping[str, Any]) -> Path:
    """``Tile <tile>: catalogs and calibration``: summary, checks, plots, zeropoints and completeness tables."""
    return write_html_report(path, f"Tile {tile}: catalogs and calibration", summary, checks, plots,
                             [("Zeropoints", ["band", "zeropoint", "dzp", "aperture correction", "objects"],
                               zeropoint_rows), *completeness_tables(comp)])
