"""Absolute photometric calibration by stellar-locus regression (SLR).

Stars of the Milky Way fill a narrow curve in colour space, the stellar locus. The
colours measured in a tile, shifted by the right per-band zeropoint corrections, must
lie on the reference locus (Covey et al. 2007, median SDSS ugriz + 2MASS JHKs colours
as a function of g-i: ``real:stellar_locus/covey_medianlocus.tbl``). Colours alone fix
only differences of zeropoints; a near-infrared magnitude from an absolute reference
(2MASS J) anchors one band (``r-J``), which makes the calibration absolute.

Conventions: the correction ``dzp[b]`` is *added* to the band's magnitudes
(``m_true = m_obs + dzp``). With ``c = (g-r, r-i, i-z, r-J)`` the colours shift by
``s = T dzp``, ``T = [[1,-1,0,0], [0,1,-1,0], [0,0,1,-1], [0,1,0,0]]``.

Fit: Gauss-Newton on the perpendicular distances to the locus polyline ("point to
curve" ICP): each star is projected on its nearest locus segment (4-D for stars with J,
3-D ``griz`` colours for the others), and the shift solves the normal equations
``(sum w P_k) ds = -sum w P_k r_k`` with ``P_k = I - t_k t_k^T`` the projector across
the local tangent ``t_k``. Stars farther than ``clip`` robust sigmas from the locus,
or beyond its ends, are left out (robust to galaxies, binaries and bad photometry).
The scatter per colour plane (``g-r vs r-i``, ``r-i vs i-z``, ``g-r vs r-J``) is the
robust sigma (1.4826 MAD) of the 2-D distances to the projected locus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import chi2

from cosmodm_ops.config import resolve_data_path
from cosmodm_ops.sky import chord, unit_vectors

__all__ = [
    "COLOURS",
    "DEFAULT_LOCUS",
    "PLANES",
    "Locus",
    "LocusError",
    "LocusResult",
    "fit_locus",
    "match_reference",
    "plot_locus",
    "read_covey_locus",
    "read_star_table",
]

#: The reference locus file (resolved with :func:`cosmodm_ops.config.resolve_data_path`).
DEFAULT_LOCUS = "real:stellar_locus/covey_medianlocus.tbl"
#: Fitted colours; ``r-J`` anchors the absolute scale.
COLOURS = ("g-r", "r-i", "i-z", "r-J")
#: Colour planes for the scatter QA and the plot.
PLANES = (("g-r", "r-i"), ("r-i", "i-z"), ("g-r", "r-J"))
_BANDS = ("g", "r", "i", "z")
_T = np.array([[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1], [0, 1, 0, 0]], dtype=float)


class LocusError(ValueError):
    """The locus file or the star sample cannot be used."""


@dataclass(frozen=True)
class Locus:
    """A median stellar locus: colours tabulated against g-i.

    Attributes
    ----------
    gi : ndarray, shape (n,)
        g-i of each bin (mag).
    colours : dict of str to ndarray
        Colours per bin by label (``u-g``, ``g-r``, ``r-i``, ``i-z``, ``z-J``, ``J-H``, ``H-K``);
        derived ``r-J = r-i + i-z + z-J`` is added.
    counts : ndarray
        Stars per bin.
    """

    gi: np.ndarray
    colours: dict[str, np.ndarray]
    counts: np.ndarray

    def curve(self, names: tuple[str, ...], step: float = 0.005) -> np.ndarray:
        """The locus in the colour space ``names`` resampled every ``step`` mag of arc length, shape (m, k)."""
        pts = np.column_stack([self.colours[n] for n in names])
        seg = np.sqrt(np.sum(np.diff(pts, axis=0) ** 2, axis=1))
        s = np.concatenate([[0.0], np.cumsum(seg)])
        grid = np.linspace(0.0, s[-1], max(2, math.ceil(s[-1] / step) + 1))
        return np.column_stack([np.interp(grid, s, pts[:, j]) for j in range(pts.shape[1])])

    def at_gi(self, gi: np.ndarray) -> dict[str, np.ndarray]:
        """Colours interpolated at given g-i values (clipped to the table's range)."""
        return {k: np.interp(gi, self.gi, v) for k, v in self.colours.items()}


def read_covey_locus(path: str | Path | None = None, min_count: int = 20, smooth: bool = True) -> Locus:
    """Read the Covey et al. (2007) median locus table (CDS byte-by-byte format).

    Column labels are taken from the file's byte-by-byte description, so the order of
    columns does not matter. Bins with fewer than ``min_count`` stars are dropped and
    the 0.01-mag rounding of the table is softened with a [1, 2, 1]/4 running mean.
    """
    p = resolve_data_path(str(path or DEFAULT_LOCUS))
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError as err:
        msg = f"{p}: stellar locus table not found (set COSMODM_REAL_DATA or give a path)"
        raise LocusError(msg) from err
    labels: list[str] = []
    spec = re.compile(r"^\s*\d+-\s*\d+\s+[A-Z]\S*\s+\S+\s+(\S+)")
    last_rule = 0
    for k, line in enumerate(lines):
        m = spec.match(line)
        if m:
            labels.append(m.group(1))
        if line.startswith("-----"):
            last_rule = k
    if "g-i" not in labels or "Num" not in labels:
        msg = (
            f"{p}: no byte-by-byte description with 'g-i' and 'Num' columns; is this the Covey median locus?"
        )
        raise LocusError(msg)
    rows = [ln.split() for ln in lines[last_rule + 1 :] if ln.strip()]
    try:
        data = np.array([[float(v) for v in r] for r in rows if len(r) == len(labels)])
    except ValueError as err:
        msg = f"{p}: unreadable number in the locus table: {err}"
        raise LocusError(msg) from err
    cols = {lab: data[:, j] for j, lab in enumerate(labels)}
    keep = cols["Num"] >= min_count
    colours = {
        lab: cols[lab][keep] for lab in labels if "-" in lab and not lab.startswith("e_") and lab != "g-i"
    }
    if smooth:
        for lab, v in colours.items():
            sm = v.copy()
            sm[1:-1] = 0.25 * v[:-2] + 0.5 * v[1:-1] + 0.25 * v[2:]
            colours[lab] = sm
    if {"r-i", "i-z", "z-J"} <= set(colours):
        colours["r-J"] = colours["r-i"] + colours["i-z"] + colours["z-J"]
    return Locus(cols["g-i"][keep], colours, cols["Num"][keep])


def match_reference(
    ra: np.ndarray,
    dec: np.ndarray,
    ref_ra: np.ndarray,
    ref_dec: np.ndarray,
    ref_mag: np.ndarray,
    radius_arcsec: float = 1.0,
) -> np.ndarray:
    """The reference magnitude (e.g. 2MASS J) of the nearest reference star within the radius, NaN if none.

    Parameters
    ----------
    ra, dec : ndarray, shape (n,)
        The tile's stars (degrees).
    ref_ra, ref_dec, ref_mag : ndarray, shape (m,)
        The reference catalogue (degrees, mag).
    """

    out = np.full(len(np.atleast_1d(ra)), np.nan)
    if len(np.atleast_1d(ref_ra)) == 0:
        return out
    dist, idx = cKDTree(unit_vectors(ref_ra, ref_dec)).query(unit_vectors(ra, dec),
                                                            distance_upper_bound=chord(radius_arcsec))
    hit = np.isfinite(dist)
    out[hit] = np.asarray(ref_mag, float)[idx[hit]]
    return out


def read_star_table(path: str | Path, deredden: bool = True) -> dict[str, np.ndarray]:
    """Read a whitespace star table with a ``# name name ...`` header ('-' = missing), e.g. the SLR ``.ctab``.

    Returns every column as a float array (NaN where missing); with ``deredden`` the
    ``<band>_galext`` columns are subtracted from the band magnitudes.
    """
    p = resolve_data_path(str(path))
    with p.open(encoding="utf-8") as fh:
        header = fh.readline()
        if not header.startswith("#"):
            msg = f"{p}: expected a '# col col ...' header line"
            raise LocusError(msg)
        names = header[1:].split()
        rows = [ln.split() for ln in fh if ln.strip() and not ln.startswith("#")]
    data = np.array([[math.nan if v == "-" else float(v) for v in r] for r in rows if len(r) == len(names)])
    table = {n: data[:, j] for j, n in enumerate(names)}
    if deredden:
        for b in _BANDS:
            if b in table and f"{b}_galext" in table:
                table[b] = table[b] - table[f"{b}_galext"]
    return table


@dataclass(frozen=True)
class LocusResult:
    """Outcome of :func:`fit_locus`.

    Attributes
    ----------
    zeropoints : dict of str to float
        Correction per band (mag), to be added to that band's magnitudes; absolute when
        ``absolute`` (J anchor), else relative to r (``zeropoints['r'] = 0``).
    errors : dict of str to float
        1-sigma statistical errors (mag), from the Gauss-Newton normal matrix scaled by the scatter.
    colour_shifts : dict of str to float
        The fitted shift of each colour (mag).
    scatter : dict of str to float
        Robust sigma of the distance to the locus per colour plane (mag), keyed ``'g-r vs r-i'``.
    absolute : bool
    n_stars, n_used, n_with_j : int
    iterations : int
    converged : bool
    colours : ndarray, shape (n_stars, 4)
        Corrected colours (g-r, r-i, i-z, r-J), NaN r-J without J.
    used : ndarray of bool, shape (n_stars,)
    """

    zeropoints: dict[str, float]
    errors: dict[str, float]
    colour_shifts: dict[str, float]
    scatter: dict[str, float]
    absolute: bool
    n_stars: int
    n_used: int
    n_with_j: int
    iterations: int
    converged: bool
    colours: np.ndarray = field(repr=False)
    used: np.ndarray = field(repr=False)

    def qa(self) -> dict[str, Any]:
        """Scalar QA values."""
        out: dict[str, Any] = {f"dzp_{b}": v for b, v in self.zeropoints.items()}
        out.update(
            {f"locus_scatter_{k.replace(' vs ', '_').replace('-', '')}": v for k, v in self.scatter.items()}
        )
        out.update(
            {"n_locus_stars": self.n_used, "locus_absolute": self.absolute, "locus_converged": self.converged}
        )
        return out


def _nearest_on_polyline(
    tree: cKDTree, curve: np.ndarray, pts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection ``p`` of each point on the polyline, the unit tangent there, and an 'at an end' flag."""
    _, v = tree.query(pts)
    m = len(curve)
    best_p = np.empty_like(pts)
    best_t = np.empty_like(pts)
    best_d = np.full(len(pts), np.inf)
    end = np.zeros(len(pts), bool)
    for a_idx in (np.clip(v - 1, 0, m - 2), np.clip(v, 0, m - 2)):
        a, b = curve[a_idx], curve[a_idx + 1]
        ab = b - a
        ll = np.sum(ab * ab, axis=1)
        u = np.sum((pts - a) * ab, axis=1) / ll
        uc = np.clip(u, 0.0, 1.0)
        p = a + uc[:, None] * ab
        d = np.sum((pts - p) ** 2, axis=1)
        better = d < best_d
        best_d[better] = d[better]
        best_p[better] = p[better]
        best_t[better] = (ab / np.sqrt(ll)[:, None])[better]
        at_end = ((a_idx == 0) & (u < 0)) | ((a_idx == m - 2) & (u > 1))
        end[better] = at_end[better]
    return best_p, best_t, end


def fit_locus(
    mags: Mapping[str, np.ndarray],
    errs: Mapping[str, np.ndarray] | None = None,
    *,
    locus: Locus | None = None,
    anchor: str = "J",
    intrinsic: float = 0.02,
    clip: float = 3.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    min_stars: int = 20,
) -> LocusResult:
    """Fit per-band zeropoint corrections that put the stars' colours on the stellar locus.

    Parameters
    ----------
    mags : mapping band -> ndarray, shape (n,)
        Magnitudes of the same stars in ``g``, ``r``, ``i``, ``z`` (mag; dereddened) and
        ``anchor`` (2MASS-like J, NaN where missing). Stars lacking any of griz are skipped.
    errs : mapping band -> ndarray, optional
        Their 1-sigma errors (mag); default 0.02.
    locus : Locus, optional
        Default :func:`read_covey_locus`.
    intrinsic : float
        Intrinsic width of the locus added to the colour errors (mag).
    clip : float
        Stars farther than ``clip`` robust sigmas from the locus are not used.

    Returns
    -------
    LocusResult
    """
    loc = locus or read_covey_locus()
    obs, ok, has_j, w = _observed_colours(mags, errs, anchor, intrinsic, min_stars)
    n = len(obs)
    absolute = bool(has_j.sum() >= max(5, min_stars // 4))
    curve4 = loc.curve(COLOURS)
    curve3 = curve4[:, :3]
    trees = {4: cKDTree(curve4), 3: cKDTree(curve3)}
    groups = (
        {4: np.flatnonzero(has_j), 3: np.flatnonzero(ok & ~has_j)} if absolute else {3: np.flatnonzero(ok)}
    )
    shift = np.zeros(4)
    use = ok.copy()
    dist = np.full(n, np.nan)
    converged = False
    it = 0
    normal = np.eye(4)
    for it in range(1, max_iter + 1):
        normal, rhs = _normal_equations(groups, obs, shift, trees, curve4, w, dist, use, clip=clip, clipping=it > 2)
        if not absolute:
            normal[3, 3] = 1.0  # r-J not constrained: hold it
        step = np.linalg.solve(normal + 1e-12 * np.eye(4), rhs)
        shift += step
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    dzp, cov_z = _band_corrections(shift, normal, w, dist, use, absolute=absolute)
    corrected = obs + shift
    scatter = _plane_scatter(loc, corrected, use)
    return LocusResult(
        zeropoints={b: float(v) for b, v in zip(_BANDS, dzp, strict=True)},
        errors={b: float(math.sqrt(max(v, 0.0))) for b, v in zip(_BANDS, np.diag(cov_z), strict=True)},
        colour_shifts={c: float(v) for c, v in zip(COLOURS, shift, strict=True)},
        scatter=scatter,
        absolute=absolute,
        n_stars=int(ok.sum()),
        n_used=int(use.sum()),
        n_with_j=int(has_j.sum()),
        iterations=it,
        converged=converged,
        colours=corrected,
        used=use,
    )


def _observed_colours(
    mags: Mapping[str, np.ndarray], errs: Mapping[str, np.ndarray] | None, anchor: str, intrinsic: float,
    min_stars: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stars' colours (g-r, r-i, i-z, r-J; shape (n, 4)), the griz and J masks and the fit weights.

    Raises
    ------
    LocusError
        A band of g, r, i, z is missing, or fewer than ``min_stars`` stars have all four.
    """
    missing = [b for b in _BANDS if b not in mags]
    if missing:
        msg = f"stellar-locus fit needs magnitudes in g, r, i, z; missing {missing}"
        raise LocusError(msg)
    m = {b: np.asarray(mags[b], float) for b in _BANDS}
    n = len(m["g"])
    jmag = np.asarray(mags[anchor], float) if anchor in mags else np.full(n, np.nan)
    e = {b: np.asarray(errs[b], float) if errs and b in errs else np.full(n, 0.02) for b in (*_BANDS, anchor)}
    obs = np.column_stack([m["g"] - m["r"], m["r"] - m["i"], m["i"] - m["z"], m["r"] - jmag])
    ok = np.all(np.isfinite(obs[:, :3]), axis=1)
    has_j = ok & np.isfinite(obs[:, 3])
    var = (
        e["g"] ** 2
        + 2 * e["r"] ** 2
        + 2 * e["i"] ** 2
        + e["z"] ** 2
        + np.where(has_j, e[anchor] ** 2 + e["r"] ** 2, 0.0)
    ) / np.where(has_j, 4.0, 3.0)
    w = 1.0 / (intrinsic**2 + np.nan_to_num(var, nan=1.0))
    if ok.sum() < min_stars:
        msg = f"only {int(ok.sum())} stars with g, r, i and z (need {min_stars}) for the stellar-locus fit"
        raise LocusError(msg)
    return obs, ok, has_j, w


def _normal_equations(
    groups: Mapping[int, np.ndarray], obs: np.ndarray, shift: np.ndarray, trees: Mapping[int, cKDTree],
    curve4: np.ndarray, w: np.ndarray, dist: np.ndarray, use: np.ndarray, *, clip: float, clipping: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One Gauss-Newton step's normal matrix (4, 4) and right-hand side (4,) for the colour shifts.

    Each group (stars with J: 4 colours; without: 3) is projected on the locus; ``dist`` and
    ``use`` (shape (n,)) are updated in place with each star's distance and whether it counts
    (not beyond an end of the locus; with ``clipping``, within ``clip`` robust sigmas).
    """
    normal = np.zeros((4, 4))
    rhs = np.zeros(4)
    for dim, idx in groups.items():
        if len(idx) == 0:
            continue
        pts = obs[idx, :dim] + shift[:dim]
        p, t, end = _nearest_on_polyline(trees[dim], curve4[:, :dim], pts)
        r = pts - p
        dist[idx] = np.sqrt(np.sum(r * r, axis=1))
        use[idx] = ~end
        proj = np.eye(dim)[None, :, :] - t[:, :, None] * t[:, None, :]
        sel = ~end
        if clipping:
            # perpendicular offsets have dim-1 components: clip on chi^2 with dim-1 degrees of freedom
            k = dim - 1
            d2 = dist[idx] ** 2
            sigma2 = np.median(d2[sel]) / chi2.median(k)
            sel &= d2 <= sigma2 * chi2.ppf(math.erf(clip / math.sqrt(2.0)), k)
        use[idx] = sel
        ww = w[idx][sel]
        normal[:dim, :dim] += np.einsum("k,kij->ij", ww, proj[sel])
        rhs[:dim] -= np.einsum("k,kij,kj->i", ww, proj[sel], r[sel])
    return normal, rhs


def _band_corrections(
    shift: np.ndarray, normal: np.ndarray, w: np.ndarray, dist: np.ndarray, use: np.ndarray, *, absolute: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band corrections (g, r, i, z) from the colour shifts ``s = T dzp`` (without J: dzp_r = 0), and their covariance."""
    if absolute:
        dzp = np.linalg.solve(_T, shift)
    else:
        dzp = np.linalg.solve(np.vstack([_T[:3], [0, 1, 0, 0]]), np.concatenate([shift[:3], [0.0]]))
    sigma2 = float(np.sum(w[use] * dist[use] ** 2) / max(1, use.sum() - 4))
    cov_s = np.linalg.inv(normal + 1e-12 * np.eye(4)) * sigma2
    tinv = np.linalg.inv(_T)
    return dzp, tinv @ cov_s @ tinv.T


def _plane_scatter(loc: Locus, colours: np.ndarray, use: np.ndarray) -> dict[str, float]:
    out = {}
    for x, y in PLANES:
        ix, iy = COLOURS.index(x), COLOURS.index(y)
        pts = colours[:, [ix, iy]]
        sel = use & np.all(np.isfinite(pts), axis=1)
        if sel.sum() < 3:
            out[f"{x} vs {y}"] = math.nan
            continue
        curve = loc.curve((x, y))
        p, _t, _end = _nearest_on_polyline(cKDTree(curve), curve, pts[sel])
        d = np.sqrt(np.sum((pts[sel] - p) ** 2, axis=1))
        # signed distance is not defined on a curve: use the robust RMS of the unsigned one
        out[f"{x} vs {y}"] = float(math.sqrt(np.median(d * d) / 0.4549))
    return out


def plot_locus(result: LocusResult, path: str | Path, locus: Locus | None = None, title: str = "") -> Path:
    """Write the three colour planes (corrected star colours over the locus) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loc = locus or read_covey_locus()
    path = Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    try:
        for ax, (x, y) in zip(axes, PLANES, strict=True):
            ix, iy = COLOURS.index(x), COLOURS.index(y)
            c = result.colours
            ax.plot(c[~result.used, ix], c[~result.used, iy], ".", color="0.7", ms=2, label="not used")
            ax.plot(c[result.used, ix], c[result.used, iy], ".", color="C0", ms=2, label="used")
            ax.plot(loc.colours[x], loc.colours[y], "-", color="C3", lw=1.5, label="locus")
            key = f"{x} vs {y}"
            ax.set_title(f"{key}: scatter {result.scatter[key] * 1000:.0f} mmag", fontsize=10)
            ax.set_xlabel(x)
            ax.set_ylabel(y)
        axes[0].legend(fontsize=8, markerscale=3)
        zps = ", ".join(f"{b} {v:+.3f}" for b, v in result.zeropoints.items())
        fig.suptitle(title or f"stellar locus: {result.n_used} stars; dzp {zps}", fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
