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

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["clusters_bench", "clusters_image"]


def clusters_bench(n_clusters: int | None = None, n_null: int | None = None, seed: int | None = None,
                   out: str | None = None, level: str | None = None, limit: int | None = None,
                   jobs: int | None = None, tile_deg: float | None = None, rescore: bool | None = None,
                   report_dir: str | None = None) -> dict:
    """``cosmodm bench clusters``: ``level`` 'image' (default, :func:`clusters_image`) or 'catalogue'
    (:func:`cosmodm_ops.clusters.bench.clusters`, the finder alone); ``rescore``: the image level's figures
    from the candidates already under ``out`` (:func:`cosmodm_ops.clusters.rescore.rescore`)."""
    from cosmodm_ops.clusters.bench import clusters

    n_clusters, n_null, seed = n_clusters or 48, n_null if n_null is not None else 16, seed or 1
    if rescore:
        from cosmodm_ops.clusters.rescore import RescoreInputError
        from cosmodm_ops.clusters.rescore import rescore as rescore_run

        if not out or (level or "image") != "image":
            msg = "--rescore needs --out DIR: the folder of an image-level run (DIR/targets/<name>/result.json)"
            raise RescoreInputError(msg)
        return rescore_run(out, n_clusters, n_null, seed, report_dir, tile_deg or 0.4)
    if (level or "image") == "catalogue":
        return clusters(n_clusters, n_null, seed, out)
    return clusters_image(n_clusters, n_null, seed, out, limit=limit, jobs=jobs or 1, tile_deg=tile_deg or 0.4)


def _one(args: tuple[dict, int, int, str, dict]) -> dict:
    """Simulate one candidate's warps, run the chain, delete the warps; the result dict (+ sim CPU)."""
    from cosmodm_ops.clusters.benchreport import QA_BAND, simulate_warps
    from cosmodm_ops.clusters.chain import run_chain
    from cosmodm_ops.clusters.finder import Candidate

    c, index, seed, folder, overrides = args
    target = Path(folder) / "targets" / c["name"]
    if (target / "result.json").is_file():
        return json.loads((target / "result.json").read_text())
    warps = Path(folder) / "warps" / c["name"]
    t0 = time.process_time()
    simulate_warps(c, index, seed, warps)
    sim_cpu = time.process_time() - t0
    result = run_chain(Candidate(c["name"], c["cand_ra"], c["cand_dec"], 3.0), target, warps, overrides)
    if overrides.get("qa_plots") and result.get("status") == "ok":  # the seed's repeatability QA, from the warps
        from cosmodm_ops.clusters.repeatability import qa_repeatability

        png = target / "qa_repeatability.png"
        try:
            result["qa_repeatability"] = qa_repeatability(warps, QA_BAND, png,
                                                          f"{c['name']}: repeatability, band {QA_BAND}")
            result["products"]["qa_repeatability"] = str(png)
        except Exception as err:  # noqa: BLE001 - a QA plot that fails must not lose the candidate's result
            result["qa_repeatability"] = {"error": f"{type(err).__name__}: {err}"}
    shutil.rmtree(warps)
    result["sim_cpu_s"] = round(sim_cpu, 3)
    (target / "result.json").write_text(json.dumps(result, indent=1))
    return result


def clusters_image(n_clusters: int = 48, n_null: int = 16, seed: int = 1, out: str | None = None,
                   limit: int | None = None, jobs: int = 1, tile_deg: float = 0.4) -> dict:
    """Run the image-level benchmark (see the module); return the figures."""
    from cosmodm_ops.clusters.bench import metrics, simulate_candidates
    from cosmodm_ops.clusters.benchreport import as_result, mean, qa_candidate, write_report

    folder = Path(out or tempfile.mkdtemp(prefix="cosmodm-bench-clusters-image-"))
    folder.mkdir(parents=True, exist_ok=True)
    truth = simulate_candidates(n_clusters, n_null, seed)
    order = np.random.default_rng(seed).permutation(len(truth))[: limit or len(truth)]
    qa_index = qa_candidate(truth, order)
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
    figures = metrics(ran, [as_result(r) for r in results])
    core = [r.get("timings", {}).get("catalogue_finder_cpu_s") for r in results]
    coadd = [r.get("timings", {}).get("coadd_cpu_s") for r in results]
    figures["core_s_per_candidate"] = mean(core)
    figures["coadd_core_s_per_candidate"] = mean(coadd)
    figures["chain_core_s_per_candidate"] = mean([r.get("cpu_s") for r in results])
    figures["sim_core_s_per_candidate"] = mean([r.get("sim_cpu_s") for r in results])
    figures["statuses"] = {s: sum(r.get("status") == s for r in results) for s in {r.get("status") for r in results}}
    figures["wall_s"] = round(time.perf_counter() - wall0, 1)
    figures["level"] = (f"image (PS1-like warps at 0.5\"/px, 2 per band, 3pi stack depth; {tile_deg} deg target "
                        f"tiles; {len(results)} of {len(truth)} candidates)")
    qa_name = truth[qa_index]["name"] if qa_index is not None else None
    figures["report"] = str(write_report(folder, folder / "targets", ran, results, figures, qa_name))
    (folder / "bench_clusters_image.json").write_text(json.dumps(figures, indent=1))
    keys = ("sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate")
    return {**{k: figures[k] for k in keys}, **{k: v for k, v in figures.items() if k not in keys}}
