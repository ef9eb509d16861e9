"""Re-measure the catalogue level's SPREAD_MODEL table on the saved catalogues of an image-level cluster run.

:data:`cosmodm_ops.sim.catalog_obs.SPREAD_TABLE` says what SPREAD_MODEL and SPREADERR_MODEL the image
chain measures for an object of given size and i magnitude. When the chain changes (pixels, PSFEx,
SExtractor settings), measure it again: :func:`match_run` regenerates the truth of every finished
candidate under a run folder (the warps are seeded: ``make_field`` on ``patch_box`` with
``default_rng([seed, 1000 + index])``, as :func:`cosmodm_ops.clusters.benchreport.simulate_warps`), matches
the saved dual-image catalogues to it (nearest object within ``radius_arcsec``), and :func:`spread_table`
fits the table's rows: per true-i node, a straight line (weighted by counts) through the medians of
SPREAD_MODEL in bins of the size term ``f`` (stars: f = 0), the same for the NMAD (its intercept floored
at the stars' own NMAD), and the median SPREADERR_MODEL of stars and of galaxies with the NMAD of its log.
It only reads the run folder.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["NODES", "match_run", "spread_table"]

#: True-i nodes of the table (bins halfway between them).
NODES = (17.0, 18.25, 19.0, 19.75, 20.25, 20.75, 21.25, 21.75, 22.25)
_F_BINS = (1e-9, 0.004, 0.008, 0.014, 0.02, 0.026, 0.031, 0.05)


def match_run(run: str | Path, n_clusters: int = 48, n_null: int = 16, seed: int = 1, fwhm_arcsec: float = 1.1,
              radius_arcsec: float = 0.6) -> np.ndarray:
    """Detected objects of every finished candidate under ``run`` with their truth: columns ``cand``, ``is_star``,
    ``x`` (r_half / FWHM), ``mag_i`` (true), ``spread_model``, ``spreaderr_model``."""
    from scipy.spatial import cKDTree

    from cosmodm_ops.clusters.bench import simulate_candidates
    from cosmodm_ops.clusters.chain import join_catalogues
    from cosmodm_ops.clusters.rescore import read_target_tables
    from cosmodm_ops.sim.clusters import ClusterSpec, make_field
    from cosmodm_ops.sim.clusterwarps import WarpField, patch_box

    dtype = [("cand", "i4"), ("is_star", "?"), ("x", "f4"), ("mag_i", "f4"), ("spread_model", "f4"),
             ("spreaderr_model", "f4")]
    parts = [np.zeros(0, dtype)]
    for k, c in enumerate(simulate_candidates(n_clusters, n_null, seed)):
        target = Path(run) / "targets" / c["name"]
        if not (target / "result.json").is_file():
            continue
        tables = read_target_tables(target, json.loads((target / "result.json").read_text()))
        if "i" not in tables:
            continue
        cat = join_catalogues(tables)
        specs = [ClusterSpec(c["name"], c["ra"], c["dec"], c["z"], c["richness"])] if c["richness"] else []
        obj = make_field(*patch_box(c["ra"], c["dec"], WarpField()), specs, np.random.default_rng([seed, 1000 + k]))
        cd = math.cos(math.radians(c["dec"]))
        dist, j = cKDTree(np.column_stack([obj.ra * cd, obj.dec])).query(np.column_stack([cat["ra"] * cd, cat["dec"]]))
        ok = dist * 3600.0 < radius_arcsec
        j = j[ok]
        out = np.zeros(int(ok.sum()), dtype)
        out["cand"], out["is_star"] = k, obj.is_star[j]
        out["x"] = np.where(obj.is_star[j], 0.0, obj.r_half[j] / fwhm_arcsec)
        out["mag_i"] = obj.mags["i"][j]
        out["spread_model"], out["spreaderr_model"] = cat["spread_model"][ok], cat["spreaderr_model"][ok]
        parts.append(out)
    return np.concatenate(parts)


def _nmad(v: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def spread_table(rows: np.ndarray, nodes: tuple[float, ...] = NODES, min_count: int = 5) -> np.ndarray:
    """Rows of :data:`~cosmodm_ops.sim.catalog_obs.SPREAD_TABLE` (mag_i, a, c, s0, s1, err_star, err_galaxy,
    log_err_sigma) fitted to ``rows`` of :func:`match_run`; a node without stars and galaxies enough is left out."""
    from cosmodm_ops.sim.catalog_obs import spread_size_term

    f = spread_size_term(rows["x"])
    edges = np.concatenate([[-np.inf], 0.5 * (np.array(nodes[:-1]) + np.array(nodes[1:])), [np.inf]])
    out = []
    for k, node in enumerate(nodes):
        m = (rows["mag_i"] >= edges[k]) & (rows["mag_i"] < edges[k + 1])
        star, gal = m & rows["is_star"], m & ~rows["is_star"]
        pts = [(0.0, float(np.median(rows["spread_model"][star])), _nmad(rows["spread_model"][star]),
                math.sqrt(star.sum()))] if star.sum() >= min_count else []
        for lo, hi in itertools.pairwise(_F_BINS):
            b = gal & (f >= lo) & (f < hi)
            if b.sum() >= min_count:
                pts.append((float(np.median(f[b])), float(np.median(rows["spread_model"][b])),
                            _nmad(rows["spread_model"][b]), math.sqrt(b.sum())))
        if len(pts) < 2 or star.sum() < min_count or gal.sum() < min_count:
            continue
        x, y, s, w = (np.array(v) for v in zip(*pts, strict=True))
        a, c = np.polyfit(x, y, 1, w=w)
        s1, s0 = np.polyfit(x, s, 1, w=w)
        s0 = max(s0, _nmad(rows["spread_model"][star]))
        lerr = np.log(rows["spreaderr_model"][gal])
        out.append((node, a, c, s0, max(s1, 0.0), float(np.median(rows["spreaderr_model"][star])),
                    float(np.exp(np.median(lerr))), _nmad(lerr)))
    return np.array(out)
