"""One simulated raw exposure, in memory: the camera's raw layout with its instrument signatures.

Signal model per CCD, trimmed frame (see ``../shared`` RAW_FORMAT contract; S = sky + objects
in photo-electrons, F the true response, L the illumination error, dome flat F x L, star flat L)::

    E   = Poisson(F x S) + bias_e (+ hot columns, cosmic rays)      # flat by F x L, x L -> S
    ADU = E / gain + overscan(row) + Normal(0, rn / gain) + crosstalk

Poisson noise is drawn as its normal limit (variance F x S; the sky alone gives hundreds of
electrons per pixel). ADU are clipped at the amplifier's saturation (above the overscan)
after charge beyond the full well bleeds along the column, and at [0, 65535].

Crosstalk is :meth:`cosmodm_ops.cameras.layout.CrosstalkCoeff.amount` of the source amplifier's
signal (ADU above overscan, saturated pixels at the saturation level): linear, and DECam's
polynomial above ``src_nl`` where the coefficient file has one. It is added in the trimmed
frame: mirrored columns when the two amplifiers have different names (always within a CCD),
same columns otherwise.

Random numbers come from ``numpy.random.default_rng([seed, expnum, ccdnum, ...])``, so the
result does not depend on the number of threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cosmodm_ops.cameras.layout import CcdInfo, FocalPlane, ccd_wcs_header
from cosmodm_ops.sim.instrument import CcdSignature
from cosmodm_ops.sim.objects import Catalog, tangent_plane
from cosmodm_ops.sim.render import render_sources

__all__ = ["FILTER_NAMES", "ExposureSpec", "fits_section", "simulate_exposure"]

#: DECam-style FILTER strings.
FILTER_NAMES = {
    "u": "u DECam c0006 3500.0 1000.0",
    "g": "g DECam SDSS c0001 4720.0 1520.0",
    "r": "r DECam SDSS c0002 6415.0 1480.0",
    "i": "i DECam SDSS c0003 7835.0 1470.0",
    "z": "z DECam SDSS c0004 9260.0 1520.0",
    "Y": "Y DECam c0005 10095.0 1130.0",
}


@dataclass(frozen=True)
class ExposureSpec:
    """What one exposure looks at and through (the plan's truth).

    Attributes
    ----------
    expnum : int
    band : str
    ra, dec : float
        True pointing (degrees): the tangent point of every CCD's true WCS.
    ra_header, dec_header : float
        Pointing written in the headers (true + the deliberate pointing error).
    fwhm_arcsec : float
        PSF FWHM at the centre of the focal plane (Moffat, beta ``beta``).
    beta : float
    zeropoint_nominal : float
        Survey 1-second zeropoint of the band (mag for 1 e-/s).
    extinction_mag : float
        Extra extinction (clouds, >= 0).
    sky_e : float
        Sky per pixel (electrons, before the flat).
    exptime, mjd_obs, airmass : float
    cloudy : bool
    overscan_offset_adu : float
        Exposure-to-exposure change of the bias level (ADU).
    """

    expnum: int
    band: str
    ra: float
    dec: float
    ra_header: float
    dec_header: float
    fwhm_arcsec: float
    beta: float
    zeropoint_nominal: float
    extinction_mag: float
    sky_e: float
    exptime: float
    mjd_obs: float
    airmass: float
    cloudy: bool
    overscan_offset_adu: float = 0.0

    @property
    def zeropoint(self) -> float:
        """Zeropoint including clouds (mag for 1 e-/s)."""
        return self.zeropoint_nominal - self.extinction_mag


def fits_section(cols: slice, rows: slice) -> str:
    """FITS 1-based section '[x1:x2,y1:y2]' of numpy slices."""
    return f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"


def _bleed(e: np.ndarray, full_well: np.ndarray) -> None:
    """Move charge above the full well along each column, half up and half down (in place)."""
    over = e > full_well[None, :]
    if not over.any():
        return
    ny = e.shape[0]
    for x in np.nonzero(over.any(axis=0))[0]:
        col = e[:, x]
        fw = float(full_well[x])
        rows = np.nonzero(col > fw)[0]
        excess = float(np.sum(col[rows] - fw))
        col[rows] = fw
        lo, hi = int(rows.min()), int(rows.max())
        up, down = excess / 2.0, excess / 2.0
        y = hi + 1
        while up > 0 and y < ny:
            room = fw - col[y]
            if room > 0:
                take = min(room, up)
                col[y] += take
                up -= take
            y += 1
        y = lo - 1
        while down > 0 and y >= 0:
            room = fw - col[y]
            if room > 0:
                take = min(room, down)
                col[y] += take
                down -= take
            y -= 1


def _cosmic_rays(e: np.ndarray, rng: np.random.Generator) -> None:
    ny, nx = e.shape
    n = int(rng.poisson(6.0 * nx * ny / (512 * 1024)))
    for _ in range(n):
        length = int(rng.integers(1, 14))
        ang = rng.uniform(0, math.pi)
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        t = np.arange(length)
        xs = np.clip((x0 + t * math.cos(ang)).astype(int), 0, nx - 1)
        ys = np.clip((y0 + t * math.sin(ang)).astype(int), 0, ny - 1)
        e[ys, xs] += rng.uniform(400.0, 4000.0, length).astype(np.float32)


def _pixel_positions(fp: FocalPlane, ccd: CcdInfo, xi: np.ndarray, eta: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """0-based trimmed pixel (x, y) of tangent-plane offsets (degrees) under the true WCS."""
    inv = np.linalg.inv(fp.cd_matrix(ccd))
    c1, c2 = fp.crpix(ccd)
    x = inv[0, 0] * xi + inv[0, 1] * eta + (c1 - 1.0)
    y = inv[1, 0] * xi + inv[1, 1] * eta + (c2 - 1.0)
    return x, y


def _ccd_signal(fp: FocalPlane, ccd: CcdInfo, spec: ExposureSpec, sig: CcdSignature, cat: Catalog,
                xi: np.ndarray, eta: np.ndarray, flux: np.ndarray, seed: int) -> np.ndarray:
    """Signal in ADU above the overscan (float32, trimmed frame), clipped at saturation, no crosstalk."""
    cam = fp.camera
    ny, nx = cam.ccd_ny, cam.ccd_nx
    half = nx // 2
    sec = fp.sections(ccd)
    amps = (ccd.amp_at(0, sec), ccd.amp_at(1, sec))
    rng = np.random.default_rng([seed, spec.expnum, ccd.ccdnum, 1])
    x, y = _pixel_positions(fp, ccd, xi, eta)
    m = 60
    near = (x > -m) & (x < nx + m) & (y > -m) & (y < ny + m)
    rho = math.hypot(*fp.offset_deg(ccd)) / max(fp.radius_deg(), 1e-9)
    fwhm_px = spec.fwhm_arcsec / cam.pixel_scale * (1.0 + 0.05 * rho * rho)
    s_img = render_sources(
        (ny, nx), x[near], y[near], flux[near], fwhm_px, spec.beta,
        r_half_px=cat.r_half[near] / cam.pixel_scale, q=cat.q[near], pa_deg=cat.pa[near],
    )
    s_img += np.float32(spec.sky_e)
    fs = s_img * sig.flat_true  # expected photo-electrons
    gain = np.empty(nx, np.float32)
    gain[:half], gain[half:] = amps[0].gain, amps[1].gain
    rn = np.empty(nx, np.float32)
    rn[:half], rn[half:] = amps[0].readnoise, amps[1].readnoise
    sat = np.empty(nx, np.float32)
    sat[:half], sat[half:] = amps[0].saturation, amps[1].saturation
    # noise: shot noise (normal limit of Poisson) and read noise in one draw
    z = rng.standard_normal((ny, nx), dtype=np.float32)
    z *= np.sqrt(np.maximum(fs, 0.0) + rn * rn)
    e = fs
    e += sig.bias_e
    for xcol, y0, y1, extra in sig.bad_columns:
        e[y0:y1, xcol] += np.float32(extra)
    _bleed(e, sat * gain)
    e += z
    _cosmic_rays(e, rng)
    e /= gain
    np.minimum(e, sat, out=e)
    return e


def _raw_ccd(fp: FocalPlane, ccd: CcdInfo, spec: ExposureSpec, amp_offsets_adu: tuple[float, float],
             signal: np.ndarray,
             xtalk_add: np.ndarray | None, seed: int) -> np.ndarray:
    """The raw CCD (uint16, raw shape) from its signal (ADU above overscan) and crosstalk (ADU)."""
    cam = fp.camera
    sec = fp.sections(ccd)
    amps = (ccd.amp_at(0, sec), ccd.amp_at(1, sec))
    half = cam.ccd_nx // 2
    ny_raw, nx_raw = sec.raw_shape
    rng = np.random.default_rng([seed, spec.expnum, ccd.ccdnum, 2])
    raw = np.empty((ny_raw, nx_raw), np.float32)
    row = np.arange(ny_raw, dtype=np.float32)
    phase = rng.uniform(0, 2 * math.pi, 2)
    col_sets = (
        slice(0, sec.data[0].stop),  # prescan | overscan | data of the left amplifier
        slice(sec.data[1].start, nx_raw),  # data | overscan | prescan of the right amplifier
    )
    for i, cols in enumerate(col_sets):
        level = (cam.bias_level_adu + amp_offsets_adu[i] + spec.overscan_offset_adu
                 + 2.5 * np.sin(2 * math.pi * 0.7 * row / ny_raw + phase[i])).astype(np.float32)
        width = cols.stop - cols.start
        block = rng.standard_normal((ny_raw, width), dtype=np.float32)
        block *= np.float32(amps[i].readnoise / amps[i].gain)
        block += level[:, None]
        raw[:, cols] = block
    data = signal if xtalk_add is None else signal + xtalk_add
    satmask = signal >= np.concatenate([np.full(half, amps[0].saturation, np.float32),
                                        np.full(half, amps[1].saturation, np.float32)])[None, :]
    region = raw[sec.rows, sec.data[0].start:sec.data[1].stop]
    # the data pixels already carry read noise from the signal: replace the noise block by the level
    for i in range(2):
        level = (cam.bias_level_adu + amp_offsets_adu[i] + spec.overscan_offset_adu
                 + 2.5 * np.sin(2 * math.pi * 0.7 * row[sec.rows] / ny_raw + phase[i])).astype(np.float32)
        part = slice(i * half, (i + 1) * half)
        region[:, part] = level[:, None] + np.where(satmask[:, part], signal[:, part], data[:, part])
    np.rint(raw, out=raw)
    np.clip(raw, 0, 65535, out=raw)
    return raw.astype(np.uint16)


def _ccd_header(fp: FocalPlane, ccd: CcdInfo, spec: ExposureSpec) -> dict[str, object]:
    cam = fp.camera
    sec = fp.sections(ccd)
    by_name = {n: i for i, n in enumerate(sec.amp_names)}
    a, b = by_name["A"], by_name["B"]
    trim = slice(sec.data[0].start, sec.data[1].stop)
    hdr: dict[str, object] = {
        "CCDNUM": (ccd.ccdnum, "CCD number"),
        "DETPOS": (ccd.name, "detector position"),
        "EXPNUM": spec.expnum,
        "BAND": spec.band,
        "GAINA": (ccd.amps["A"].gain, "e-/ADU, amplifier A"),
        "GAINB": (ccd.amps["B"].gain, "e-/ADU, amplifier B"),
        "RDNOISEA": (ccd.amps["A"].readnoise, "e-, amplifier A"),
        "RDNOISEB": (ccd.amps["B"].readnoise, "e-, amplifier B"),
        "SATURATA": (ccd.amps["A"].saturation, "ADU above overscan, amplifier A"),
        "SATURATB": (ccd.amps["B"].saturation, "ADU above overscan, amplifier B"),
        "DETSIZE": f"[1:{cam.ccd_nx},1:{cam.ccd_ny}]",
        "DATASEC": fits_section(trim, sec.rows),
        "TRIMSEC": fits_section(trim, sec.rows),
        "DATASECA": fits_section(sec.data[a], sec.rows),
        "DATASECB": fits_section(sec.data[b], sec.rows),
        "BIASSECA": fits_section(sec.overscan[a], sec.rows),
        "BIASSECB": fits_section(sec.overscan[b], sec.rows),
    }
    if cam.name == "megacam":
        hdr.update(_megacam_keys(sec, a, b))
    hdr.update(ccd_wcs_header(fp, ccd, spec.ra_header, spec.dec_header))
    return hdr


def _megacam_keys(sec, a: int, b: int) -> dict[str, object]:
    """CFHT Elixir's per-amplifier section keys of a MegaCam raw CCD (DSECn data, BSECn overscan, CSECn
    the amplifier's place in the trimmed CCD), beside the DATASEC/BIASSEC ones every camera gets."""
    out: dict[str, object] = {"AMPLIST": "ab", "BIASSEC": fits_section(sec.overscan[a], sec.rows)}
    for amp, k in (("A", a), ("B", b)):
        d = sec.data[k]
        c = slice(d.start - sec.data[0].start, d.stop - sec.data[0].start)
        out[f"DSEC{amp}"] = fits_section(d, sec.rows)
        out[f"BSEC{amp}"] = fits_section(sec.overscan[k], sec.rows)
        out[f"CSEC{amp}"] = fits_section(c, sec.rows)
    return out


def simulate_exposure(
    fp: FocalPlane,
    spec: ExposureSpec,
    catalog: Catalog,
    signature: Callable[[CcdInfo, str], CcdSignature],
    seed: int,
    threads: int = 2,
) -> list[tuple[str, np.ndarray, dict[str, object]]]:
    """Raw CCD images of one exposure, in camera-config order.

    Parameters
    ----------
    fp : FocalPlane
    spec : ExposureSpec
    catalog : Catalog
        The sky (only objects near the footprint matter).
    signature : callable (ccd, band) -> CcdSignature
        The instrument signatures (usually :func:`cosmodm_ops.sim.instrument.ccd_signature`, cached).
    seed : int
    threads : int
        Worker threads (numpy releases the GIL in the heavy steps).

    Returns
    -------
    list of (extname, data, header)
        ``data`` uint16 of the raw shape; ``header`` the per-CCD keywords (dict).
    """
    xi, eta = tangent_plane(catalog.ra, catalog.dec, spec.ra, spec.dec)
    r = fp.radius_deg() + 0.02
    near = np.isfinite(xi) & (np.abs(xi) < r) & (np.abs(eta) < r)
    cat = catalog.subset(near)
    xi, eta = xi[near], eta[near]
    mags = cat.mags[spec.band].astype(float)
    flux = spec.exptime * 10.0 ** (-0.4 * (mags - spec.zeropoint))

    offsets: dict[int, tuple[float, float]] = {}

    def pass1(ccd: CcdInfo) -> np.ndarray:
        sig = signature(ccd, spec.band)  # computed once per CCD (large cameras do not cache it)
        offsets[ccd.ccdnum] = sig.amp_offsets_adu
        return _ccd_signal(fp, ccd, spec, sig, cat, xi, eta, flux, seed)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        signals = dict(zip((c.ccdnum for c in fp.ccds), pool.map(pass1, fp.ccds)))
        half = fp.camera.ccd_nx // 2

        def amp_view(ccdnum: int, amp: str) -> np.ndarray:
            c = fp.ccd(ccdnum)
            i = fp.sections(c).amp_names.index(amp)
            return signals[ccdnum][:, i * half:(i + 1) * half]

        peaks: dict[tuple[int, str], float] = {}

        def peak(ccdnum: int, amp: str) -> float:
            if (ccdnum, amp) not in peaks:
                peaks[(ccdnum, amp)] = float(amp_view(ccdnum, amp).max())
            return peaks[(ccdnum, amp)]

        def pass2(ccd: CcdInfo) -> tuple[str, np.ndarray, dict[str, object]]:
            terms = fp.crosstalk_onto(ccd.ccdnum)
            add = None
            if terms:
                add = np.zeros_like(signals[ccd.ccdnum])
                names = fp.sections(ccd).amp_names
                for t in terms:
                    i = names.index(t.victim_amp)
                    src = amp_view(t.source_ccd, t.source_amp)
                    if t.mirrored:
                        src = src[:, ::-1]
                    part = add[:, i * half:(i + 1) * half]
                    part += np.float32(t.coeff) * src
                    if t.src_nl is not None and t.poly and peak(t.source_ccd, t.source_amp) > t.src_nl:
                        # DECam's non-linear regime (bright, mostly saturated source pixels)
                        hi = src > t.src_nl
                        s64 = src[hi].astype(np.float64)
                        part[hi] += (t.amount(s64) - t.coeff * s64).astype(np.float32)
            raw = _raw_ccd(fp, ccd, spec, offsets[ccd.ccdnum], signals[ccd.ccdnum], add, seed)
            return ccd.name, raw, _ccd_header(fp, ccd, spec)

        return list(pool.map(pass2, fp.ccds))
