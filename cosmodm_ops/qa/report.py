"""The night's QA report: plots (PNG) and one self-contained HTML page.

Pure presentation: it takes per-exposure QA records (what the single-epoch jobs wrote in
``qa.json`` plus the gate's verdict) and, optionally, catalogs for SPREAD_MODEL against
magnitude; it writes ``<out>/index.html``, self-contained (plots embedded), and the PNG files beside it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.common.htmlreport import figures_html, html_page

__all__ = ["ExposureQA", "write_night_report"]

#: Exposure-level quantities plotted when present (qa.json "exposure" summary keys, first match wins).
_SERIES = {
    "seeing (arcsec)": ("fwhm_arcsec", "seeing_arcsec", "seeing_fwhm_arcsec", "fwhm"),
    "sky (e-/pixel)": ("sky_level", "sky", "sky_e"),
    "zeropoint (mag)": ("zeropoint", "zeropoint_mag", "zp"),
}


@dataclass
class ExposureQA:
    """QA of one exposure as the report needs it."""

    expnum: int
    band: str
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    ccds: list[dict[str, Any]] = field(default_factory=list)
    catalogs: list[str] = field(default_factory=list)


def _first(summary: dict[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = summary.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def _ccd_value(ccd: dict[str, Any], needle: str) -> float | None:
    for key, value in ccd.items():
        if needle in key and isinstance(value, (int, float)):
            return float(value)
    for check in ccd.get("checks", []):
        if needle in str(check.get("name", "")) and isinstance(check.get("value"), (int, float)):
            return float(check["value"])
    return None


def _plot_exposures(exps: list[ExposureQA], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(label, keys) for label, keys in _SERIES.items()
               if any(_first(e.summary, keys) is not None for e in exps)]
    if not present:
        return False
    fig, axes = plt.subplots(len(present), 1, figsize=(8, 2.4 * len(present)), sharex=True, squeeze=False)
    x = np.arange(len(exps))
    for ax, (label, keys) in zip(axes[:, 0], present):
        for accepted, marker, colour in ((True, "o", "tab:blue"), (False, "x", "tab:red")):
            sel = [i for i, e in enumerate(exps) if e.accepted is accepted and _first(e.summary, keys) is not None]
            ax.plot(x[sel], [_first(exps[i].summary, keys) for i in sel], marker, color=colour,
                    label="accepted" if accepted else "quarantined")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xticks(x, [f"{e.expnum}\n{e.band}" for e in exps], fontsize=7)
    axes[-1, 0].set_xlabel("exposure")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_astrometry(exps: list[ExposureQA], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(e.expnum, c.get("ccd"), _ccd_value(c, "astrom")) for e in exps for c in e.ccds]
    points = [p for p in points if p[2] is not None and p[1] is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(8, 3))
    expnums = sorted({p[0] for p in points})
    for k, expnum in enumerate(expnums):
        sel = [p for p in points if p[0] == expnum]
        ax.plot([p[1] for p in sel], [p[2] for p in sel], "o", ms=4, label=str(expnum), color=f"C{k % 10}")
    ax.set_xlabel("CCD")
    ax.set_ylabel("astrometric RMS (mas)")
    ax.legend(fontsize=7, ncol=4)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_spread_model(exps: list[ExposureQA], path: Path, max_rows: int = 20000) -> bool:
    import fitsio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mags, spread = [], []
    for e in exps:
        if not e.accepted:
            continue
        for cat in e.catalogs:
            try:
                with fitsio.FITS(cat) as f:
                    ext = "LDAC_OBJECTS" if "LDAC_OBJECTS" in f else 1
                    cols = f[ext].get_colnames()
                    mcol = "MAG_AUTO" if "MAG_AUTO" in cols else None
                    if mcol is None or "SPREAD_MODEL" not in cols:
                        continue
                    data = f[ext].read(columns=[mcol, "SPREAD_MODEL"])
            except OSError:
                continue
            good = data[mcol] < 90
            mags.append(data[mcol][good])
            spread.append(data["SPREAD_MODEL"][good])
    if not mags:
        return False
    m, s = np.concatenate(mags)[:max_rows], np.concatenate(spread)[:max_rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(m, s, ",", alpha=0.5)
    ax.axhline(0.003, color="tab:red", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 0.05)
    ax.set_xlabel("MAG_AUTO (instrumental)")
    ax.set_ylabel("SPREAD_MODEL")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_night_report(night: str, exposures: list[ExposureQA], out: str | Path,
                       extra: dict[str, Any] | None = None) -> Path:
    """Write ``<out>/index.html`` and its PNG plots; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exps = sorted(exposures, key=lambda e: e.expnum)
    plots = []
    for name, title, fn in (("exposures.png", "Seeing, sky and zeropoint per exposure", _plot_exposures),
                            ("astrometry.png", "Astrometric RMS per CCD", _plot_astrometry),
                            ("spread_model.png", "SPREAD_MODEL against magnitude (accepted exposures)",
                             _plot_spread_model)):
        if fn(exps, out / name):
            plots.append((name, title))
    accepted = sum(e.accepted for e in exps)
    rows = []
    for e in exps:
        verdict = "accepted" if e.accepted else "quarantined"
        summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in e.summary.items() if isinstance(v, (int, float, str)))
        rows.append(
            f"<tr class='{verdict}'><td>{e.expnum}</td><td>{html.escape(e.band)}</td><td>{verdict}</td>"
            f"<td>{html.escape('; '.join(e.reasons))}</td><td>{html.escape(summary)}</td></tr>"
        )
    figures = figures_html([(t, out / n) for n, t in plots])
    extra_html = f"<pre>{html.escape(json.dumps(extra, indent=2, default=str))}</pre>" if extra else ""
    body = (f"<p>{len(exps)} exposure(s): <b>{accepted}</b> accepted, <b>{len(exps) - accepted}</b> quarantined.</p>\n"
            "<table><tr><th>exposure</th><th>band</th><th>verdict</th><th>reasons</th><th>summary</th></tr>\n"
            f"{''.join(rows)}</table>\n{figures}\n{extra_html}\n")
    page = html_page(f"Night {night}", body)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
