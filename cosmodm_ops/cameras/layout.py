"""The focal plane of a camera, from its config: CCDs, amplifiers, WCS and crosstalk.

A small camera (decam-mini) describes its CCDs inline (``camera.ccds``, ``camera.crosstalk``);
DECam reads the real obs_decam tables (``ccd_table``: chipcenters.txt, ``segment_table``:
segmentfile.txt, ``crosstalk_file``: DECam_xtalk_20130606.txt; ``real:`` paths resolve with
:func:`cosmodm_ops.config.resolve_data_path`). Everything here is pure: tables in, frozen
dataclasses out; :func:`focal_plane` caches the parse per camera config.

Conventions
-----------
- Focal-plane ``x_mm`` increases with RA offset and ``y_mm`` with Dec offset (the schema's
  convention); the trimmed-frame pixel axes run along them, so the CCD's CD matrix is
  ``pixel_scale x R(rotation)`` with a positive determinant (DECam's parity).
- Trimmed pixel (x, y) 0-based is numpy ``image[y, x]``, FITS pixel (x+1, y+1).
- Amplifier halves of the trimmed frame: index 0 = left (``CcdSections.amp_names[0]``),
  1 = right; DECam's S CCDs are flipped (left amplifier 'B').
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from cosmodm_ops.config import resolve_data_path
from cosmodm_ops.config.schema import CameraConfig
from cosmodm_ops.single_epoch.rawccd import CcdSections, ccd_sections

__all__ = [
    "AmpInfo",
    "CcdInfo",
    "CrosstalkCoeff",
    "FocalPlane",
    "LayoutError",
    "ccd_wcs",
    "ccd_wcs_header",
    "focal_plane",
    "read_ccd_table",
    "read_crosstalk_file",
    "read_segment_table",
]


class LayoutError(ValueError):
    """A camera table that cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class AmpInfo:
    """One amplifier's electronics: gain (e-/ADU), read noise (e-), saturation (ADU above overscan)."""

    name: str
    gain: float
    readnoise: float
    saturation: float


@dataclass(frozen=True)
class CcdInfo:
    """One science CCD.

    Attributes
    ----------
    name, ccdnum : str, int
        EXTNAME and CCDNUM.
    x_mm, y_mm : float
        Focal-plane centre (mm).
    rotation_deg : float
        Small rotation of the CCD on the focal plane (degrees, counter-clockwise).
    amps : dict of str to AmpInfo
        Electronics by amplifier name ('A', 'B').
    flipped : bool
        Read out flipped (DECam's S CCDs): left amplifier 'B', postscan rows first.
    """

    name: str
    ccdnum: int
    x_mm: float
    y_mm: float
    rotation_deg: float
    amps: dict[str, AmpInfo]
    flipped: bool

    def amp_at(self, index: int, sections: CcdSections) -> AmpInfo:
        """The amplifier of trimmed-frame half ``index`` (0 left, 1 right)."""
        return self.amps[sections.amp_names[index]]


@dataclass(frozen=True)
class CrosstalkCoeff:
    """Victim amplifier picks up ``coeff`` x source amplifier (ADU above overscan).

    DECam's file adds a non-linear regime: above ``src_nl`` ADU of source signal the
    crosstalk is ``poly[0] x src + poly[1] x src**2 + poly[2] x src**3`` instead
    (``src_nl`` is None and ``poly`` empty where the term is linear throughout).
    """

    victim_ccd: int
    victim_amp: str
    source_ccd: int
    source_amp: str
    coeff: float
    coeff_err: float = 0.0
    src_nl: float | None = None
    poly: tuple[float, ...] = ()

    @property
    def mirrored(self) -> bool:
        """Source columns couple mirrored (the two amplifiers read in opposite directions)."""
        return self.victim_amp != self.source_amp

    def amount(self, source_adu: np.ndarray) -> np.ndarray:
        """Crosstalk (ADU) added to the victim for a source signal (ADU above overscan)."""
        src = np.asarray(source_adu, dtype=np.float64)
        lin = self.coeff * src
        if self.src_nl is None or not self.poly:
            return lin
        nl = sum(p * src ** (k + 1) for k, p in enumerate(self.poly))
        return np.where(src > self.src_nl, nl, lin)


@dataclass(frozen=True)
class FocalPlane:
    """A camera's CCDs (config order) and crosstalk terms."""

    camera: CameraConfig
    ccds: tuple[CcdInfo, ...]
    crosstalk: tuple[CrosstalkCoeff, ...] = field(default=())

    def ccd(self, key: str | int) -> CcdInfo:
        """A CCD by name (EXTNAME) or CCDNUM."""
        for c in self.ccds:
            if c.name == key or c.ccdnum == key:
                return c
        msg = f"camera {self.camera.name}: no CCD {key!r} (has {', '.join(c.name for c in self.ccds)})"
        raise KeyError(msg)

    def sections(self, ccd: CcdInfo | str | int) -> CcdSections:
        """Raw sections of a CCD (:func:`cosmodm_ops.single_epoch.rawccd.ccd_sections`)."""
        c = ccd if isinstance(ccd, CcdInfo) else self.ccd(ccd)
        cam = self.camera
        return ccd_sections(cam.ccd_nx, cam.ccd_ny, cam.prescan, cam.overscan, cam.postscan_rows, c.flipped)

    def offset_deg(self, ccd: CcdInfo) -> tuple[float, float]:
        """Tangent-plane offset (xi, eta) of the CCD centre from the pointing, in degrees."""
        k = self.camera.pixel_scale / self.camera.pixel_size_mm / 3600.0
        return ccd.x_mm * k, ccd.y_mm * k

    def cd_matrix(self, ccd: CcdInfo) -> np.ndarray:
        """The CCD's CD matrix (degrees per pixel), shape (2, 2)."""
        s = self.camera.pixel_scale / 3600.0
        t = math.radians(ccd.rotation_deg)
        return s * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])

    def crpix(self, ccd: CcdInfo) -> tuple[float, float]:
        """FITS CRPIX1/2 (1-based) of the trimmed frame: the pixel of the tangent point."""
        cam = self.camera
        xi, eta = self.offset_deg(ccd)
        dx, dy = np.linalg.solve(self.cd_matrix(ccd), [xi, eta])
        return (cam.ccd_nx + 1) / 2.0 - float(dx), (cam.ccd_ny + 1) / 2.0 - float(dy)

    def radius_deg(self) -> float:
        """Radius (degrees) of a circle about the pointing that holds every CCD."""
        cam = self.camera
        half_diag = 0.5 * math.hypot(cam.ccd_nx, cam.ccd_ny) * cam.pixel_scale / 3600.0
        return max(math.hypot(*self.offset_deg(c)) for c in self.ccds) + half_diag

    def extent_deg(self) -> tuple[float, float]:
        """Full width in (xi, eta) of the focal plane (degrees)."""
        cam = self.camera
        s = cam.pixel_scale / 3600.0
        xs = [self.offset_deg(c)[0] for c in self.ccds]
        ys = [self.offset_deg(c)[1] for c in self.ccds]
        return max(xs) - min(xs) + cam.ccd_nx * s, max(ys) - min(ys) + cam.ccd_ny * s

    def crosstalk_onto(self, ccdnum: int) -> list[CrosstalkCoeff]:
        """The terms whose victim is on CCD ``ccdnum``."""
        return [t for t in self.crosstalk if t.victim_ccd == ccdnum]


def ccd_wcs_header(fp: FocalPlane, ccd: CcdInfo, ra: float, dec: float) -> dict[str, object]:
    """TAN WCS keywords of a CCD's trimmed frame for a pointing (``ra``, ``dec`` in degrees)."""
    cd = fp.cd_matrix(ccd)
    crpix1, crpix2 = fp.crpix(ccd)
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CRVAL1": float(ra % 360.0), "CRVAL2": float(dec),
        "CRPIX1": crpix1, "CRPIX2": crpix2,
        "CD1_1": float(cd[0, 0]) + 0.0, "CD1_2": float(cd[0, 1]) + 0.0,
        "CD2_1": float(cd[1, 0]) + 0.0, "CD2_2": float(cd[1, 1]) + 0.0,
        "EQUINOX": 2000.0, "RADESYS": "ICRS",
    }


def ccd_wcs(fp: FocalPlane, ccd: CcdInfo, ra: float, dec: float):  # -> astropy.wcs.WCS
    """The CCD's TAN WCS (astropy) for a pointing; pixel (0, 0) is the trimmed frame's first pixel."""
    from astropy.wcs import WCS

    hdr = ccd_wcs_header(fp, ccd, ra, dec)
    w = WCS(naxis=2)
    w.wcs.ctype = [hdr["CTYPE1"], hdr["CTYPE2"]]
    w.wcs.crval = [hdr["CRVAL1"], hdr["CRVAL2"]]
    w.wcs.crpix = [hdr["CRPIX1"], hdr["CRPIX2"]]
    w.wcs.cd = fp.cd_matrix(ccd)
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.wcs.set()
    return w


# --------------------------------------------------------------------------------------------- parsers

def _data_lines(path: Path, what: str) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as err:
        msg = f"{path}: {what} not found (set COSMODM_REAL_DATA, or fix the camera config path)"
        raise LayoutError(msg) from err
    return [(n, ln.split()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]


_SCIENCE_CCD = re.compile(r"^[NS]\d+$")


def read_ccd_table(path: str | Path) -> list[tuple[int, str, float, float, float]]:
    """Science CCDs of an obs_decam ``chipcenters.txt``: (ccdnum, name, x_mm, y_mm, rotation_deg).

    The file gives the CCD bounds (xmin, xmax, ymin, ymax in mm) and a rotation; the guide and
    focus CCDs (names not N<k>/S<k>) are left out.
    """
    p = Path(path)
    out = []
    for n, cols in _data_lines(p, "CCD table"):
        if cols[0].lower() == "ccdnum":
            continue
        if len(cols) != 7:
            msg = f"{p}:{n}: expected 7 columns (ccdnum ID xmin xmax ymin ymax rotcor), got {len(cols)}"
            raise LayoutError(msg)
        try:
            num, name = int(cols[0]), cols[1]
            xmin, xmax, ymin, ymax, rot = (float(v) for v in cols[2:])
        except ValueError as err:
            msg = f"{p}:{n}: unreadable number ({err})"
            raise LayoutError(msg) from err
        if _SCIENCE_CCD.match(name):
            out.append((num, name, 0.5 * (xmin + xmax), 0.5 * (ymin + ymax), rot))
    if not out:
        msg = f"{p}: no science CCD (N<k>/S<k>) rows"
        raise LayoutError(msg)
    return out


def read_segment_table(path: str | Path) -> dict[str, dict[str, AmpInfo]]:
    """Per-amplifier electronics of an obs_decam ``segmentfile.txt``: {ccd name: {amp: AmpInfo}}."""
    p = Path(path)
    out: dict[str, dict[str, AmpInfo]] = {}
    for n, cols in _data_lines(p, "segment table"):
        if cols[0].lower() == "chipid":
            continue
        if len(cols) != 10:
            msg = f"{p}:{n}: expected 10 columns (chipId chipName ampName nx ny xoff yoff gain sat readnoise)"
            raise LayoutError(msg)
        try:
            gain, sat, rn = float(cols[7]), float(cols[8]), float(cols[9])
        except ValueError as err:
            msg = f"{p}:{n}: unreadable number ({err})"
            raise LayoutError(msg) from err
        if gain <= 0 or sat <= 0 or rn < 0:
            msg = f"{p}:{n}: gain {gain}, saturation {sat}, read noise {rn}: expected gain, sat > 0, rn >= 0"
            raise LayoutError(msg)
        out.setdefault(cols[1], {})[cols[2]] = AmpInfo(cols[2], gain, rn, sat)
    return out


_AMP = re.compile(r"^(?:ccd)?(\d+)([AB])$", re.IGNORECASE)


def _parse_amp(token: str, where: str) -> tuple[int, str]:
    m = _AMP.match(token)
    if not m:
        msg = f"{where}: amplifier {token!r} is not '<ccdnum><A|B>' (e.g. 'ccd25A' or '25A')"
        raise LayoutError(msg)
    return int(m.group(1)), m.group(2).upper()


def read_crosstalk_file(path: str | Path) -> list[CrosstalkCoeff]:
    """Terms of a DECam crosstalk file (``victim source x x_err src_nl p1 p2 p3``).

    ``src_nl`` of 1e10 (or more) means linear throughout.
    """
    p = Path(path)
    out = []
    for n, cols in _data_lines(p, "crosstalk file"):
        if len(cols) < 3:
            msg = f"{p}:{n}: expected 'victim source coeff [err src_nl poly...]'"
            raise LayoutError(msg)
        vccd, vamp = _parse_amp(cols[0], f"{p}:{n}")
        sccd, samp = _parse_amp(cols[1], f"{p}:{n}")
        try:
            nums = [float(v) for v in cols[2:]]
        except ValueError as err:
            msg = f"{p}:{n}: unreadable number ({err})"
            raise LayoutError(msg) from err
        err_ = nums[1] if len(nums) > 1 else 0.0
        src_nl = nums[2] if len(nums) > 2 and nums[2] < 1e9 else None
        poly = tuple(nums[3:]) if src_nl is not None else ()
        out.append(CrosstalkCoeff(vccd, vamp, sccd, samp, nums[0], err_, src_nl, poly))
    return out


def _build(camera: CameraConfig) -> FocalPlane:
    default_amps = {
        a: AmpInfo(a, camera.default_gain, camera.default_readnoise, camera.default_saturation) for a in "AB"
    }

    def flipped(name: str) -> bool:
        return any(name.startswith(p) for p in camera.flipped_prefixes)

    ccds: list[CcdInfo] = []
    if camera.ccds:
        for c in camera.ccds:
            amps = dict(default_amps)
            amps.update({a.name: AmpInfo(a.name, a.gain, a.readnoise, a.saturation) for a in c.amps})
            ccds.append(CcdInfo(c.name, c.ccdnum, c.x_mm, c.y_mm, 0.0, amps, flipped(c.name)))
    else:
        assert camera.ccd_table is not None  # the schema guarantees one of the two
        table = read_ccd_table(resolve_data_path(camera.ccd_table))
        segments = read_segment_table(resolve_data_path(camera.segment_table)) if camera.segment_table else {}
        for num, name, x, y, rot in table:
            amps = dict(default_amps)
            amps.update(segments.get(name, {}))
            ccds.append(CcdInfo(name, num, x, y, rot, amps, flipped(name)))
    terms: list[CrosstalkCoeff] = []
    for t in camera.crosstalk:
        vccd, vamp = _parse_amp(t.victim, f"camera {camera.name} crosstalk victim")
        sccd, samp = _parse_amp(t.source, f"camera {camera.name} crosstalk source")
        terms.append(CrosstalkCoeff(vccd, vamp, sccd, samp, t.coeff))
    if camera.crosstalk_file:
        terms.extend(read_crosstalk_file(resolve_data_path(camera.crosstalk_file)))
    known = {c.ccdnum for c in ccds}
    terms = [t for t in terms if t.victim_ccd in known and t.source_ccd in known]
    return FocalPlane(camera, tuple(ccds), tuple(terms))


@lru_cache(maxsize=8)
def _cached(camera_json: str) -> FocalPlane:
    return _build(CameraConfig.model_validate_json(camera_json))


def focal_plane(camera: CameraConfig) -> FocalPlane:
    """The focal plane of a camera config (parsed once per distinct config).

    Raises
    ------
    LayoutError
        A table file is missing or malformed (the message names the file and line).
    """
    return _cached(camera.model_dump_json())
