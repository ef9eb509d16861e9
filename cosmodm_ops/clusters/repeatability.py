"""The seed's repeatability QA: the same stars measured on two single warps of a band, against their errors.

For each skycell with two warps of the band (:func:`warp_pairs`), SExtractor runs on each decoded
warp alone (:func:`warp_catalogue`: no PSF, no model fitting, the short ``cluster_repeat.param`` list:
windowed position, MAG_AUTO and its error, FLUX_RADIUS, CLASS_STAR, FLAGS; each warp on its own
zeropoint), point sources (``CLASS_STAR >= star_min``, FLAGS 0 in both) are matched between the two
within ``match_arcsec``, and :func:`repeatability_stats` (pure) bins ``dm = m1 - m2`` by magnitude:
per bin the number of pairs, the median and the rms of dm (plain and NMAD) and the rms expected from
the catalogues' errors, the median of ``sqrt(err1**2 + err2**2)``. A ratio near 1 says the errors
are honest; above 1 at the bright end, an error floor (flat-field, PSF, zeropoint) the errors miss.
:func:`plot_repeatability` draws it for report.html.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["band_repeatability", "plot_repeatability", "qa_repeatability", "repeatability_stats", "warp_catalogue", "warp_pairs"]

#: SExtractor parameters of the single-warp catalogues (no model fitting: cheap).
REPEAT_PARAMS = "cluster_repeat.param"


def repeatability_stats(m1: np.ndarray, e1: np.ndarray, m2: np.ndarray, e2: np.ndarray,
                        edges: Sequence[float]) -> list[dict[str, float]]:
    """Per magnitude bin (edges on the mean magnitude of a pair): n, mag, median_dm, rms_dm, nmad_dm, rms_expected.

    All arrays have the shape (n_pairs,); magnitudes in mag. Bins with fewer than 3 pairs are left out.
    """
    m1, e1, m2, e2 = (np.asarray(a, float) for a in (m1, e1, m2, e2))
    dm, mag, expected = m1 - m2, 0.5 * (m1 + m2), np.hypot(e1, e2)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (mag >= lo) & (mag < hi)
        if sel.sum() < 3:
            continue
        d = dm[sel]
        med = float(np.median(d))
        rows.append({"mag_lo": float(lo), "mag_hi": float(hi), "n": int(sel.sum()), "mag": float(np.median(mag[sel])),
                     "median_dm": med, "rms_dm": float(np.sqrt(np.mean((d - med) ** 2))),
                     "nmad_dm": float(1.4826 * np.median(np.abs(d - med))),
                     "rms_expected": float(np.median(expected[sel]))})
    return rows


def warp_pairs(warps: Sequence[Any], band: str) -> list[tuple[Any, Any]]:
    """Pairs of warps (``WarpFile``) of ``band`` on the same skycell: the first two exposures of each."""
    by_cell: dict[str, list[Any]] = defaultdict(list)
    for w in warps:
        if w.band == band:
            by_cell[w.path.name.split(".wrp.")[0]].append(w)
    return [(ws[0], ws[1]) for _, ws in sorted(by_cell.items()) if len(ws) >= 2]


def warp_catalogue(path: Path, work: Path, seeing_arcsec: float = 1.2, detect_thresh: float = 5.0) -> np.ndarray:
    """SExtractor on one decoded warp (its weight map, its own zeropoint); the LDAC_OBJECTS table."""
    from cosmodm_ops.astromatic import read_ldac, run_tool, sextractor_args
    from cosmodm_ops.clusters.chain import decode_warp
    from cosmodm_ops.coadd.imageio import pixel_scale, read_image, wcs_of

    work.mkdir(parents=True, exist_ok=True)
    img, wt, magzero = decode_warp(path, work)
    _, hdr = read_image(img)
    cat = work / (path.name[: -len(".fits")] + ".ldac")
    args = sextractor_args(img, cat, weight=wt, params=REPEAT_PARAMS, pixel_scale=pixel_scale(wcs_of(hdr)),
                           seeing_arcsec=seeing_arcsec, detect_thresh=detect_thresh, mag_zeropoint=magzero,
                           saturate=1e9)  # the simulator does not saturate; SExtractor refuses 1e30
    run_tool("sextractor", args, cwd=work)
    for p in (img, wt):
        p.unlink()
    return read_ldac(cat)


def _match(a: np.ndarray, b: np.ndarray, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbours of a's rows in b within the radius (on the sphere, as every match of the project)."""
    from scipy.spatial import cKDTree

    from cosmodm_ops.sky import chord, unit_vectors

    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d, j = cKDTree(unit_vectors(b["ALPHAWIN_J2000"], b["DELTAWIN_J2000"])).query(
        unit_vectors(a["ALPHAWIN_J2000"], a["DELTAWIN_J2000"]), distance_upper_bound=chord(radius_arcsec))
    ok = np.isfinite(d)
    return np.flatnonzero(ok), j[ok]


def band_repeatability(warps_dir: Path, band: str, work: Path, star_min: float = 0.8, match_arcsec: float = 0.5,
                       edges: Sequence[float] = tuple(np.arange(15.0, 23.51, 0.5))) -> dict[str, Any]:
    """The repeatability of ``band`` over every skycell pair under ``warps_dir``: pairs and binned stats."""
    from cosmodm_ops.clusters.chain import find_warps

    m1, e1, m2, e2 = [], [], [], []
    pairs = warp_pairs(find_warps(warps_dir), band)
    for wa, wb in pairs:
        ca, cb = warp_catalogue(wa.path, work), warp_catalogue(wb.path, work)
        ia, ib = _match(ca, cb, match_arcsec)
        a, b = ca[ia], cb[ib]
        good = ((a["CLASS_STAR"] >= star_min) & (b["CLASS_STAR"] >= star_min) & (a["FLAGS"] == 0) & (b["FLAGS"] == 0)
                & (a["MAG_AUTO"] < 90) & (b["MAG_AUTO"] < 90))
        m1.append(a["MAG_AUTO"][good])
        e1.append(a["MAGERR_AUTO"][good])
        m2.append(b["MAG_AUTO"][good])
        e2.append(b["MAGERR_AUTO"][good])
    cols = [np.concatenate(x) if x else np.zeros(0) for x in (m1, e1, m2, e2)]
    return {"band": band, "warp_pairs": len(pairs), "n_stars": len(cols[0]), "m1": cols[0], "e1": cols[1],
            "m2": cols[2], "e2": cols[3], "bins": repeatability_stats(*cols, edges)}


def plot_repeatability(rep: dict[str, Any], path: Path, title: str = "") -> Path:
    """dm against magnitude for the matched stars, with the binned rms and the rms the errors expect."""
    from cosmodm_ops.clusters.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    mag, dm = 0.5 * (rep["m1"] + rep["m2"]), rep["m1"] - rep["m2"]
    ax.scatter(mag, dm, s=2, color="0.6", label=f"{rep['n_stars']} stars, {rep['warp_pairs']} warp pairs")
    b = rep["bins"]
    if b:
        x = [r["mag"] for r in b]
        ax.plot(x, [r["rms_dm"] for r in b], "o-", color="C3", label="rms of dm per bin")
        ax.plot(x, [-r["rms_dm"] for r in b], "o-", color="C3")
        ax.plot(x, [r["rms_expected"] for r in b], "--", color="k", label="expected sqrt(err1^2 + err2^2)")
        ax.plot(x, [-r["rms_expected"] for r in b], "--", color="k")
    top = max([0.05] + [3.0 * r["rms_expected"] for r in b])
    ax.set_ylim(-top, top)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(f"MAG_AUTO {rep['band']} (mean of the two warps)")
    ax.set_ylabel("m1 - m2 (mag)")
    ax.set_title(title or f"repeatability, band {rep['band']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def qa_repeatability(warps_dir: Path, band: str, png: Path, title: str = "") -> dict[str, Any]:
    """:func:`band_repeatability` in a scratch folder under ``warps_dir``, its plot to ``png``; the summary
    (band, warp pairs, stars, bins) for result.json or the report."""
    import shutil

    work = warps_dir / "_repeatability"
    try:
        rep = band_repeatability(warps_dir, band, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plot_repeatability(rep, png, title)
    ratio = [r["rms_dm"] / r["rms_expected"] for r in rep["bins"] if r["rms_expected"] > 0]
    return {k: rep[k] for k in ("band", "warp_pairs", "n_stars", "bins")} | {
        "rms_over_expected": float(np.median(ratio)) if ratio else float("nan"), "plot": str(png)}
