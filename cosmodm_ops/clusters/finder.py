"""The red-sequence cluster finder: richness, significance and photometric redshift of one candidate.

``run(candidate, galaxies, footprint, config) -> ClusterResult`` is pure (arrays in, a result out).
For every redshift of a grid it counts the galaxies whose colours match the red sequence at that z:

- colour kernel ``k = N(w)**n exp(-chi2 / (2 w**2))`` with ``chi2`` summed over the n usable colours of
  the galaxy (MAG_DETMODEL colours, both magnitudes with error < ``max_colour_err``), each against the
  model colour at (z, m_i - m*_i) with variance ``sigma_meas**2 + sigma_int**2`` (the galaxy's own
  MAGERR_DETMODEL of both bands and the red sequence's intrinsic scatter: the same rule at the catalogue
  level, whose simulated errors are what its noise is, and at the image level, SExtractor's); the kernel
  is ``w = colour_width`` times wider than that scatter and ``N(w) = sqrt(1 + w**2) / w`` makes ``E[k] = 1``
  for a true member, so a sum of kernels is a member count;
- magnitude window ``m*_i(z) - 3 < m_i < min(m*_i(z) + 1.75, mag_limit)`` on MAG_AUTO;
- radial weight: an NFW-shaped filter (c = 4) inside ``R_ap`` = ``aperture_mpc`` at z, normalised to
  mean 1 over the disc (:func:`cosmodm_ops.clusters.profile.filter_weight`);

against the background density of the same statistic, from the tile (the footprint outside
``background_exclusion x R_ap``) or an annulus. The excess divided by the members' mean filter
weight (NFW within ``R_lambda(lambda)``, iterated) and the luminosity-function fraction the
magnitude limit keeps is the richness ``lambda(z)``; the excess over its noise is the
significance (noise: Poisson, of the background's expectation plus the aperture's own counts). z_phot is the peak of ``lambda(z)`` (parabola through the top three points); its
error the spread of the peak over bootstrap resamplings of the aperture's galaxies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cosmodm_ops.clusters.profile import filter_weight, member_filter_mean
from cosmodm_ops.clusters.redseq import (
    COLOURS,
    INTRINSIC_SCATTER,
    RICHNESS_DELTA_MAG,
    RedSequenceModel,
    angular_radius_deg,
    lf_fraction,
    r_lambda_mpc,
)

__all__ = ["Candidate", "ClusterResult", "FinderConfig", "Footprint", "run", "select_galaxies", "usable_colours"]


@dataclass(frozen=True)
class FinderConfig:
    """Settings of the finder (every field documented; defaults are the benchmark's)."""

    z_min: float = 0.04
    """Lowest redshift of the grid."""
    z_max: float = 0.85
    """Highest redshift of the grid (past the survey's 0.7 so a peak at 0.7 is not an edge)."""
    z_step: float = 0.005
    aperture_mpc: float = 1.0
    """Radius of the counting aperture (physical Mpc)."""
    bright_dm: float = -3.0
    """Brightest member counted, relative to m*_i(z)."""
    mag_limit: float | None = None
    """Completeness limit of the catalogue in i (MAG_AUTO); None: no limit below m* + 1.75."""
    max_colour_err: float = 0.5
    """A colour is used for a galaxy only when both magnitudes have MAGERR_DETMODEL below this."""
    colour_width: float = 1.5
    """Width of the colour kernel in units of the expected colour scatter of a member, ``sqrt(sigma_int**2 +
    err_a**2 + err_b**2)`` (errors: the catalogue's MAGERR_DETMODEL). 1 is the matched filter; wider makes a
    member's expected kernel (normalised to 1 for a member that follows the model) much less sensitive to
    colour offsets and to errors a catalogue understates, at some cost in contrast against the background."""
    spread_threshold: float = 0.005
    spread_nsigma: float = 5.0 / 3.0
    """Extended galaxies: ``spread_model + spread_nsigma x spreaderr_model > spread_threshold`` (DES Y1 'modest')."""
    compact_galaxies: bool = True
    """Also keep the compact galaxies 'modest' calls stars (:func:`select_galaxies`); False: 'modest' alone."""
    star_spread: float = 0.0011
    """SPREAD_MODEL of a bright star (image level: +0.0011 +- 0.0002 for i < 20, the PSF model's mismatch)."""
    star_spread_floor: float = 0.0003
    """Scatter of a bright star's SPREAD_MODEL beyond its SPREADERR_MODEL (image level, i < 20: NMAD 0.0002-0.0005)."""
    compact_nsigma: float = 3.0
    """Compact galaxies: ``spread_model > star_spread + compact_nsigma x hypot(spreaderr_model, star_spread_floor)``."""
    compact_mag_min: float = 20.5
    """Fainter than this (MAG_AUTO i), SPREAD_MODEL no longer separates compact galaxies from stars (image level:
    a galaxy's SPREAD_MODEL falls to ~0, even below, past i ~21): such an object is kept unless its colours put it
    on the stellar locus (:mod:`cosmodm_ops.clusters.starveto`)."""
    locus_width: float = 0.05
    """Width (mag) of the stellar locus added to the colour errors of the veto."""
    locus_max_err: float = 0.15
    """The veto uses a colour only when both MAGERR_DETMODEL are below this; it vetoes only objects whose g-r is
    usable (in r-i and i-z alone a red-sequence galaxy at z 0.2-0.7 lies within ~0.07 mag of the M-dwarf locus)."""
    background_exclusion: float = 1.5
    """Background excludes this many aperture radii around the candidate."""
    background_exclusion_max_deg: float | None = None
    """Cap (deg) of that exclusion radius: a small target tile (the image chain's) keeps a background ring at
    low z, where 1.5 R_ap is larger than the tile; members beyond the cap then count as background."""
    background_outer: float | None = None
    """Annulus outer radius in aperture radii; None: the whole tile outside the exclusion."""
    max_background: int = 20000
    """At most this many background galaxies (a seeded random subset; enough for a 1% density)."""
    min_significance: float = 5.0
    """Candidates at or above this significance are detected (then a person confirms)."""
    bcg_candidates: int = 3
    """With a prior radius, the second pass is centred on each of this many brightest member-like galaxies
    within it and keeps the most significant (a bright satellite can outshine the BCG; 1: the brightest)."""
    n_boot: int = 25
    seed: int = 0

    def z_grid(self) -> np.ndarray:
        return np.round(np.arange(self.z_min, self.z_max + 0.5 * self.z_step, self.z_step), 6)


@dataclass(frozen=True)
class Candidate:
    """A cluster candidate: name, position (deg) and an optional prior search radius (arcmin)."""

    name: str
    ra: float
    dec: float
    radius_arcmin: float | None = None


@dataclass(frozen=True)
class Footprint:
    """The catalogue's sky coverage as an RA/Dec box (degrees; RA may wrap through 0 when ra_min > ra_max)."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def contains(self, ra: float, dec: float) -> bool:
        return bool(_inside(self, np.asarray([ra % 360.0]), np.asarray([dec]))[0])

    def edge_distance_deg(self, ra: float, dec: float) -> float:
        """Distance (deg) from (ra, dec) to the nearest edge of the box (negative outside)."""
        c = math.cos(math.radians(dec))
        dra = min((ra - self.ra_min) % 360.0, (self.ra_max - ra) % 360.0) * c
        d = min(dra, dec - self.dec_min, self.dec_max - dec)
        return d if self.contains(ra, dec) else -abs(d)

    def area_deg2(self) -> float:
        width = (self.ra_max - self.ra_min) % 360.0
        s = math.sin(math.radians(self.dec_max)) - math.sin(math.radians(self.dec_min))
        return math.degrees(1.0) * width * s


@dataclass
class ClusterResult:
    """What the finder says about one candidate; curves have the grid's shape (nz,)."""

    name: str
    ra: float
    dec: float
    status: str
    """'ok', or 'no_coverage' (outside the catalogue) / 'no_galaxies'; ``message`` says more."""
    message: str = ""
    z_phot: float = float("nan")
    z_err: float = float("nan")
    richness: float = float("nan")
    richness_err: float = float("nan")
    significance: float = float("nan")
    detected: bool = False
    bcg_ra: float = float("nan")
    bcg_dec: float = float("nan")
    unused_colours: list[str] = field(default_factory=list)
    z_grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    richness_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    significance_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    member_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Rows of the galaxy table that are members at z_phot (inside R_ap, in the colour window)."""
    bcg_candidates: list[tuple[float, float]] = field(default_factory=list)
    """(ra, dec) of the brightest member-like galaxies within the BCG search radius, brightest first."""


def usable_colours(columns: set[str] | list[str]) -> tuple[list[str], list[str]]:
    """Colours whose two bands have MAG_DETMODEL columns, and those that have not (named)."""
    have = {c[len("mag_detmodel_"):] for c in columns if c.startswith("mag_detmodel_")}
    use = [f"{a}-{b}" for a, b in COLOURS if a in have and b in have]
    missing = [f"{a}-{b} (no {' or '.join(x for x in (a, b) if x not in have)} band)" for a, b in COLOURS
               if not (a in have and b in have)]
    return use, missing


def select_galaxies(catalog: np.ndarray, config: FinderConfig) -> np.ndarray:
    """Rows detected in i that are galaxies (a boolean mask): extended by SPREAD_MODEL (DES 'modest'), or compact.

    Compact (``config.compact_galaxies``): brighter than ``compact_mag_min``, SPREAD_MODEL significantly above a
    star's (``star_spread + compact_nsigma x hypot(spreaderr_model, star_spread_floor)``, so a threshold that falls
    with the error, i.e. with magnitude, from 0.005 to ~0.002); fainter, any object not vetoed by its colours: one
    whose g-r is usable and whose (g-r, r-i, i-z) lies on the stellar locus within its errors (chi2 below the 99%
    quantile, :func:`cosmodm_ops.clusters.starveto.locus_chi2`). Faint stars the veto cannot catch (no usable g)
    are as dense in the aperture as in the background and are subtracted with it.
    """
    sm = np.asarray(catalog["spread_model"], float)
    se = np.asarray(catalog["spreaderr_model"], float)
    mag = np.asarray(catalog["mag_auto_i"], float)
    extended = sm + config.spread_nsigma * se > config.spread_threshold
    if not config.compact_galaxies:
        return extended & (mag < 90)
    resolved = (mag <= config.compact_mag_min) & (
        sm > config.star_spread + config.compact_nsigma * np.hypot(se, config.star_spread_floor))
    from cosmodm_ops.clusters.starveto import chi2_quantile, has_gr, locus_chi2

    faint = ~extended & (mag > config.compact_mag_min) & (mag < 90)
    kept = faint.copy()
    ask = np.flatnonzero(faint & has_gr(catalog, config.locus_max_err))  # only they can be vetoed
    if len(ask):
        chi2, ncol = locus_chi2(catalog[ask], config.locus_width, config.locus_max_err)
        kept[ask] = chi2 >= chi2_quantile(ncol)
    return (extended | resolved | kept) & (mag < 90)


def _offsets(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    dra = ((ra - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0))
    return np.hypot(dra, dec - dec0)


def _kernel(gal: np.ndarray, colours: list[str], z: np.ndarray, config: FinderConfig,
            model: RedSequenceModel) -> np.ndarray:
    """Colour-and-magnitude kernel, shape (n_galaxies, nz)."""
    m_i = gal["mag_auto_i"].astype(float)[:, None]
    mstar = model.mstar(z)[None, :]
    dm = m_i - mstar
    mlim = mstar + RICHNESS_DELTA_MAG
    if config.mag_limit is not None:
        mlim = np.minimum(mlim, config.mag_limit)
    chi2 = np.zeros((len(gal), len(z)))
    ncol = np.zeros((len(gal), 1))
    for name in colours:
        a, b = name.split("-")
        ma, mb = gal[f"mag_detmodel_{a}"].astype(float), gal[f"mag_detmodel_{b}"].astype(float)
        ea, eb = gal[f"magerr_detmodel_{a}"].astype(float), gal[f"magerr_detmodel_{b}"].astype(float)
        ok = (ea < config.max_colour_err) & (eb < config.max_colour_err)
        var = ea**2 + eb**2 + INTRINSIC_SCATTER[name] ** 2
        diff = (ma - mb)[:, None] - model.colour(name, z)[None, :] - _slope(name) * dm
        chi2 += np.where(ok[:, None], diff**2 / var[:, None], 0.0)
        ncol[:, 0] += ok
    k = kernel_norm(config.colour_width) ** ncol * np.exp(-0.5 * chi2 / config.colour_width**2)
    return np.where((ncol > 0) & (dm > config.bright_dm) & (m_i < mlim), k, 0.0)


def kernel_norm(width: float) -> float:
    """Per-colour factor that makes ``E[k] = 1`` for a member whose colour scatters as expected (sigma): the
    kernel ``exp(-d**2 / (2 width**2 sigma**2))`` averages ``width / sqrt(1 + width**2)`` over d ~ N(0, sigma)."""
    return math.sqrt(1.0 + width**2) / width


def member_threshold(ncol: int, width: float) -> float:
    """Kernel value of a galaxy whose colour chi2 (n colours, against the expected scatter) is at its 95% quantile:
    above it a galaxy looks like a member. The same chi2 cut whatever the kernel's width."""
    return kernel_norm(width) ** ncol * math.exp(-0.5 * _chi2_95(max(ncol, 1)) / width**2)


def _slope(name: str) -> float:
    from cosmodm_ops.clusters.redseq import CMR_SLOPE

    return CMR_SLOPE[name]


def _disc_integrals(cand: Candidate, footprint: Footprint, radius: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Integrals of (1, w, w**2) over discs of the given radii (deg) inside the footprint; deg^2, shape (3, nz).

    w is the radial filter in units of each disc's radius. Exact for discs inside the box; Monte
    Carlo (20k points) for discs the box clips.
    """
    x = np.linspace(0.0, 1.0, 2001)[1:]
    w = filter_weight(x)
    means = np.array([1.0, 1.0, float(np.trapezoid(w**2 * 2 * x, x))])
    full = math.pi * radius**2
    out = means[:, None] * full[None, :]
    clipped = np.flatnonzero(radius > footprint.edge_distance_deg(cand.ra, cand.dec))
    if len(clipped):
        n = 20000
        rr, th = np.sqrt(rng.random(n)), rng.uniform(0, 2 * math.pi, n)
        wr = filter_weight(rr)
        for j in clipped:
            dec = cand.dec + rr * radius[j] * np.sin(th)
            ra = (cand.ra + rr * radius[j] * np.cos(th) / math.cos(math.radians(cand.dec))) % 360.0
            inside = _inside(footprint, ra, dec)
            out[:, j] = full[j] * np.array([inside.mean(), np.mean(wr * inside), np.mean(wr**2 * inside)])
    return out


def _inside(fp: Footprint, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    in_ra = (ra >= fp.ra_min) & (ra <= fp.ra_max) if fp.ra_min <= fp.ra_max else (ra >= fp.ra_min) | (ra <= fp.ra_max)
    return in_ra & (dec >= fp.dec_min) & (dec <= fp.dec_max)


def _background(gal: np.ndarray, dist: np.ndarray, cand: Candidate, r_ap: np.ndarray, colours: list[str],
                z: np.ndarray, footprint: Footprint, config: FinderConfig, model: RedSequenceModel,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background densities (deg^-2, shape (nz,)) of the kernel, of its square, and of member-like galaxies
    (kernel above :func:`member_threshold`)."""
    r_in = config.background_exclusion * r_ap
    if config.background_exclusion_max_deg is not None:
        r_in = np.minimum(r_in, config.background_exclusion_max_deg)
    r_out = None if config.background_outer is None else config.background_outer * r_ap
    far = dist > r_in.min() if r_out is None else (dist > r_in.min()) & (dist < r_out.max())
    idx = np.flatnonzero(far)
    frac = 1.0
    if len(idx) > config.max_background:
        frac = config.max_background / len(idx)
        idx = np.sort(rng.choice(idx, config.max_background, replace=False))
    k = _kernel(gal[idx], colours, z, config, model)
    d = dist[idx][:, None]
    sel = d > r_in[None, :]
    outer_area = footprint.area_deg2()
    if r_out is not None:
        sel &= d < r_out[None, :]
        outer_area = _disc_integrals(cand, footprint, r_out, rng)[0]
    area = np.maximum(outer_area - _disc_integrals(cand, footprint, r_in, rng)[0], 1e-6)
    n_gal = ((k > member_threshold(len(colours), config.colour_width)) & sel).sum(0) / frac / area
    return (k * sel).sum(0) / frac / area, (k**2 * sel).sum(0) / frac / area, n_gal


def _peak(z: np.ndarray, curve: np.ndarray) -> float:
    j = int(np.nanargmax(curve))
    if 0 < j < len(z) - 1:
        y0, y1, y2 = curve[j - 1 : j + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            return float(z[j] + 0.5 * (y0 - y2) / den * (z[1] - z[0]))
    return float(z[j])


def _curves(w: np.ndarray, k: np.ndarray, bkg: tuple[np.ndarray, np.ndarray, np.ndarray],
            disc: np.ndarray, z: np.ndarray, config: FinderConfig, model: RedSequenceModel, r_ap_mpc: float,
            ncol: int) -> tuple[np.ndarray, np.ndarray]:
    """Richness and significance against z, from weights w and kernels k of the aperture's galaxies.

    ``bkg``: the background densities of :func:`_background`; ``disc``: the aperture's integrals of
    (1, w, w**2) from :func:`_disc_integrals`; ``ncol``: the colours there are.
    """
    (bkg, bkg2, bkgn), (_area, iw, iw2) = bkg, disc
    excess = (w * k).sum(0) - bkg * iw
    # Poisson noise of the background's expectation plus one interloper at the filter's peak: where
    # the background is nearly empty (low z, bright m*) one galaxy is not a cluster (per-galaxy
    # k**2 of the member-like background galaxies; where there is none, of the aperture's)
    contrib = k > member_threshold(ncol, config.colour_width)
    k2_ap = (k**2 * contrib).sum(0) / np.maximum(contrib.sum(0), 1)
    k2_one = np.where(bkgn > 0, bkg2 / np.maximum(bkgn, 1e-9), k2_ap)
    one_more = k2_one * float(filter_weight(np.zeros(1))[0]) ** 2
    noise = np.sqrt(np.maximum(bkg2 * iw2 + one_more, 1e-12))
    mlim = model.mstar(z) + RICHNESS_DELTA_MAG
    if config.mag_limit is not None:
        mlim = np.minimum(mlim, config.mag_limit)
    flum = np.maximum(lf_fraction(mlim - model.mstar(z)), 1e-3)
    lam = excess / flum
    for _ in range(3):  # members spread within R_lambda(lambda): iterate the mean filter weight
        ratio = np.round(r_lambda_mpc(np.maximum(lam, 1.0)) / r_ap_mpc, 2)
        fmem = np.array([member_filter_mean(float(r)) for r in ratio])
        lam = excess / (fmem * flum)
    return lam, excess / noise


def run(cand: Candidate, galaxies: np.ndarray, footprint: Footprint, config: FinderConfig | None = None,
        model: RedSequenceModel | None = None) -> ClusterResult:
    """Find the red-sequence peak of one candidate among ``galaxies`` (already selected: :func:`select_galaxies`).

    With a prior radius, a second pass is centred on each of the ``bcg_candidates`` brightest member-like
    galaxies within that radius of the candidate and the most significant is kept (SZ positions are
    uncertain by arcminutes; the red sequence is not; a bright satellite can outshine the BCG).

    Parameters
    ----------
    cand : Candidate
    galaxies : structured ndarray, shape (n,)
        ``ra``, ``dec`` (deg), ``mag_auto_i``, ``mag_detmodel_<b>`` and ``magerr_detmodel_<b>`` for the bands there are.
    footprint : Footprint
        Where the catalogue covers the sky (areas for the background and clipped apertures).
    """
    config = config or FinderConfig()
    model = model or RedSequenceModel()
    colours, missing = usable_colours(galaxies.dtype.names or [])
    base = ClusterResult(cand.name, cand.ra, cand.dec, "ok", unused_colours=missing)
    if not footprint.contains(cand.ra, cand.dec) or len(galaxies) == 0:
        base.status, base.message = "no_coverage", "candidate outside the catalogue's footprint"
        return base
    if not colours:
        base.status, base.message = "no_colours", f"no usable colour: {'; '.join(missing)}"
        return base
    result = _one_pass(cand, cand.ra, cand.dec, galaxies, footprint, colours, missing, config, model,
                       cand.radius_arcmin)
    best = None
    for ra0, dec0 in result.bcg_candidates if cand.radius_arcmin else []:
        second = _one_pass(cand, ra0, dec0, galaxies, footprint, colours, missing, config, model, None,
                           exclude_centre=True)
        second.bcg_ra, second.bcg_dec = ra0, dec0
        if best is None or second.significance > best.significance:
            best = second
    return best or result


def _one_pass(cand: Candidate, ra0: float, dec0: float, galaxies: np.ndarray, footprint: Footprint,
              colours: list[str], missing: list[str], config: FinderConfig, model: RedSequenceModel,
              bcg_radius_arcmin: float | None, exclude_centre: bool = False) -> ClusterResult:
    """One pass of the finder about (ra0, dec0).

    ``exclude_centre``: the pass is centred on a galaxy chosen for being bright and red; that galaxy
    is left out of the counts (else the choice itself makes a signal: a null candidate would show a
    peak at the colour of its brightest galaxy) and added back to the richness as the BCG.
    """
    centre = Candidate(cand.name, ra0, dec0)
    rng = np.random.default_rng(config.seed)
    z = config.z_grid()
    r_ap = angular_radius_deg(config.aperture_mpc, z)
    dist = _offsets(galaxies["ra"], galaxies["dec"], ra0, dec0)
    bkg, bkg2, bkgn = _background(galaxies, dist, centre, r_ap, colours, z, footprint, config, model, rng)
    disc = _disc_integrals(centre, footprint, r_ap, rng)
    near = np.flatnonzero((dist < r_ap.max()) & ~(exclude_centre & (dist < 1e-7)))
    w = filter_weight(dist[near][:, None] / r_ap[None, :])
    k = _kernel(galaxies[near], colours, z, config, model)
    lam, sig = _curves(w, k, (bkg, bkg2, bkgn), disc, z, config, model, config.aperture_mpc, len(colours))
    lam = lam + (1.0 if exclude_centre else 0.0)
    z_phot = _peak(z, lam)
    counts = rng.multinomial(len(near), np.full(len(near), 1.0 / max(len(near), 1)), size=config.n_boot)
    boot = [(_peak(z, c @ (w * k) - bkg * disc[1])) for c in counts] if len(near) else [z_phot]
    j = int(np.argmin(np.abs(z - z_phot)))
    result = ClusterResult(
        cand.name, cand.ra, cand.dec, "ok", z_phot=z_phot, z_err=float(np.std(boot)),
        richness=float(lam[j]), richness_err=float(lam[j] / max(sig[j], 1e-6)), significance=float(sig[j]),
        detected=bool(sig[j] >= config.min_significance), unused_colours=missing, z_grid=z,
        richness_curve=lam, significance_curve=sig)
    bcg_r = 0.5 * r_ap[j] if bcg_radius_arcmin is None else bcg_radius_arcmin / 60.0
    _members_and_bcg(result, galaxies, near, dist, k[:, j], r_ap[j], bcg_r, len(colours), config.colour_width,
                     config.bcg_candidates)
    return result


#: chi2 quantile 0.95 for 1-4 degrees of freedom (scipy.stats.chi2.ppf(0.95, n); a one-candidate job then
#: does not import scipy.stats, about 1-3 core-s).
_CHI2_95 = {1: 3.841458820694124, 2: 5.991464547107979, 3: 7.814727903251178, 4: 9.487729036781154}


def _chi2_95(n: int) -> float:
    if n in _CHI2_95:
        return _CHI2_95[n]
    from scipy.stats import chi2

    return float(chi2.ppf(0.95, n))


def _members_and_bcg(result: ClusterResult, galaxies: np.ndarray, near: np.ndarray, dist: np.ndarray,
                     k: np.ndarray, r_ap: float, bcg_r: float, ncol: int, width: float = 1.0, n_bcg: int = 1) -> None:
    """Members at z_phot: inside R_ap with a colour chi2 below its 95% quantile (the kernel above its value
    there); BCG candidates: the ``n_bcg`` brightest of them within bcg_r (the BCG: the first)."""
    thresh = member_threshold(ncol, width)
    inside = dist[near] < r_ap
    mem = near[inside & (k > thresh)]
    result.member_index = mem
    core = near[(dist[near] < bcg_r) & (k > thresh)]
    if len(core):
        ranked = core[np.argsort(galaxies["mag_auto_i"][core], kind="stable")]
        result.bcg_candidates = [(float(galaxies["ra"][b]), float(galaxies["dec"][b])) for b in ranked[:n_bcg]]
        result.bcg_ra, result.bcg_dec = result.bcg_candidates[0]
