"""The red-sequence model shared by the cluster simulator and the cluster finder.

A passively evolving early-type population: colours in PS1 ``g-r, r-i, i-z, z-y`` (AB) and the
characteristic magnitude ``m*_i`` against redshift, tabulated in :data:`RED_SEQUENCE_TABLE` and
interpolated linearly in z.

Source of the table (read this before using it for science)
----------------------------------------------------------
The numbers describe a single-burst stellar population formed at ``z_f = 3`` with solar metallicity
(Bruzual & Charlot 2003 SSP, Chabrier IMF) observed through the PS1 grizy passbands, in a flat
LambdaCDM cosmology (H0 = 70, Om = 0.3). They are a smoothed approximation, written for this
project, of the model tracks used by red-sequence finders (e.g. the BC03 z_f = 3 model behind
redMaPPer's initial colours, Rykoff et al. 2014, ApJ 785, 104; and the PS1 Planck follow-up,
Liu et al. 2015, MNRAS 449, 3370): g-r rises steeply as the 4000 A break crosses from g to r
(z ~ 0.05-0.4) and flattens above z ~ 0.45, where r-i, then i-z, take over. They are *not* a
direct transcription of a published table and are good to about 0.05 mag: enough for a
simulator and a finder that share them (the benchmark tests the machinery, not the model), not
for absolute redshifts of real clusters. For real data, replace the table (same columns) with one
computed by EzGal or FSPS for the survey's passbands, or calibrated on spectroscopic clusters.

``m*_i`` follows the same population normalised to M*_i = -21.4 at z = 0.1 (distance modulus
plus k- and e-corrections); the colour-magnitude relation has a small slope per colour
(:data:`CMR_SLOPE`, mag of colour per mag of i) and intrinsic scatter (:data:`INTRINSIC_SCATTER`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "BANDS",
    "CMR_SLOPE",
    "COLOURS",
    "INTRINSIC_SCATTER",
    "LF_ALPHA",
    "RED_SEQUENCE_TABLE",
    "RICHNESS_DELTA_MAG",
    "RedSequenceModel",
    "angular_radius_deg",
    "lf_fraction",
    "r_lambda_mpc",
]

BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")
"""PS1 bands, blue to red; colours are adjacent pairs."""
COLOURS: tuple[tuple[str, str], ...] = (("g", "r"), ("r", "i"), ("i", "z"), ("z", "y"))

#: z, g-r, r-i, i-z, z-y, m*_i  (see the module docstring for what these numbers are)
RED_SEQUENCE_TABLE: tuple[tuple[float, float, float, float, float, float], ...] = (
    (0.02, 0.74, 0.36, 0.19, 0.09, 13.60),
    (0.05, 0.78, 0.37, 0.20, 0.09, 15.30),
    (0.10, 0.88, 0.39, 0.21, 0.10, 16.80),
    (0.15, 1.00, 0.41, 0.22, 0.10, 17.60),
    (0.20, 1.13, 0.44, 0.24, 0.11, 18.20),
    (0.25, 1.27, 0.47, 0.26, 0.11, 18.65),
    (0.30, 1.41, 0.51, 0.28, 0.12, 19.00),
    (0.35, 1.54, 0.56, 0.30, 0.13, 19.30),
    (0.40, 1.64, 0.63, 0.32, 0.14, 19.60),
    (0.45, 1.71, 0.71, 0.35, 0.15, 19.90),
    (0.50, 1.76, 0.80, 0.38, 0.16, 20.15),
    (0.55, 1.80, 0.89, 0.42, 0.17, 20.40),
    (0.60, 1.83, 0.98, 0.46, 0.19, 20.65),
    (0.65, 1.85, 1.06, 0.51, 0.21, 20.85),
    (0.70, 1.87, 1.13, 0.57, 0.23, 21.05),
    (0.75, 1.88, 1.19, 0.63, 0.26, 21.25),
    (0.80, 1.89, 1.24, 0.69, 0.29, 21.40),
    (0.85, 1.90, 1.28, 0.74, 0.33, 21.55),
    (0.90, 1.91, 1.31, 0.78, 0.37, 21.70),
)
CMR_SLOPE: dict[str, float] = {"g-r": -0.030, "r-i": -0.012, "i-z": -0.008, "z-y": -0.005}
"""d(colour)/d(m_i - m*_i): brighter members are redder."""
INTRINSIC_SCATTER: dict[str, float] = {"g-r": 0.040, "r-i": 0.030, "i-z": 0.030, "z-y": 0.030}
"""Intrinsic colour scatter of the red sequence (mag)."""
LF_ALPHA = -1.0
"""Faint-end slope of the red-sequence Schechter luminosity function."""
RICHNESS_DELTA_MAG = 1.75
"""Richness counts red-sequence members brighter than m*_i + 1.75 (0.2 L*)."""


@dataclass(frozen=True)
class RedSequenceModel:
    """Red-sequence colours and m* against redshift (linear interpolation in the table).

    Every method takes z as a float or an array of shape (n,) and returns the same shape.
    """

    table: tuple[tuple[float, ...], ...] = RED_SEQUENCE_TABLE

    @property
    def z_range(self) -> tuple[float, float]:
        return self.table[0][0], self.table[-1][0]

    def _column(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(self.table, float)
        return arr[:, 0], arr[:, k]

    def colour(self, name: str, z: float | np.ndarray, dm: float | np.ndarray = 0.0) -> np.ndarray:
        """Model colour ``name`` ('g-r', ...) at redshift z for a member ``dm = m_i - m*_i`` fainter than m*."""
        k = 1 + [f"{a}-{b}" for a, b in COLOURS].index(name)
        zz, cc = self._column(k)
        return np.interp(z, zz, cc) + CMR_SLOPE[name] * np.asarray(dm)

    def mstar(self, z: float | np.ndarray) -> np.ndarray:
        """Characteristic i magnitude m*_i(z) (AB)."""
        zz, mm = self._column(5)
        return np.interp(z, zz, mm)

    def magnitudes(self, z: float, m_i: np.ndarray) -> dict[str, np.ndarray]:
        """grizy magnitudes of red-sequence galaxies of i magnitude ``m_i`` at z (no scatter)."""
        dm = m_i - self.mstar(z)
        gr, ri, iz, zy = (self.colour(c, z, dm) for c in ("g-r", "r-i", "i-z", "z-y"))
        return {"i": m_i, "r": m_i + ri, "g": m_i + ri + gr, "z": m_i - iz, "y": m_i - iz - zy}


def lf_fraction(delta_lim: float | np.ndarray, alpha: float = LF_ALPHA,
                delta_ref: float = RICHNESS_DELTA_MAG, bright: float = -3.0) -> np.ndarray:
    """Fraction of the members brighter than ``m* + delta_ref`` that are brighter than ``m* + delta_lim``.

    Schechter function in magnitudes, integrated numerically from ``m* + bright``. 1 when
    ``delta_lim >= delta_ref`` (the catalogue reaches the richness limit).
    """
    grid = np.linspace(bright, max(delta_ref, 3.0), 1201)
    x = 10.0 ** (-0.4 * grid)
    phi = x ** (alpha + 1.0) * np.exp(-x)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (phi[1:] + phi[:-1]) * np.diff(grid))])
    ref = np.interp(delta_ref, grid, cum)
    return np.clip(np.interp(np.minimum(delta_lim, delta_ref), grid, cum) / ref, 0.0, 1.0)


#: Speed of light (km/s), and the flat LCDM of the model: H0 (km/s/Mpc), Omega_m (no radiation, as astropy's
#: ``FlatLambdaCDM(H0=70, Om0=0.3)``).
_C_KM_S, _H0, _OM = 299792.458, 70.0, 0.3


@lru_cache(maxsize=1)
def _da_table() -> tuple[np.ndarray, np.ndarray]:
    """Angular diameter distance (Mpc) on a z grid, by the trapezoid rule on 1/E(z) (agrees with astropy's
    ``FlatLambdaCDM(H0=70, Om0=0.3)`` to 1e-6 relative; numpy only, so a one-candidate job does not pay
    the 3-4 core-s import of ``astropy.cosmology``)."""
    fine = np.linspace(0.0, 2.0, 40001)
    inv_e = 1.0 / np.sqrt(_OM * (1.0 + fine) ** 3 + (1.0 - _OM))
    dc = _C_KM_S / _H0 * np.concatenate([[0.0], np.cumsum(0.5 * (inv_e[1:] + inv_e[:-1]) * np.diff(fine))])
    z = np.linspace(0.001, 2.0, 2000)
    return z, np.interp(z, fine, dc) / (1.0 + z)


def angular_radius_deg(radius_mpc: float, z: float | np.ndarray) -> np.ndarray:
    """Angle (degrees) of a physical radius (Mpc) at redshift z (flat LCDM, H0 70, Om 0.3); shape of z."""
    zz, da = _da_table()
    return np.degrees(radius_mpc / np.interp(z, zz, da))


def r_lambda_mpc(richness: float | np.ndarray) -> np.ndarray:
    """Cluster radius (Mpc) that scales with richness: 1.0 (lambda / 100)**0.2 (redMaPPer's R_lambda form)."""
    return 1.0 * (np.maximum(np.asarray(richness, float), 1.0) / 100.0) ** 0.2

