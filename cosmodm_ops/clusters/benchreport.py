"""The image-level cluster benchmark's figures and report, shared by the run and by ``--rescore``.

:func:`as_result` reads a candidate's ``result.json`` dict as the finder's result for
:func:`cosmodm_ops.clusters.bench.metrics`; :func:`write_report` writes ``report.html`` (figures,
photo-z against truth, the QA plots of one candidate, the candidates' table); :func:`target_product`
finds a saved product in the candidate's own folder (a run folder may have been copied);
:func:`simulate_warps` writes a candidate's patch of warps (the run's, and the QA's again).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["QA_BAND", "as_result", "mean", "qa_candidate", "simulate_warps", "target_product", "write_report"]

#: Band of the repeatability QA (the finder's magnitude band).
QA_BAND = "i"


def simulate_warps(c: dict, index: int, seed: int, warps: Path, bands: list[str] | None = None) -> None:
    """Write candidate ``c``'s patch of warps (index ``index`` of the list): seeded, so a second call writes
    the same pixels (``bands``: only these)."""
    from cosmodm_ops.sim.clusters import ClusterSpec
    from cosmodm_ops.sim.clusterwarps import write_patch

    specs = [ClusterSpec(c["name"], c["ra"], c["dec"], c["z"], c["richness"])] if c["richness"] else []
    write_patch(warps, c["name"], c["ra"], c["dec"], specs, seed=seed, projection_cell=1000 + index, bands=bands)


def target_product(target: Path, result: dict[str, Any], key: str) -> Path | None:
    """A saved product of a candidate, looked up in its own folder (the run folder may have been copied)."""
    p = result.get("products", {}).get(key)
    if not p:
        return None
    local = target / Path(p).name
    return local if local.is_file() else None


def as_result(r: dict) -> SimpleNamespace:
    """A result.json dict as the finder result :func:`~cosmodm_ops.clusters.bench.metrics` takes."""
    def num(k: str) -> float:
        v = r.get(k)
        return float("nan") if v is None else float(v)

    return SimpleNamespace(name=r["name"], detected=bool(r.get("detected")) and r.get("status") == "ok",
                           z_phot=num("z_phot"), z_err=num("z_err"), richness=num("richness"),
                           significance=num("significance"), status=r.get("status"))


def mean(values: list) -> float:
    """Mean of the values that are there (NaN for none)."""
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def qa_candidate(truth: list[dict], order: list[int] | np.ndarray) -> int | None:
    """Index of the QA candidate: the first cluster of richness >= 20 in the run order."""
    return next((int(k) for k in order if truth[k]["richness"] >= 20), None)


def write_report(report: Path, targets: Path, truth: list[dict], results: list[dict], figures: dict,
                 qa_name: str | None) -> Path:
    """report.html in ``report``: figures, photo-z against truth, the QA plots of the candidate ``qa_name``
    (found under ``targets``, or in ``report`` for plots made afterwards), the candidates' table."""
    from cosmodm_ops.clusters.plots import _img, plot_photoz

    zt = np.array([t["z"] for t in truth])
    cl = np.array([t["richness"] > 0 for t in truth])
    res = [as_result(r) for r in results]
    zp = np.array([r.z_phot for r in res])
    det = np.array([r.detected for r in res])
    parts = [_img(plot_photoz(zt[cl], zp[cl], det[cl], report / "photoz_vs_truth.png"))] if cl.any() else []
    qa_res = next((r for r in results if r["name"] == qa_name), None)
    for key in ("qa_locus", "qa_spread_model", "qa_repeatability", "inspection"):
        p = target_product(targets / str(qa_name), qa_res, key) if qa_res else None
        p = p or (report / f"{qa_name}_{key}.png" if (report / f"{qa_name}_{key}.png").is_file() else None)
        if p is not None:
            parts.append(_img(p))
    rows = []
    for t, r, rr in zip(truth, results, res, strict=True):
        link = html.escape(os.path.relpath(targets / t["name"] / "inspection.png", report))
        rows.append(f"<tr><td><a href='{link}'>{html.escape(t['name'])}</a></td><td>{t['z']:.3f}</td>"
                    f"<td>{t['richness']}</td><td>{html.escape(str(rr.status))}</td><td>{rr.z_phot:.3f}</td>"
                    f"<td>{rr.richness:.1f}</td><td>{rr.significance:.1f}</td><td>{'yes' if rr.detected else 'no'}</td>"
                    f"<td>{r.get('cpu_s', float('nan')):.0f}</td></tr>")
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in figures.items()
                      if k != "report")
    page = ("<html><head><meta charset='utf-8'><title>cosmodm bench clusters (image level)</title></head><body>"
            "<h1>Cluster follow-up against truth, image level</h1>"
            f"<table border=1>{summary}</table>{''.join(parts)}<h2>Candidates</h2><table border=1>"
            "<tr><th>name</th><th>z true</th><th>richness true</th><th>status</th><th>z_phot</th><th>richness</th>"
            f"<th>significance</th><th>detected</th><th>CPU s</th></tr>{''.join(rows)}</table></body></html>")
    path = report / "report.html"
    path.write_text(page)
    return path
