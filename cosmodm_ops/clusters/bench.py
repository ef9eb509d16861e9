"""``cosmodm bench clusters``: the cluster finder against simulation truth, at the catalogue level.

A field of candidates (default 48 clusters over z 0.05-0.7, richness 5-150, stratified so every
range is covered, plus 16 empty positions as false candidates). Each candidate gets its own
1.6 x 1.6 deg patch of sky (stars, field galaxies, the cluster) observed at PS1 3pi depth at the
*catalogue level* (:mod:`cosmodm_ops.sim.catalog_obs`: truth magnitudes plus the noise of the depth,
SPREAD_MODEL scatter; no pixels, no SExtractor) and a Planck-like position error (1 arcmin per axis,
prior radius 3 arcmin). The finder then runs on each patch as it would on a coadd's catalogue.
Figures: photo-z scatter ``sigma(dz/(1+z))`` (NMAD and RMS) and outliers (|dz|/(1+z) > 0.1) over the
detected clusters; completeness against truth by richness and redshift; purity (detected
candidates that are real clusters); finder CPU seconds per candidate (the cost after the coadds).
Plots and an HTML summary go to ``--out`` (default a temporary folder, reported).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["clusters", "metrics", "simulate_candidates"]

PATCH_DEG = 1.6


def simulate_candidates(n_clusters: int, n_null: int, seed: int) -> list[dict]:
    """Candidate truth: name, ra, dec (true centre), z, richness (0 = empty), offset position."""
    rng = np.random.default_rng(seed)
    z = rng.permutation(np.linspace(0.05, 0.7, n_clusters) + rng.uniform(-0.005, 0.005, n_clusters))
    lam = np.round(np.exp(np.linspace(math.log(5), math.log(150), n_clusters))).astype(int)
    out = []
    for k in range(n_clusters + n_null):
        ra, dec = 20.0 + (PATCH_DEG + 0.4) * (k % 16), -20.0 + (PATCH_DEG + 0.4) * (k // 16)
        is_cl = k < n_clusters
        off = rng.normal(0.0, 1.0 / 60.0, 2)
        out.append({"name": f"PSZ-SIM{k:03d}", "ra": ra, "dec": dec, "z": float(z[k]) if is_cl else float("nan"),
                    "richness": int(lam[k]) if is_cl else 0,
                    "cand_ra": ra + off[0] / math.cos(math.radians(dec)), "cand_dec": dec + off[1]})
    return out


def _patch(c: dict, seed: int):
    from cosmodm_ops.clusters.finder import Footprint
    from cosmodm_ops.sim.catalog_obs import Survey, observe
    from cosmodm_ops.sim.clusters import ClusterSpec, make_field

    rng = np.random.default_rng([seed, int(c["name"][-3:])])
    h = PATCH_DEG / 2
    box = ((c["ra"] - h / math.cos(math.radians(c["dec"])), c["ra"] + h / math.cos(math.radians(c["dec"]))),
           (c["dec"] - h, c["dec"] + h))
    specs = [ClusterSpec(c["name"], c["ra"], c["dec"], c["z"], c["richness"])] if c["richness"] else []
    objects = make_field(*box, specs, rng)
    cat = observe(objects, Survey(), rng)
    return objects, cat, Footprint(box[0][0], box[0][1], box[1][0], box[1][1])


def metrics(truth: list[dict], results: list, min_richness: int = 20, max_z: float = 0.6) -> dict:
    """Photo-z scatter, outliers, completeness (by richness and z) and purity of finder results vs truth."""
    is_cl = np.array([t["richness"] > 0 for t in truth])
    det = np.array([r.detected for r in results])
    lam = np.array([t["richness"] for t in truth])
    zt = np.array([t["z"] for t in truth])
    zp = np.array([r.z_phot for r in results])
    good = is_cl & det
    dz = (zp[good] - zt[good]) / (1 + zt[good])
    nmad = float(1.4826 * np.median(np.abs(dz - np.median(dz)))) if len(dz) else float("nan")
    core = ~(np.abs(dz) > 0.1)
    target = is_cl & (lam >= min_richness) & (zt <= max_z)
    out = {
        "sigma_dz": nmad,
        "sigma_dz_rms": float(np.sqrt(np.mean(dz[core] ** 2))) if core.any() else float("nan"),
        "sigma_dz_rms_all": float(np.sqrt(np.mean(dz**2))) if len(dz) else float("nan"),
        "bias_dz": float(np.median(dz)) if len(dz) else float("nan"),
        "outlier_fraction": float(np.mean(np.abs(dz) > 0.1)) if len(dz) else float("nan"),
        "completeness_rich20": float(det[target].mean()) if target.any() else float("nan"),
        "purity": float(is_cl[det].mean()) if det.any() else float("nan"),
        "n_candidates": len(truth), "n_clusters": int(is_cl.sum()), "n_detected": int(det.sum()),
        "n_false_detections": int((det & ~is_cl).sum()),
        "max_null_significance": float(np.nanmax([r.significance for r, c in zip(results, is_cl, strict=True)
                                                  if not c] or [float("nan")])),
    }
    lam_rec = np.array([r.richness for r in results])
    ok = good & (lam >= 20)
    out["richness_ratio_median"] = float(np.median(lam_rec[ok] / lam[ok])) if ok.any() else float("nan")
    out["completeness_by_richness"] = {
        f"{lo}-{hi}": float(det[is_cl & (lam >= lo) & (lam < hi)].mean()) if (is_cl & (lam >= lo) & (lam < hi)).any()
        else None for lo, hi in ((5, 10), (10, 20), (20, 50), (50, 151))}
    out["completeness_by_z"] = {
        f"{lo:.1f}-{hi:.1f}": float(det[is_cl & (zt >= lo) & (zt < hi)].mean()) if (is_cl & (zt >= lo) & (zt < hi)).any()
        else None for lo, hi in ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.75))}
    return out


def clusters(n_clusters: int | None = None, n_null: int | None = None, seed: int | None = None,
             out: str | None = None) -> dict:
    """Run the benchmark; return the figures (the JSON line's keys first)."""
    from cosmodm_ops.clusters.finder import Candidate, FinderConfig, run, select_galaxies
    from cosmodm_ops.clusters.plots import write_bench_report

    n_clusters, n_null, seed = n_clusters or 48, n_null if n_null is not None else 16, seed or 1
    folder = Path(out or tempfile.mkdtemp(prefix="cosmodm-bench-clusters-"))
    folder.mkdir(parents=True, exist_ok=True)
    truth = simulate_candidates(n_clusters, n_null, seed)
    config = FinderConfig()
    results, cpu, sim_cpu, example = [], 0.0, 0.0, None
    for c in truth:
        t0 = time.process_time()
        objects, cat, fp = _patch(c, seed)
        t1 = time.process_time()
        gal = cat[select_galaxies(cat, config)]
        results.append(run(Candidate(c["name"], c["cand_ra"], c["cand_dec"], 3.0), gal, fp, config))
        t2 = time.process_time()
        sim_cpu, cpu = sim_cpu + (t1 - t0), cpu + (t2 - t1)
        if example is None and c["richness"] >= 20:
            example = (objects, cat)
    figures = metrics(truth, results)
    figures["core_s_per_candidate"] = cpu / len(truth)
    figures["sim_core_s_per_candidate"] = sim_cpu / len(truth)
    figures["level"] = "catalogue (truth + PS1-depth noise; no pixels)"
    figures["report"] = str(write_bench_report(folder, truth, results, figures, example))
    (folder / "bench_clusters.json").write_text(json.dumps(figures, indent=1))
    keys = ("sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate")
    return {**{k: figures[k] for k in keys}, **{k: v for k, v in figures.items() if k not in keys}}
