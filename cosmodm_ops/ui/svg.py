"""Server-side SVG for the survey pages: the focal-plane map, the tiling sky map, the lineage graph.

Pure functions: rows in, SVG markup out. Every text and attribute value is escaped here
(the templates insert the result as markup).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["METRICS", "STATUS_COLOURS", "colour_scale", "focal_plane_svg", "lineage_svg", "sky_map_svg"]

#: Focal-plane metrics: key in the CCD metrics -> (label, unit).
METRICS = {
    "fwhm_arcsec": ("FWHM", "arcsec"),
    "zp_offset_mag": ("zeropoint offset", "mag"),
    "astrom_rms_mas": ("astrometric scatter", "mas"),
    "n_objects": ("object count", ""),
}
STATUS_COLOURS = {"none": "#d9d9d9", "partial": "#f6c85f", "done": "#4caf50", "stale": "#8e7cc3",
                  "failed": "#d9534f"}


def colour_scale(value: float | None, lo: float, hi: float) -> str:
    """A blue -> yellow -> red colour for ``value`` in [lo, hi] (grey when missing)."""
    if value is None or not math.isfinite(value):
        return "#bbbbbb"
    t = 0.5 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    stops = ((0.0, (49, 54, 149)), (0.5, (255, 255, 191)), (1.0, (165, 0, 38)))
    for (t0, c0), (t1, c1) in itertools.pairwise(stops):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            rgb = [round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True)]
            return "#" + "".join(f"{v:02x}" for v in rgb)
    return "#a50026"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def focal_plane_svg(ccds: Sequence[Any], ccd_w_mm: float, ccd_h_mm: float, metrics: Mapping[int, Mapping[str, Any]],
                    metric: str, *, width: int = 360) -> str:
    """CCD outlines at their focal-plane positions, filled by ``metric``; failed CCDs crossed out.

    Parameters
    ----------
    ccds : sequence of CcdInfo
        ``ccdnum``, ``name``, ``x_mm``, ``y_mm``, ``rotation_deg`` (focal plane, mm).
    ccd_w_mm, ccd_h_mm : float
        CCD size (mm) along focal-plane x and y.
    metrics : {ccdnum: {metric: value, "failed": bool, "why": [str]}}
    metric : str
        One of :data:`METRICS`.
    """
    if not ccds:
        return "<p>No focal-plane layout.</p>"
    xs = [c.x_mm for c in ccds]
    ys = [c.y_mm for c in ccds]
    x0, x1 = min(xs) - ccd_w_mm, max(xs) + ccd_w_mm
    y0, y1 = min(ys) - ccd_h_mm, max(ys) + ccd_h_mm
    scale = width / (x1 - x0)
    height = int((y1 - y0) * scale) + 1
    vals = [m.get(metric) for m in metrics.values() if m.get(metric) is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    parts = [(f'<svg class="focal-plane" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="focal plane coloured by {escape(metric)}">')]
    for c in ccds:
        m = metrics.get(c.ccdnum, {})
        v = m.get(metric)
        cx, cy = (c.x_mm - x0) * scale, (y1 - c.y_mm) * scale
        w, h = ccd_w_mm * scale, ccd_h_mm * scale
        failed = bool(m.get("failed"))
        title = f"CCD {c.ccdnum} ({c.name}): {METRICS.get(metric, (metric,))[0]} {_fmt(v)}"
        if m.get("why"):
            title += "; failed: " + "; ".join(str(w_) for w_ in m["why"])
        parts.append(f'<g class="ccd{" failed" if failed else ""}" data-ccd="{c.ccdnum}" '
                     f'transform="rotate({-c.rotation_deg:.3f} {cx:.1f} {cy:.1f})">'
                     f'<title>{escape(title)}</title>'
                     f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="{colour_scale(v, lo, hi)}" stroke="#333" stroke-width="0.8"/>')
        if failed:
            parts.append(f'<path d="M{cx - w / 2:.1f},{cy - h / 2:.1f}L{cx + w / 2:.1f},{cy + h / 2:.1f}'
                         f'M{cx + w / 2:.1f},{cy - h / 2:.1f}L{cx - w / 2:.1f},{cy + h / 2:.1f}" '
                         'stroke="#b00" stroke-width="2"/>')
        parts.append(f'<text x="{cx:.1f}" y="{cy + 3:.1f}" font-size="{max(6.0, min(w, h) / 3):.0f}" '
                     f'text-anchor="middle">{c.ccdnum}</text></g>')
    parts.append("</svg>")
    label, unit = METRICS.get(metric, (metric, ""))
    legend = (f'<div class="legend">{escape(label)}: <span style="background:{colour_scale(lo, lo, hi)}">'
              f'{_fmt(lo)}</span> to <span style="background:{colour_scale(hi, lo, hi)}">{_fmt(hi)}</span> '
              f'{escape(unit)}; crossed out: failed CCD</div>')
    return "".join(parts) + legend


def sky_map_svg(tiles: Sequence[Mapping[str, Any]], bands: Sequence[str], *, width: int = 900,
                tile_deg: float | None = None, link_prefix: str = "tile/") -> str:
    """The tiling in RA/Dec, one square per tile, coloured by its status in the first band.

    ``tiles``: rows of :func:`cosmodm_ops.ui.tiles.tiles_status` (``status``: one letter per band
    of ``bands``). The projection is equirectangular about the footprint's centre with RA scaled by
    cos(Dec0) (RA increasing to the left, as on the sky); a footprint that crosses RA 0 is unwrapped.
    Each tile carries its letters in ``data-s`` (the svg lists the bands in ``data-bands``) so the
    page's script can recolour by band, and links to its tile page. The squares' placement depends
    on the tiling only: it is computed once per distinct tiling (the tile rows are the key, so a
    moved or added tile makes a new one) and only the status is written per request.
    """
    geo = _sky_geometry(tuple((t["name"], t["ra"], t["dec"]) for t in tiles), width, tile_deg, link_prefix)
    if geo is None:
        return "<p>No tiles with coordinates.</p>"
    height, cells = geo
    bands_e = [escape(b) for b in bands]
    titles: dict[str, tuple[str, str]] = {}
    parts = [(f'<svg id="skymap" class="sky-map" xmlns="http://www.w3.org/2000/svg" width="{width}" '
              f'height="{height}" viewBox="0 0 {width} {height}" data-bands="{" ".join(bands_e)}" role="img" '
              'aria-label="tiling sky map"><g id="skymap-view">')]
    for k, rect, title in cells:  # one string per tile; the stroke is the stylesheet's (rect.tile)
        code = tiles[k].get("status") or ""
        if code not in titles:  # few distinct status strings
            states = [_CODES.get(c, "none") for c in code]
            fill = STATUS_COLOURS.get(states[0] if states else "none", STATUS_COLOURS["none"])
            titles[code] = (f' data-s="{escape(code)}" fill="{fill}"><title>',
                            ", ".join(f"{b} {st}" for b, st in zip(bands_e, states, strict=False)))
        attrs, text = titles[code]
        parts.append(f"{rect}{attrs}{title}{text}</title></rect></a>")
    parts.append("</g></svg>")
    return "".join(parts)


_CODES = {s[0]: s for s in STATUS_COLOURS}


@functools.lru_cache(maxsize=8)
def _sky_geometry(tiles: tuple[tuple[str, float | None, float | None], ...], width: int, tile_deg: float | None,
                  link_prefix: str) -> tuple[int, list[tuple[int, str, str]]] | None:
    """The svg's height and, per placed tile, (row index, ``<a><rect ...`` up to its status, title prefix)."""
    placed = [(k, name, ra, dec) for k, (name, ra, dec) in enumerate(tiles) if ra is not None and dec is not None]
    if not placed:
        return None
    pts = [(ra, dec) for _, _, ra, dec in placed]
    ras = [a for a, _ in pts]
    if max(ras) - min(ras) > 180:
        ras = [a - 360 if a > 180 else a for a in ras]
    ra0 = (max(ras) + min(ras)) / 2
    decs = [d for _, d in pts]
    dec0 = (max(decs) + min(decs)) / 2
    cosd = max(math.cos(math.radians(dec0)), 0.05)
    if tile_deg is None:
        tile_deg = _spacing(pts) or 1.0
    xs = [-(a - ra0) * cosd for a in ras]
    x0, x1 = min(xs) - tile_deg, max(xs) + tile_deg
    y0, y1 = min(decs) - tile_deg, max(decs) + tile_deg
    scale = width / max(x1 - x0, 1e-6)
    height = max(120, int((y1 - y0) * scale))
    s = tile_deg * scale * 0.96
    prefix = escape(link_prefix)
    cells = []
    for (k, name, ra, dec), x in zip(placed, xs, strict=True):
        n = escape(name)
        rect = (f'<a href="{prefix}{n}" class="tile-link"><rect class="tile" data-name="{n}" '
                f'x="{(x - x0) * scale - s / 2:.1f}" y="{(y1 - dec) * scale - s / 2:.1f}" width="{s:.1f}" '
                f'height="{s:.1f}"')
        cells.append((k, rect, f"{n} (RA {ra:.3f}, Dec {dec:.3f}): "))
    return height, cells


def _spacing(pts: Sequence[tuple[float, float]]) -> float | None:
    """Median nearest-neighbour distance of tile centres (deg, on the tangent plane; 100 sampled)."""
    import numpy as np

    if len(pts) < 2:
        return None
    xy = np.array(pts, dtype=float)
    xy[:, 0] *= np.cos(np.radians(xy[:, 1]))
    sample = xy[:: max(1, len(xy) // 100)]
    d = np.hypot(sample[:, None, 0] - xy[None, :, 0], sample[:, None, 1] - xy[None, :, 1])
    d[d == 0] = np.inf
    best = d.min(axis=1)
    best = best[np.isfinite(best)]
    return float(np.median(best)) if best.size else None


def lineage_svg(centre: Mapping[str, Any], up: Mapping[str, Any], down: Mapping[str, Any], *,
                max_per_column: int = 30, link_prefix: str = "product/") -> str:
    """The lineage around a product: inputs to the left (by depth), what was made from it to the right.

    ``up`` and ``down`` are :meth:`cosmodm_ops.archive.Archive.lineage` results. Each node links to its
    product page (``data-product`` holds its id); columns longer than ``max_per_column`` say how many
    were left out.
    """
    cols: dict[int, list[dict[str, Any]]] = {0: [dict(centre)]}
    seen = {centre["id"]}
    edges: list[tuple[Any, Any]] = []
    for sign, graph, near, far in ((-1, up, "product_id", "input_id"), (1, down, "input_id", "product_id")):
        for edge in graph.get("edges", []):
            a, b = edge[near], edge[far]
            key = b if b is not None else f"ext:{edge['input_sha256'][:12]}"
            if key not in seen:
                seen.add(key)
                row = graph["products"].get(b) if b is not None else None
                node = dict(row) if row else {"id": key, "kind": edge["role"], "path": edge.get("input_path") or "",
                                              "external": True}
                cols.setdefault(sign * int(edge["depth"]), []).append(node)
            edges.append((a, key))
    col_w, row_h, box_w, box_h = 270, 34, 240, 26
    lo, hi = min(cols), max(cols)
    shown: dict[Any, tuple[float, float]] = {}
    n_rows = max(min(len(v), max_per_column + 1) for v in cols.values())
    width, height = (hi - lo + 1) * col_w + 20, n_rows * row_h + 30
    parts = [(f'<svg id="lineage" class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="lineage graph">')]
    boxes = []
    for c in range(lo, hi + 1):
        nodes = cols.get(c, [])
        for i, node in enumerate(nodes[:max_per_column]):
            x, y = 10 + (c - lo) * col_w, 20 + i * row_h
            shown[node["id"]] = (x, y)
            label = f"{node.get('kind', '')} {_short(node)}"
            cls = "node centre" if c == 0 else "node external" if node.get("external") else "node"
            inner = (f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4"/>'
                     f'<text x="{x + 6}" y="{y + 17}">{escape(label[:36])}</text>'
                     f'<title>{escape(str(node.get("path", "")))}</title>')
            if node.get("external"):
                boxes.append(f'<g class="{cls}">{inner}</g>')
            else:
                boxes.append(f'<a href="{escape(link_prefix)}{int(node["id"])}" class="node-link" '
                             f'data-product="{int(node["id"])}"><g class="{cls}">{inner}</g></a>')
        if len(nodes) > max_per_column:
            y = 20 + max_per_column * row_h
            boxes.append(f'<text x="{10 + (c - lo) * col_w}" y="{y + 17}">+{len(nodes) - max_per_column} '
                         'more</text>')
    for a, b in edges:
        if a in shown and b in shown:
            (xa, ya), (xb, yb) = shown[a], shown[b]
            left, right = ((xb, yb), (xa, ya)) if xb < xa else ((xa, ya), (xb, yb))
            parts.append(f'<line x1="{left[0] + box_w:.0f}" y1="{left[1] + box_h / 2:.0f}" x2="{right[0]:.0f}" '
                         f'y2="{right[1] + box_h / 2:.0f}" class="edge"/>')
    parts += boxes
    parts.append("</svg>")
    return "".join(parts)


def _short(node: Mapping[str, Any]) -> str:
    bits = []
    if node.get("expnum") is not None:
        bits.append(str(node["expnum"]))
    if node.get("ccd") is not None:
        bits.append(f"c{node['ccd']}")
    if node.get("tile"):
        bits.append(str(node["tile"]))
    if node.get("band"):
        bits.append(str(node["band"]))
    if not bits and node.get("path"):
        bits.append(str(node["path"]).rsplit("/", 1)[-1])
    return " ".join(bits) + (f" #{node['id']}" if isinstance(node.get("id"), int) else "")
