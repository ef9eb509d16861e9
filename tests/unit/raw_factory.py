"""A seeded factory of tiny raw exposures in the simulator's raw format (RAW_FORMAT.md), with their truth.

A small decam-mini-like camera (4 CCDs of 128 x 160, the real layout rules: prescan, overscan,
postscan rows, flipped S CCDs, mirrored crosstalk within a CCD and 26A <- 25A across CCDs) so the
raw path can be checked pixel by pixel against a noiseless truth in milliseconds.

Signal model: ``E = Poisson(F x S) + bias`` (e-), flat file ``F x L``, star flat ``L``, so
``(E - bias) / (F L) x L = S``; raw ADU = ``E / gain + overscan(row) + N(0, rn/gain) + crosstalk``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from cosmodm_ops.config import CameraConfig, Config, load_config
from cosmodm_ops.single_epoch.raw import _sections, camera_ccds, crosstalk_signal, crosstalk_terms

NX, NY = 128, 160
SKY = 400.0
FWHM_PX = 4.0


def tiny_config(**camera_update: Any) -> Config:
    """decam-mini with small CCDs (and any camera field overridden)."""
    cfg = load_config("demo", camera="decam-mini")
    cam = cfg.camera.model_dump()
    cam.update(ccd_nx=NX, ccd_ny=NY, overscan=20, postscan_rows=10)
    cam.update(camera_update)
    return cfg.model_copy(update={"camera": CameraConfig.model_validate(cam)})


@dataclass
class TinyExposure:
    """Paths and truth of a factory exposure."""

    raw: Path
    calib: Path
    cfg: Config
    truth: dict[str, np.ndarray]  # EXTNAME -> S (e-, trimmed frame)
    flat_true: dict[str, np.ndarray]  # EXTNAME -> F
    bias: dict[str, np.ndarray]
    stars: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # (x, y, peak e-)


def _star(shape: tuple[int, int], x: float, y: float, peak: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sig = FWHM_PX / 2.3548
    return peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig**2))


def make_exposure(
    folder: Path,
    *,
    seed: int = 3,
    cfg: Config | None = None,
    crosstalk: bool = True,
    noise: bool = True,
    compress: bool = False,
    starflat: bool = True,
    band: str = "g",
    extra_stars: dict[str, list[tuple[float, float, float]]] | None = None,
    saturate: dict[str, tuple[float, float]] | None = None,
) -> TinyExposure:
    """Write ``folder/raw.fits[.fz]`` and ``folder/calib/`` for a tiny exposure; return paths and truth.

    The random draws do not depend on ``crosstalk``, so two calls that differ only by it give raw
    frames that differ only by the crosstalk (noise cancels in their difference).
    """
    cfg = cfg or tiny_config()
    cam = cfg.camera
    nx, ny = cam.ccd_nx, cam.ccd_ny
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    calib = folder / "calib"
    calib.mkdir(exist_ok=True)
    ccds = camera_ccds(cam)
    amps = {c.name: {a.name: a for a in c.amps} for c in cam.ccds}
    truth, flat_true, biases, stars_out = {}, {}, {}, {}
    signal_adu: dict[tuple[int, str], np.ndarray] = {}
    raws: dict[str, np.ndarray] = {}
    ovs_levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    calib_frames: dict[str, dict[str, np.ndarray]] = {"bias": {}, f"flat_{band}": {}, f"starflat_{band}": {},
                                                      "bpm": {}}
    yy, xx = np.mgrid[:ny, :nx]
    for name, num in ccds:
        sec = _sections(cam, name)
        s = np.full((ny, nx), SKY, np.float64)
        stars = [(rng.uniform(10, nx - 10), rng.uniform(10, ny - 10), rng.uniform(500, 20000)) for _ in range(6)]
        stars += (extra_stars or {}).get(name, [])
        for x, y, peak in stars:
            s += _star((ny, nx), x, y, peak)
        f_true = (1.0 + rng.normal(0, 0.02, (ny, nx))).astype(np.float64)
        illum = 1.0 + 0.04 * np.sin(xx / nx * 2.5 + num) * np.cos(yy / ny * 1.7)
        bias = (2.0 + rng.normal(0, 0.5, (ny, nx))).astype(np.float32)
        bpm = np.zeros((ny, nx), np.int32)
        bpm[:, 20 + num % 7] = 1
        e = rng.poisson(f_true * s) if noise else f_true * s
        e = e + bias
        ny_raw = sec.raw_shape[0]
        raw = np.zeros(sec.raw_shape, np.float64)
        levels = []
        for side in (0, 1):
            amp = amps[name][sec.amp_names[side]]
            lvl = 1500.0 + 3.0 * np.sin(np.arange(ny_raw) / 300.0 + side)
            half = e[:, side * nx // 2:(side + 1) * nx // 2] / amp.gain
            raw[:, sec.overscan[side]] = lvl[:, None]
            raw[:, sec.data[side]] = lvl[:, None]
            raw[sec.rows, sec.data[side]] += half
            signal_adu[(num, sec.amp_names[side])] = half
            levels.append(lvl)
        if noise:
            for side in (0, 1):
                amp = amps[name][sec.amp_names[side]]
                cols = slice(min(sec.overscan[side].start, sec.data[side].start),
                             max(sec.overscan[side].stop, sec.data[side].stop))
                raw[:, cols] += rng.normal(0, amp.readnoise / amp.gain, (ny_raw, cols.stop - cols.start))
        raws[name] = raw
        ovs_levels[name] = (levels[0], levels[1])
        truth[name], flat_true[name], biases[name], stars_out[name] = s.astype(np.float32), f_true, bias, stars
        calib_frames["bias"][name] = bias
        calib_frames[f"flat_{band}"][name] = (f_true * illum).astype(np.float32)
        calib_frames[f"starflat_{band}"][name] = illum.astype(np.float32)
        calib_frames["bpm"][name] = bpm
    if crosstalk:
        for t in crosstalk_terms(cam):
            vname = next(n for n, c in ccds if c == t.victim[0])
            vsec = _sections(cam, vname)
            src = signal_adu[t.source]
            if t.victim[1] != t.source[1]:
                src = src[:, ::-1]
            vside = vsec.amp_names.index(t.victim[1])
            raws[vname][vsec.rows, vsec.data[vside]] += crosstalk_signal(src, t)
    primary = {"CAMERA": cam.name, "INSTRUME": "DECam", "TELESCOP": "CTIO 4.0-m telescope", "OBSTYPE": "object",
               "OBJECT": "tiny", "EXPNUM": 901234, "FILTER": f"{band} DECam SDSS c0001 4720.0 1520.0", "BAND": band,
               "EXPTIME": 90.0, "MJD-OBS": 61000.1, "DATE-OBS": "2025-11-23T02:24:00", "NITE": "20251122",
               "RA": 10.0, "DEC": -30.0, "AIRMASS": 1.1, "SURVEY": "demo", "SIMULATE": True}
    raw_path = folder / ("raw.fits.fz" if compress else "raw.fits")
    with fitsio.FITS(str(raw_path), "rw", clobber=True) as f:
        f.write_image(None, header=[{"name": k, "value": v} for k, v in primary.items()])
        for i, (name, num) in enumerate(ccds):
            sec = _sections(cam, name)
            hdr: dict[str, Any] = {"CCDNUM": num, "DETPOS": name}
            for a in ("A", "B"):
                amp = amps[name][a]
                sat = (saturate or {}).get(name, (amp.saturation, amp.saturation))["AB".index(a)]
                hdr.update({f"GAIN{a}": amp.gain, f"RDNOISE{a}": amp.readnoise, f"SATURAT{a}": sat})
            hdr.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0 + 0.01 * i, "CRVAL2": -30.0,
                        "CRPIX1": nx / 2, "CRPIX2": ny / 2, "CD1_1": -7.3e-5, "CD1_2": 0.0, "CD2_1": 0.0,
                        "CD2_2": 7.3e-5, "EQUINOX": 2000.0, "RADESYS": "ICRS"})
            raw = raws[name]
            for side in (0, 1):
                a = sec.amp_names[side]
                lvl = ovs_levels[name][side]
                cols = sec.data[side]
                raw[:, cols] = np.minimum(raw[:, cols], (lvl + hdr[f"SATURAT{a}"])[:, None])
            data = np.clip(np.round(raw), 0, 65535).astype(np.uint16)
            recs = [{"name": k, "value": v} for k, v in hdr.items()]
            if compress:
                f.write_image(data, extname=name, header=recs, compress="RICE")
            else:
                f.write_image(data, extname=name, header=recs)
    for stem, frames in calib_frames.items():
        if stem.startswith("starflat") and not starflat:
            continue
        with fitsio.FITS(str(calib / f"{stem}.fits"), "rw", clobber=True) as f:
            f.write_image(None)
            for name, num in ccds:
                f.write_image(frames[name], extname=name, header=[{"name": "CCDNUM", "value": num}])
    return TinyExposure(raw=raw_path, calib=calib, cfg=cfg, truth=truth, flat_true=flat_true, bias=biases,
                        stars=stars_out)


def spec_for(exp: TinyExposure, extname: str, raw_path: Path | None = None) -> dict[str, Any]:
    """The worker spec that the runner would build for one CCD of a factory exposure."""
    from cosmodm_ops.single_epoch.raw import raw_exposure_plan

    hdus, info, primary, calib_inputs = raw_exposure_plan(exp.raw, exp.calib, exp.cfg)
    hdu = next(i for i, n in hdus if n == extname)
    num = next(c for n, c in camera_ccds(exp.cfg.camera) if n == extname)
    return {"raw": str(raw_path or exp.raw), "hdu": hdu, "extname": extname, "ccd": num, "band": info.band,
            "camera": exp.cfg.camera.model_dump(mode="json"), "calib": str(exp.calib),
            "calib_files": dict(calib_inputs), "exptime": info.exptime,
            "primary_header": primary.tostring(sep="\n")}
