"""Sky tilings: predefined grids and target-centred tiles, tile names, WCS, CCD-to-tile lookup.

A tiling is described in ``include/configs/tilings/<name>.yaml``::

    tiling:
      name: des-1deg
      kind: grid            # or: targets
      tile_size_deg: 1.05   # side of a square tile (grid)
      step_deg: 1.0         # spacing of tile centres in Dec; in RA about step/cos(Dec)
      pixel_scale: 0.263    # arcsec/pixel of the coadd
      targets: [...]        # kind=targets: {name, ra, dec, size_deg}

Grid rows sit at ``Dec = j * step``; each row holds ``n = ceil(360 cos(Dec) / step)``
tiles evenly spaced in RA (so the RA spacing is ``360/n <= step/cos(Dec)`` degrees
and neighbouring tiles overlap slightly: no gaps). Tile names: ``DEShhmm±ddmm`` for
the ``des-1deg`` tiling (as DES: ``DES0204-0500``), ``<tiling>-<ra:07.3f><dec:+07.3f>``
for other grids (e.g. ``demo-mini-030.150-00.200``), and the target's own name for
target tiles. Every name is a safe archive token (:func:`cosmodm_ops.model.validate_token`).

Typical use::

    tiling = load_tiling("des-1deg")
    tiles = tiling.tiles_touching(*ccd_corners(ccd_wcs, 2048, 4096))
    wcs = tiles[0].wcs()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from cosmodm_ops.config import ConfigError, config_dir, load_yaml
from cosmodm_ops.model import validate_token

__all__ = [
    "Tile",
    "Tiling",
    "TilingError",
    "ccd_corners",
    "des_tile_name",
    "load_tiling",
    "target_tile",
]


class TilingError(ValueError):
    """A tiling that cannot be used, or a tile name that does not belong to a tiling."""


@dataclass(frozen=True)
class Tile:
    """One square coadd tile.

    Attributes
    ----------
    name : str
        Tile name (a safe archive token).
    ra, dec : float
        Tile centre in degrees (ICRS).
    size_deg : float
        Side of the square tile in degrees.
    pixel_scale : float
        Coadd pixel scale in arcsec/pixel.
    tiling : str
        Name of the tiling the tile belongs to.
    """

    name: str
    ra: float
    dec: float
    size_deg: float
    pixel_scale: float
    tiling: str

    @property
    def npix(self) -> int:
        """Pixels along each side of the tile image (``ceil(size / scale)``)."""
        return math.ceil(self.size_deg * 3600.0 / self.pixel_scale)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (ny, nx) in pixels."""
        return (self.npix, self.npix)

    def wcs(self) -> WCS:
        """A TAN WCS centred on the tile: north up, east left, ``pixel_scale`` arcsec/pixel."""
        w = WCS(naxis=2)
        n = self.npix
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra, self.dec]
        w.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
        scale = self.pixel_scale / 3600.0
        w.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
        w.wcs.radesys = "ICRS"
        w.wcs.equinox = 2000.0
        w.pixel_shape = (n, n)
        w.wcs.set()
        return w

    def header(self) -> Any:
        """The tile WCS as an astropy FITS header, with NAXIS1/NAXIS2 (for SWarp ``.head`` files)."""
        hdr = self.wcs().to_header()
        hdr.insert(0, ("NAXIS", 2))
        hdr.insert(1, ("NAXIS1", self.npix))
        hdr.insert(2, ("NAXIS2", self.npix))
        hdr["TILENAME"] = self.name
        return hdr

    def contains(self, ra: np.ndarray | float, dec: np.ndarray | float) -> np.ndarray:
        """True where (ra, dec) (degrees) lies inside the tile's square in its tangent plane."""
        xi, eta, front = _gnomonic(np.asarray(ra, float), np.asarray(dec, float), self.ra, self.dec)
        h = self.size_deg / 2.0
        return front & (np.abs(xi) <= h) & (np.abs(eta) <= h)

    def overlaps(self, ra: Sequence[float], dec: Sequence[float]) -> bool:
        """Does the convex polygon with corners (ra, dec) (degrees, in order) overlap the tile?"""
        xi, eta, front = _gnomonic(np.asarray(ra, float), np.asarray(dec, float), self.ra, self.dec)
        if not np.all(front):
            return False
        h = self.size_deg / 2.0
        square = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        return _convex_overlap(np.column_stack([xi, eta]), square)


@dataclass(frozen=True)
class Tiling:
    """A set of tiles: a predefined grid (``kind='grid'``) or target-centred tiles (``kind='targets'``).

    Attributes
    ----------
    name : str
        Tiling name (``include/configs/tilings/<name>.yaml``).
    kind : str
        ``grid`` or ``targets``.
    pixel_scale : float
        Coadd pixel scale in arcsec/pixel.
    tile_size_deg, step_deg : float
        Grid only: tile side and centre spacing in degrees.
    targets : tuple of Tile
        Targets only: the tiles.
    """

    name: str
    kind: str
    pixel_scale: float
    tile_size_deg: float = 0.0
    step_deg: float = 0.0
    targets: tuple[Tile, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        validate_token("tiling.name", self.name)
        if self.kind not in ("grid", "targets"):
            msg = f"tiling {self.name!r}: kind must be 'grid' or 'targets', got {self.kind!r}"
            raise TilingError(msg)
        if self.pixel_scale <= 0:
            msg = f"tiling {self.name!r}: pixel_scale must be > 0 arcsec/pixel, got {self.pixel_scale}"
            raise TilingError(msg)
        if self.kind == "grid" and not (0 < self.step_deg <= self.tile_size_deg):
            msg = (
                f"tiling {self.name!r}: need 0 < step_deg <= tile_size_deg (else gaps), "
                f"got step {self.step_deg}, size {self.tile_size_deg}"
            )
            raise TilingError(msg)

    # -- grid geometry -------------------------------------------------------------------
    def _row_dec(self, j: int) -> float:
        return j * self.step_deg

    def _row_count(self, j: int) -> int:
        dec = self._row_dec(j)
        return max(1, math.ceil(360.0 * math.cos(math.radians(dec)) / self.step_deg - 1e-9))

    def _rows(self) -> range:
        jmax = math.floor(90.0 / self.step_deg + 1e-9)
        return range(-jmax, jmax + 1)

    def _grid_tile(self, j: int, k: int) -> Tile:
        n = self._row_count(j)
        ra = (k % n) * 360.0 / n
        dec = self._row_dec(j)
        return Tile(self._tile_name(ra, dec), ra, dec, self.tile_size_deg, self.pixel_scale, self.name)

    def _tile_name(self, ra: float, dec: float) -> str:
        if self.name == "des-1deg":
            return des_tile_name(ra, dec)
        dec = 0.0 if abs(dec) < 5e-4 else dec
        return validate_token("tile", f"{self.name}-{ra:07.3f}{dec:+07.3f}")

    # -- public API ----------------------------------------------------------------------
    def tiles(self) -> list[Tile]:
        """Every tile of the tiling (a 1-degree grid has about 41,000)."""
        if self.kind == "targets":
            return list(self.targets)
        return [self._grid_tile(j, k) for j in self._rows() for k in range(self._row_count(j))]

    def nearest(self, ra: float, dec: float) -> Tile:
        """The tile whose centre is nearest to (ra, dec) in degrees."""
        cands = self._candidates(np.array([ra]), np.array([dec]), margin=self.step_deg or 0.0)
        if not cands:
            msg = f"tiling {self.name!r}: no tile near RA={ra}, Dec={dec}"
            raise TilingError(msg)
        seps = [_separation(ra, dec, t.ra, t.dec) for t in cands]
        return cands[int(np.argmin(seps))]

    def tile(self, name: str) -> Tile:
        """The tile of this tiling called ``name``; :class:`TilingError` if there is none."""
        for t in self.targets:
            if t.name == name:
                return t
        if self.kind == "grid":
            ra, dec = _parse_tile_name(name, self.name)
            t = self.nearest(ra, dec)
            if t.name == name:
                return t
        msg = f"tile {name!r} is not in tiling {self.name!r}"
        raise TilingError(msg)

    def tiles_touching(self, ra: Sequence[float], dec: Sequence[float]) -> list[Tile]:
        """Tiles that a footprint touches.

        Parameters
        ----------
        ra, dec : sequence of float
            Corners of a convex footprint in degrees, in order around it (e.g. the 4
            corners of a CCD from :func:`ccd_corners`).

        Returns
        -------
        list of Tile
            The tiles whose square overlaps the footprint, sorted by name.
        """
        ra_a = np.asarray(ra, float) % 360.0
        dec_a = np.asarray(dec, float)
        hits = [t for t in self._candidates(ra_a, dec_a, margin=0.0) if t.overlaps(ra_a, dec_a)]
        return sorted(hits, key=lambda t: t.name)

    def _candidates(self, ra: np.ndarray, dec: np.ndarray, margin: float) -> list[Tile]:
        if self.kind == "targets":
            return list(self.targets)
        half = self.tile_size_deg / 2.0 * math.sqrt(2.0) + margin
        lo = max(-90.0, float(dec.min()) - half)
        hi = min(90.0, float(dec.max()) + half)
        jlo = math.floor(lo / self.step_deg)
        jhi = math.ceil(hi / self.step_deg)
        jmax = self._rows().stop - 1
        # RA span of the footprint about its first corner (handles the 0/360 wrap)
        d = (ra - ra[0] + 180.0) % 360.0 - 180.0
        ra_lo, ra_hi = ra[0] + d.min(), ra[0] + d.max()
        cos_min = max(math.cos(math.radians(min(89.9, max(abs(lo), abs(hi))))), 1e-3)
        out: list[Tile] = []
        for j in range(max(jlo, -jmax), min(jhi, jmax) + 1):
            n = self._row_count(j)
            pad = half / cos_min + self.step_deg / cos_min
            if pad * 2 + (ra_hi - ra_lo) >= 360.0 or n <= 3:
                ks = range(n)
            else:
                step = 360.0 / n
                ks = range(math.floor((ra_lo - pad) / step), math.ceil((ra_hi + pad) / step) + 1)
            seen: set[int] = set()
            for k in ks:
                if k % n not in seen:
                    seen.add(k % n)
                    out.append(self._grid_tile(j, k))
        return out


def des_tile_name(ra: float, dec: float) -> str:
    """DES-style tile name ``DEShhmm±ddmm`` from a centre in degrees (``DES0204-0500``)."""
    minutes = round((ra % 360.0) / 15.0 * 60.0) % (24 * 60)
    hh, mm = divmod(minutes, 60)
    arcmin = round(abs(dec) * 60.0)
    dd, dm = divmod(arcmin, 60)
    sign = "-" if dec < 0 and arcmin > 0 else "+"
    return f"DES{hh:02d}{mm:02d}{sign}{dd:02d}{dm:02d}"


def _parse_tile_name(name: str, tiling: str) -> tuple[float, float]:
    try:
        if tiling == "des-1deg" and name.startswith("DES") and len(name) == 12:
            ra = (int(name[3:5]) + int(name[5:7]) / 60.0) * 15.0
            dec = (int(name[8:10]) + int(name[10:12]) / 60.0) * (-1.0 if name[7] == "-" else 1.0)
            return ra, dec
        prefix = f"{tiling}-"
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return float(rest[:7]), float(rest[7:])
    except ValueError as err:
        msg = f"tile name {name!r} is not of tiling {tiling!r}"
        raise TilingError(msg) from err
    msg = f"tile name {name!r} is not of tiling {tiling!r}"
    raise TilingError(msg)


def target_tile(
    name: str, ra: float, dec: float, size_deg: float, pixel_scale: float, tiling: str = "targets"
) -> Tile:
    """A square tile of any size centred on a target (e.g. a galaxy-cluster candidate).

    Parameters
    ----------
    name : str
        Tile name; must be a safe token (letters, digits, ``._+-``).
    ra, dec : float
        Centre in degrees.
    size_deg : float
        Side in degrees (> 0).
    pixel_scale : float
        Arcsec/pixel.
    """
    validate_token("tile", name)
    if not (size_deg > 0) or not (-90.0 <= dec <= 90.0):
        msg = f"target tile {name!r}: need size_deg > 0 and -90 <= dec <= 90, got {size_deg}, {dec}"
        raise TilingError(msg)
    return Tile(name, float(ra) % 360.0, float(dec), float(size_deg), float(pixel_scale), tiling)


def load_tiling(name_or_path: str | Path) -> Tiling:
    """Load a tiling by name (``include/configs/tilings/<name>.yaml``) or from a YAML path.

    Raises
    ------
    cosmodm_ops.config.ConfigError
        The file is missing or a key is wrong (the message names the file and key).
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "tilings" / f"{name_or_path}.yaml"
    data = load_yaml(path)
    t = data.get("tiling")
    if not isinstance(t, dict):
        msg = f"{path}: expected a top-level 'tiling:' mapping"
        raise ConfigError(msg)
    try:
        name = str(t["name"])
        kind = str(t.get("kind", "grid"))
        scale = float(t["pixel_scale"])
        targets: tuple[Tile, ...] = ()
        if kind == "targets":
            targets = tuple(
                target_tile(
                    str(x["name"]), float(x["ra"]), float(x["dec"]), float(x["size_deg"]), scale, name
                )
                for x in t.get("targets", [])
            )
        return Tiling(
            name=name,
            kind=kind,
            pixel_scale=scale,
            tile_size_deg=float(t.get("tile_size_deg", 0.0)),
            step_deg=float(t.get("step_deg", 0.0)),
            targets=targets,
        )
    except KeyError as err:
        msg = f"{path}: tiling key {err.args[0]!r} is missing"
        raise ConfigError(msg) from err
    except (TypeError, ValueError) as err:
        msg = f"{path}: bad tiling: {err}"
        raise ConfigError(msg) from err


def ccd_corners(wcs: WCS, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Sky corners (RA, Dec in degrees, in order around the CCD) of an ``nx`` x ``ny`` image.

    Uses the outer pixel edges (0-based pixel -0.5 and n-0.5).
    """
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.asarray(ra) % 360.0, np.asarray(dec)


def _separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _gnomonic(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard coordinates (xi, eta) in degrees about (ra0, dec0); ``front`` is False behind the plane."""
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    front = cosc > 1e-6
    safe = np.where(front, cosc, 1.0)
    xi = np.cos(d) * np.sin(a - a0) / safe
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / safe
    return np.degrees(xi), np.degrees(eta), front


def _convex_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons given as (n, 2) arrays of vertices in order."""
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.column_stack([-edges[:, 1], edges[:, 0]])
        for nrm in normals:
            if not np.any(nrm):
                continue
            a, b = p @ nrm, q @ nrm
            if a.max() < b.min() or b.max() < a.min():
                return False
    return True
