"""``cosmodm bench clusters --rescore``: the image-level figures again from saved candidates, with the current finder.

An image-level benchmark keeps, per candidate, ``targets/<name>/`` with ``result.json`` and the
calibrated dual-image catalogues (``catalog_<band>.fits``) of its coadds. The chain before the
finder (SWarp, PSFEx, SExtractor: ~190 core-s a candidate) does not change when the finder does,
so a finder change is measured by re-running only the finder (about 1 core-s) on those catalogues:
:func:`rescore_target` joins them as the chain does and calls the chain's own finder step
(:func:`cosmodm_ops.clusters.chain.find_in_tables`) with the current :class:`FinderConfig`.

:func:`rescore` does this for every candidate of the benchmark's list that has a ``result.json``
under the run folder (a run still going, or cut short, is fine: the figures say how many of the
candidates they cover, ``n_candidates``), recomputes :func:`cosmodm_ops.clusters.bench.metrics`
against truth and writes ``report.html`` and ``bench_clusters_rescore.json`` into a report folder
(default: the run folder; give another one for a run that is not yours). ``core_s_per_candidate``
is the saved catalogue + finder CPU of the chain (``result.json`` ``timings``), the finder CPU of the
rescoring is reported beside it. It reads the saved folders and never writes into them. Candidates
whose chain did not reach the finder (``no_warps``, ``no_coverage``, ``error``) keep their saved result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RescoreInputError", "read_target_tables", "rescore", "rescore_target"]


class RescoreInputError(ValueError):
    """The folder given to ``--rescore`` holds no saved image-level candidate; the message says what to give."""


def read_target_tables(target: Path, result: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-band dual-image catalogues (``LDAC_OBJECTS``) of a saved candidate, in band order."""
    import fitsio

    from cosmodm_ops.clusters.benchreport import target_product
    from cosmodm_ops.clusters.chain import BANDS

    tables = {}
    for b in BANDS:
        path = target_product(target, result, f"catalog_{b}")
        if path is not None:
            tables[b] = fitsio.read(str(path), ext="LDAC_OBJECTS")
    return tables


def rescore_target(target: Path, candidate: Any, config: Any | None = None) -> dict[str, Any]:
    """The saved ``result.json`` of ``target`` with the finder's figures redone on its catalogues.

    ``candidate``: :class:`~cosmodm_ops.clusters.finder.Candidate`; ``config``: a ChainConfig (default:
    the current one). Adds ``rescore_cpu_s`` (this finder run) and ``saved``: the chain's own figures.
    """
    from cosmodm_ops.clusters.chain import chain_config, find_in_tables

    saved = json.loads((target / "result.json").read_text())
    out = {**saved, "saved": {k: saved.get(k) for k in ("z_phot", "richness", "significance", "detected")}}
    tables = read_target_tables(target, saved)
    if saved.get("status") != "ok" or "i" not in tables:
        return out
    t0 = time.process_time()
    missing = saved.get("missing_bands") or []
    out["message"] = f"no warps in band(s) {','.join(missing)}" if missing else ""
    find_in_tables(candidate, tables, chain_config(config), out)
    out["rescore_cpu_s"] = round(time.process_time() - t0, 3)
    return out


def rescore(out: str, n_clusters: int = 48, n_null: int = 16, seed: int = 1, report_dir: str | None = None,
            tile_deg: float = 0.4) -> dict[str, Any]:
    """Rescore every saved candidate of the benchmark under ``out`` (see the module); return the figures."""
    from cosmodm_ops.clusters.bench import metrics, simulate_candidates
    from cosmodm_ops.clusters.benchreport import as_result, mean, qa_candidate, write_report
    from cosmodm_ops.clusters.finder import Candidate

    folder = Path(out)
    if not (folder / "targets").is_dir():
        msg = f"--rescore: {folder / 'targets'} is not there: give --out the folder of an image-level run"
        raise RescoreInputError(msg)
    report = Path(report_dir) if report_dir else folder
    report.mkdir(parents=True, exist_ok=True)
    truth = simulate_candidates(n_clusters, n_null, seed)
    order = [int(k) for k in np.random.default_rng(seed).permutation(len(truth))]
    saved = [k for k in order if (folder / "targets" / truth[k]["name"] / "result.json").is_file()]
    if not saved:
        msg = f"--rescore: no candidate under {folder / 'targets'} has a result.json yet"
        raise RescoreInputError(msg)
    config = {"tile_deg": tile_deg}
    results = [rescore_target(folder / "targets" / truth[k]["name"],
                              Candidate(truth[k]["name"], truth[k]["cand_ra"], truth[k]["cand_dec"], 3.0), config)
               for k in saved]
    ran = [truth[k] for k in saved]
    figures = metrics(ran, [as_result(r) for r in results])
    figures["core_s_per_candidate"] = mean([r.get("timings", {}).get("catalogue_finder_cpu_s") for r in results])
    figures["rescore_finder_core_s_per_candidate"] = mean([r.get("rescore_cpu_s") for r in results])
    figures["coadd_core_s_per_candidate"] = mean([r.get("timings", {}).get("coadd_cpu_s") for r in results])
    figures["saved_richness_ratio_median"] = _saved_richness_ratio(ran, results)
    figures["statuses"] = {s: sum(r.get("status") == s for r in results) for s in {r.get("status") for r in results}}
    figures["level"] = (f"image, rescored: the current finder on the saved catalogues of {len(results)} of "
                        f"{len(truth)} candidates under {folder}")
    qa = qa_candidate(truth, order)
    if qa is not None and qa in saved:
        rep = _repeatability(report, truth[qa], qa, seed, folder / "targets")
        figures["qa_repeatability"] = {k: rep.get(k) for k in ("band", "warp_pairs", "n_stars", "rms_over_expected")}
    figures["report"] = str(write_report(report, folder / "targets", ran, results, figures,
                                         truth[qa]["name"] if qa is not None else None))
    (report / "bench_clusters_rescore.json").write_text(json.dumps(figures, indent=1))
    keys = ("n_candidates", "sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate")
    return {**{k: figures[k] for k in keys}, **{k: v for k, v in figures.items() if k not in keys}}


def _saved_richness_ratio(truth: list[dict], results: list[dict]) -> float:
    """Median saved (chain-time) richness / true richness over the clusters of richness >= 20 detected then."""
    r = [(res["saved"]["richness"] or 0.0) / t["richness"] for t, res in zip(truth, results, strict=True)
         if t["richness"] >= 20 and res["saved"].get("detected")]
    return float(np.median(r)) if r else float("nan")


def _repeatability(report: Path, c: dict, index: int, seed: int, targets: Path) -> dict[str, Any] | None:
    """The QA candidate's repeatability: the saved one if its run made it, else its warps of the QA band
    simulated again (seeded: the same pixels the chain had) into the report folder, measured, deleted."""
    import shutil

    from cosmodm_ops.clusters.benchreport import QA_BAND, simulate_warps
    from cosmodm_ops.clusters.repeatability import qa_repeatability

    saved = json.loads((targets / c["name"] / "result.json").read_text()).get("qa_repeatability")
    done = report / f"{c['name']}_qa_repeatability.json"
    if (saved and "error" not in saved) or done.is_file():
        return saved or json.loads(done.read_text())
    warps = report / f"qa-warps-{c['name']}"
    try:
        simulate_warps(c, index, seed, warps, [QA_BAND])
        rep = qa_repeatability(warps, QA_BAND, report / f"{c['name']}_qa_repeatability.png",
                               f"{c['name']}: repeatability, band {QA_BAND} (warps simulated again)")
    finally:
        shutil.rmtree(warps, ignore_errors=True)
    done.write_text(json.dumps(rep, indent=1))
    return rep
