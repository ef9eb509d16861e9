"""Follow-up of a candidate list on one catalogue: the finder per candidate, plots, the cluster catalogue.

:func:`follow_up` is what ``cosmodm clusters find`` (and a campaign task) runs; :func:`simulate_field`
writes a small catalogue-level field to try it on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosmodm_ops.clusters.finder import (
    Candidate,
    ClusterResult,
    FinderConfig,
    Footprint,
    run,
    select_galaxies,
)

__all__ = ["follow_up", "simulate_field"]


def follow_up(candidates: Sequence[Candidate], catalog: np.ndarray, out: Path, config: FinderConfig,
              footprint: Footprint | None = None, plots: bool = True) -> dict:
    """Run the finder on every candidate; write ``clusters.fits``, ``results.json`` and ``curves/<name>.png``.

    A candidate outside the catalogue is reported (status 'no_coverage'), never an error.
    """
    from cosmodm_ops.clusters.catalog import footprint_of, write_cluster_catalogue

    footprint = footprint or footprint_of(catalog)
    galaxies = catalog[select_galaxies(catalog, config)]
    results: list[ClusterResult] = [run(c, galaxies, footprint, config) for c in candidates]
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from cosmodm_ops.clusters.plots import plot_curve

        (out / "curves").mkdir(exist_ok=True)
        for r in results:
            if r.status == "ok":
                plot_curve(r, out / "curves" / f"{r.name}.png")
    product = write_cluster_catalogue(results, out / "clusters.fits")
    rows = [{"name": r.name, "status": r.status, "message": r.message, "z_phot": _num(r.z_phot),
             "z_err": _num(r.z_err), "richness": _num(r.richness), "significance": _num(r.significance),
             "detected": r.detected, "bcg_ra": _num(r.bcg_ra), "bcg_dec": _num(r.bcg_dec),
             "unused_colours": r.unused_colours} for r in results]
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    unused = sorted({u for r in results for u in r.unused_colours})
    return {"candidates": len(results), "detected": sum(r.detected for r in results),
            "no_coverage": [r.name for r in results if r.status != "ok"], "unused_colours": unused,
            "catalogue": str(product)}


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def simulate_field(specs: Sequence[tuple[float, int]], n_null: int, seed: int, out: Path) -> dict:
    """A 2 x 2 deg field (per cluster column) with the given (z, richness) clusters and empty positions."""
    import fitsio

    from cosmodm_ops.sim.catalog_obs import Survey, observe
    from cosmodm_ops.sim.clusters import ClusterSpec, cluster_table, make_field, truth_table

    rng = np.random.default_rng(seed)
    n = len(specs) + n_null
    width = 1.6 * n
    ra0, dec0 = 150.0, 2.0
    centres = [(ra0 + 0.8 + 1.6 * k, dec0 + 0.8) for k in range(n)]
    clusters = [ClusterSpec(f"SIM-CL{k:02d}", *centres[k], z, lam) for k, (z, lam) in enumerate(specs)]
    objects = make_field((ra0, ra0 + width), (dec0, dec0 + 1.6), clusters, rng)
    cat = observe(objects, Survey(), rng)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    fitsio.write(str(out / "truth" / "objects.fits"), truth_table(objects), extname="OBJECTS", clobber=True)
    fitsio.write(str(out / "truth" / "clusters.fits"), cluster_table(clusters), extname="CLUSTERS", clobber=True)
    fitsio.write(str(out / "catalog.fits"), cat, extname="OBJECTS", clobber=True)
    lines = ["NAME,RA,DEC,POS_ERR"] + [f"SIM-CL{k:02d},{c[0]:.5f},{c[1]:.5f},2.0" for k, c in enumerate(centres)]
    lines[len(specs) + 1:] = [f"SIM-NULL{k:02d},{c[0]:.5f},{c[1]:.5f},2.0" for k, c in enumerate(centres[len(specs):])]
    (out / "candidates.csv").write_text("\n".join(lines) + "\n")
    return {"objects": len(objects), "detections": len(cat), "clusters": len(clusters), "candidates": n,
            "footprint": [ra0, ra0 + width, dec0, dec0 + 1.6], "out": str(out)}
