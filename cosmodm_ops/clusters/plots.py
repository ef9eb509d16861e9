"""Plots and the HTML summary of cluster finding: richness-vs-z curves, photo-z vs truth, spread_model vs magnitude."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

__all__ = ["plot_curve", "plot_photoz", "plot_spread_model", "write_bench_report"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(result, path: str | Path, z_true: float | None = None) -> Path:
    """Richness (and significance) against the grid's redshifts for one candidate, as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(result.z_grid, result.richness_curve, color="C3", label="richness")
    ax.set_xlabel("z")
    ax.set_ylabel("richness")
    ax2 = ax.twinx()
    ax2.plot(result.z_grid, result.significance_curve, color="C0", lw=0.8, alpha=0.6)
    ax2.set_ylabel("significance", color="C0")
    if math.isfinite(result.z_phot):
        ax.axvline(result.z_phot, color="C3", ls="--", lw=0.8)
    if z_true is not None and math.isfinite(z_true):
        ax.axvline(z_true, color="k", ls=":", lw=0.8, label="truth")
    ax.set_title(f"{result.name}: z={result.z_phot:.3f}+-{result.z_err:.3f} lambda={result.richness:.0f} "
                 f"S/N={result.significance:.1f}", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def plot_photoz(z_true: np.ndarray, z_phot: np.ndarray, detected: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 0.8], [0, 0.8], "k-", lw=0.6)
    for s in (-0.1, 0.1):
        ax.plot([0, 0.8], [s, 0.8 + s * 1.8], "k:", lw=0.5)
    ax.scatter(z_true[detected], z_phot[detected], s=10, label="detected")
    ax.scatter(z_true[~detected], z_phot[~detected], s=10, marker="x", color="0.6", label="below threshold")
    ax.set_xlabel("z (truth)")
    ax.set_ylabel("z_phot")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_spread_model(cat: np.ndarray, is_star: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    m = cat["mag_auto_i"]
    ax.scatter(m[~is_star], cat["spread_model"][~is_star], s=1, alpha=0.3, label="galaxies (truth)")
    ax.scatter(m[is_star], cat["spread_model"][is_star], s=1, alpha=0.5, color="C3", label="stars (truth)")
    ax.set_xlim(15, 24)
    ax.set_ylim(-0.02, 0.06)
    ax.set_xlabel("MAG_AUTO i")
    ax.set_ylabel("SPREAD_MODEL")
    ax.legend(fontsize=7, markerscale=5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def write_bench_report(folder: Path, truth: list[dict], results: list, figures: dict, example) -> Path:
    """Curves per candidate (``curves/NAME.png``), the summary plots and ``report.html`` in ``folder``."""
    curves = folder / "curves"
    curves.mkdir(exist_ok=True)
    rows = []
    for t, r in zip(truth, results, strict=True):
        plot_curve(r, curves / f"{r.name}.png", t["z"])
        rows.append(f"<tr><td><a href='curves/{html.escape(r.name)}.png'>{html.escape(r.name)}</a></td>"
                    f"<td>{t['z']:.3f}</td><td>{t['richness']}</td><td>{r.z_phot:.3f}</td><td>{r.z_err:.3f}</td>"
                    f"<td>{r.richness:.1f}</td><td>{r.significance:.1f}</td><td>{'yes' if r.detected else 'no'}</td></tr>")
    zt = np.array([t["z"] for t in truth])
    cl = np.array([t["richness"] > 0 for t in truth])
    zp = np.array([r.z_phot for r in results])
    det = np.array([r.detected for r in results])
    pz = plot_photoz(zt[cl], zp[cl], det[cl], folder / "photoz_vs_truth.png")
    parts = [_img(pz)]
    if example is not None:
        objects, cat = example
        parts.append(_img(plot_spread_model(cat, objects.is_star[cat["truth_index"]], folder / "spread_model.png")))
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in figures.items()
                      if k != "report")
    page = ("<html><head><meta charset='utf-8'><title>cosmodm bench clusters</title></head><body>"
            "<h1>Cluster finder against truth</h1><p>Catalogue-level simulation: truth magnitudes plus PS1 3pi "
            "noise; no pixels.</p>"
            f"<table border=1>{summary}</table>{''.join(parts)}<h2>Candidates</h2><table border=1>"
            "<tr><th>name</th><th>z true</th><th>richness true</th><th>z_phot</th><th>z_err</th><th>richness</th>"
            f"<th>significance</th><th>detected</th></tr>{''.join(rows)}</table></body></html>")
    path = folder / "report.html"
    path.write_text(page)
    return path
