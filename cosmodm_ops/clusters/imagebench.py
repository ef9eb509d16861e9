"""``cosmodm bench clusters --level image``: the follow-up against truth through pixels.

The candidates of :func:`cosmodm_ops.clusters.bench.simulate_candidates` (48 clusters over z
0.05-0.7 and richness 5-150, 16 empty positions, 1' Planck-like position errors, prior radius 3'),
run in a seeded random order (so a run cut short by ``--limit`` is a fair sample). For each: its
patch of PS1-like warps in grizy (:func:`cosmodm_ops.sim.clusterwarps.write_patch`, 0.5" pixels, 2
warps per band at 3pi stack depth), then :func:`cosmodm_ops.clusters.chain.run_chain` (target tile
-> SWarp coadds -> detection image -> PSFEx -> dual-image SExtractor -> finder); the warps are
deleted after each candidate, ``targets/<name>/`` (result.json, catalogues, pictures) kept. A
candidate whose ``result.json`` is already there is not run again (a bench can be resumed).

Figures (:func:`cosmodm_ops.clusters.bench.metrics` on the candidates that ran): ``sigma_dz``
(NMAD) and RMS, ``outlier_fraction``, ``completeness_rich20``, ``purity``; ``core_s_per_candidate``
is the CPU after the coadds (catalogues + finder, SExtractor and PSFEx included), the coadd and
simulation CPU are reported beside it. The first cluster candidate with richness >= 20 also gets the
coadd code's QA plots (stellar locus, SPREAD_MODEL against magnitude) in ``report.html``.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

__all__ = ["clusters_bench", "clusters_image"]


def clusters_bench(n_clusters: int | None = None, n_null: int | None = None, seed: int | None = None,
                   out: str | None = None, level: str | None = None, limit: int | None = None,
                   jobs: int | None = None, tile_deg: float | None = None) -> dict:
    """``cosmodm bench clusters``: ``level`` 'image' (default, :func:`clusters_image`) or 'catalogue'
    (:func:`cosmodm_ops.clusters.bench.clusters`, the finder alone)."""
    from cosmodm_ops.clusters.bench import clusters

    n_clusters, n_null, seed = n_clusters or 48, n_null if n_null is not None else 16, seed or 1
    if (level or "image") == "catalogue":
        return clusters(n_clusters, n_null, seed, out)
    return clusters_image(n_clusters, n_null, seed, out, limit=limit, jobs=jobs or 1, tile_deg=tile_deg or 0.4)


def _one(args: tuple[dict, int, int, str, dict]) -> dict:
    """Simulate one candidate's warps, run the chain, delete the warps; the result dict (+ sim CPU)."""
    from cosmodm_ops.clusters.chain import run_chain
    from cosmodm_ops.clusters.finder import Candidate
    from cosmodm_ops.sim.clusters import ClusterSpec
    from cosmodm_ops.sim.clusterwarps import write_patch

    c, index, seed, folder, overrides = args
    target = Path(folder) / "targets" / c["name"]
    if (target / "result.json").is_file():
        return json.loads((target / "result.json").read_text())
    warps = Path(folder) / "warps" / c["name"]
    t0 = time.process_time()
    specs = [ClusterSpec(c["name"], c["ra"], c["dec"], c["z"], c["richness"])] if c["richness"] else []
    write_patch(warps, c["name"], c["ra"], c["dec"], specs, seed=seed, projection_cell=1000 + index)
    sim_cpu = time.process_time() - t0
    result = run_chain(Candidate(c["name"], c["cand_ra"], c["cand_dec"], 3.0), target, warps, overrides)
    shutil.rmtree(warps)
    result["sim_cpu_s"] = round(sim_cpu, 3)
    (target / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _as_result(r: dict) -> SimpleNamespace:
    def num(k: str) -> float:
        v = r.get(k)
        return float("nan") if v is None else float(v)

    return SimpleNamespace(name=r["name"], detected=bool(r.get("detected")) and r.get("status") == "ok",
                           z_phot=num("z_phot"), z_err=num("z_err"), richness=num("richness"),
                           significance=num("significance"), status=r.get("status"))


def clusters_image(n_clusters: int = 48, n_null: int = 16, seed: int = 1, out: str | None = None,
                   limit: int | None = None, jobs: int = 1, tile_deg: float = 0.4) -> dict:
    """Run the image-level benchmark (see the module); return the figures."""
    from cosmodm_ops.clusters.bench import metrics, simulate_candidates

    folder = Path(out or tempfile.mkdtemp(prefix="cosmodm-bench-clusters-image-"))
    folder.mkdir(parents=True, exist_ok=True)
    truth = simulate_candidates(n_clusters, n_null, seed)
    order = np.random.default_rng(seed).permutation(len(truth))[: limit or len(truth)]
    qa_index = next((int(k) for k in order if truth[k]["richness"] >= 20), None)
    base = {"tile_deg": tile_deg}
    tasks = [(truth[k], int(k), seed, str(folder), {**base, "qa_plots": int(k) == qa_index}) for k in order]
    wall0 = time.perf_counter()
    if jobs > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(min(jobs, 2)) as pool:
            results = pool.map(_one, tasks, chunksize=1)
    else:
        results = [_one(t) for t in tasks]
    ran = [truth[k] for k in order]
    figures = metrics(ran, [_as_result(r) for r in results])
    core = [r.get("timings", {}).get("catalogue_finder_cpu_s") for r in results]
    coadd = [r.get("timings", {}).get("coadd_cpu_s") for r in results]
    figures["core_s_per_candidate"] = _mean(core)
    figures["coadd_core_s_per_candidate"] = _mean(coadd)
    figures["chain_core_s_per_candidate"] = _mean([r.get("cpu_s") for r in results])
    figures["sim_core_s_per_candidate"] = _mean([r.get("sim_cpu_s") for r in results])
    figures["statuses"] = {s: sum(r.get("status") == s for r in results) for s in {r.get("status") for r in results}}
    figures["wall_s"] = round(time.perf_counter() - wall0, 1)
    figures["level"] = (f"image (PS1-like warps at 0.5\"/px, 2 per band, 3pi stack depth; {tile_deg} deg target "
                        f"tiles; {len(results)} of {len(truth)} candidates)")
    figures["report"] = str(_report(folder, ran, results, figures, qa_index, truth))
    (folder / "bench_clusters_image.json").write_text(json.dumps(figures, indent=1))
    keys = ("sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate")
    return {**{k: figures[k] for k in keys}, **{k: v for k, v in figures.items() if k not in keys}}


def _mean(values: list) -> float:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def _report(folder: Path, truth: list[dict], results: list[dict], figures: dict, qa_index: int | None,
            all_truth: list[dict]) -> Path:
    """report.html: figures, photo-z against truth, the QA plots of one candidate, the candidates' table."""
    from cosmodm_ops.clusters.plots import _img, plot_photoz

    zt = np.array([t["z"] for t in truth])
    cl = np.array([t["richness"] > 0 for t in truth])
    res = [_as_result(r) for r in results]
    zp = np.array([r.z_phot for r in res])
    det = np.array([r.detected for r in res])
    parts = [_img(plot_photoz(zt[cl], zp[cl], det[cl], folder / "photoz_vs_truth.png"))] if cl.any() else []
    if qa_index is not None:
        qa_res = next((r for r in results if r["name"] == all_truth[qa_index]["name"]), None)
        for key in ("qa_locus", "qa_spread_model", "inspection"):
            p = (qa_res or {}).get("products", {}).get(key)
            if p and Path(p).is_file():
                parts.append(_img(Path(p)))
    rows = []
    for t, r, rr in zip(truth, results, res, strict=True):
        link = html.escape(f"targets/{t['name']}/inspection.png")
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
    path = folder / "report.html"
    path.write_text(page)
    return path
