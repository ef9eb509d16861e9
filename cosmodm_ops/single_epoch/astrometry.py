"""The exposure-level astrometry stage: SCAMP once over all CCDs against the reference catalog.

:func:`solve_exposure` selects the reference stars inside the CCDs' footprints
(:func:`footprint_refs`, pure), writes them and one multi-extension LDAC of the CCDs'
pass-1 catalogs (:func:`write_exposure_ldac`), runs SCAMP and splits its ``.head`` into one
header per CCD (:func:`split_head_blocks`, pure). When SCAMP cannot run or fails, the input
WCS is kept and the reason is returned (it goes into qa.json).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits as afits

from cosmodm_ops.astromatic import ToolError, scamp_args, write_reference_ldac
from cosmodm_ops.config import Config
from cosmodm_ops.single_epoch.accounting import StageClock
from cosmodm_ops.single_epoch.inputs import ExposureInfo

__all__ = ["MIN_SCAMP_REF_STARS", "footprint_refs", "solve_exposure", "split_head_blocks", "write_exposure_ldac"]

#: Fewer reference stars than this in the exposure's footprint: SCAMP is not run, the input WCS is kept.
MIN_SCAMP_REF_STARS = 20


def footprint_refs(ref: dict[str, Any], prep_ok: list[dict[str, Any]], margin_deg: float = 0.01) -> np.ndarray:
    """Boolean selection of reference stars inside the CCDs' footprints (WCS corners + margin).

    Parameters
    ----------
    ref : dict
        Reference catalog with ``ra``, ``dec`` (deg), shape (n,) each.
    prep_ok : list of dict
        Phase-A results with ``header`` (text) and ``shape`` (ny, nx).
    margin_deg : float
        Margin around each CCD's RA/Dec box (deg).
    """
    from astropy.wcs import WCS, FITSFixedWarning

    inside = np.zeros(len(ref["ra"]), bool)
    for p in prep_ok:
        hdr = afits.Header.fromstring(p["header"], sep="\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(hdr)
        ny, nx = int(p["shape"][0]), int(p["shape"][1])
        corners = w.all_pix2world([[0, 0], [nx, 0], [0, ny], [nx, ny]], 0)
        ra_c = corners[:, 0]
        dra = ((ref["ra"] - ra_c.mean() + 180) % 360) - 180
        half = ((ra_c - ra_c.mean() + 180) % 360 - 180)
        cosd = np.cos(np.deg2rad(corners[:, 1].mean()))
        inside |= (dra >= half.min() - margin_deg / cosd) & (dra <= half.max() + margin_deg / cosd) & \
            (ref["dec"] >= corners[:, 1].min() - margin_deg) & (ref["dec"] <= corners[:, 1].max() + margin_deg)
    return inside


def solve_exposure(work: Path, prep_ok: list[dict[str, Any]], ref: dict[str, Any], info: ExposureInfo,
                   cfg: Config, clock: StageClock) -> tuple[dict[int, str], str | None]:
    """SCAMP for the exposure; (CCDNUM -> path of its SCAMP header, reason the input WCS is kept or None)."""
    if not prep_ok:
        return {}, None
    inside = footprint_refs(ref, prep_ok)
    n_ref = int(inside.sum())
    if n_ref < MIN_SCAMP_REF_STARS:
        return {}, (f"only {n_ref} reference stars in the footprint (< {MIN_SCAMP_REF_STARS}): SCAMP not run, "
                    "the input WCS is kept")
    return _run_scamp(work, prep_ok, ref, inside, info, cfg, clock)


def write_exposure_ldac(path: Path, prep_ok: list[dict[str, Any]]) -> list[int]:
    """One LDAC catalog for the exposure from the CCDs' pass-1 catalogs; returns the CCDNUMs in its order.

    The CCDs' LDAC pairs (IMHEAD + OBJECTS) are concatenated in CCD order, byte for byte: a round
    trip through astropy pads the IMHEAD card strings with NULs, and SCAMP 2.10 segfaults on them.
    """
    ordered = sorted(prep_ok, key=lambda q: q["ccd"])
    with open(path, "wb") as out:
        for n, p in enumerate(ordered):
            with afits.open(p["pass1"]) as h:
                spans = [h.fileinfo(i) for i in range(len(h))]
            raw = Path(p["pass1"]).read_bytes()
            first = 0 if n == 0 else 1  # the primary HDU once, from the first catalog
            for info_i in spans[first:3]:
                assert info_i is not None
                out.write(raw[info_i["hdrLoc"]:info_i["datLoc"] + info_i["datSpan"]])
    return [p["ccd"] for p in ordered]


def split_head_blocks(text: str) -> list[str]:
    """A SCAMP ``.head`` file's text -> one header block per extension (each ending with ``END``)."""
    blocks, cur = [], []
    for line in text.splitlines():
        cur.append(line)
        if line.strip() == "END":
            blocks.append("\n".join(cur) + "\n")
            cur = []
    return blocks


def _run_scamp(work: Path, prep_ok: list[dict[str, Any]], ref: dict[str, Any], inside: np.ndarray,
               info: ExposureInfo, cfg: Config, clock: StageClock) -> tuple[dict[int, str], str | None]:
    """SCAMP over all CCDs of the exposure (one multi-extension LDAC); returns per-CCD .head paths."""
    refpath = work / "ref.ldac"
    epoch = 2000.0 + (info.mjd_obs - 51544.5) / 365.25
    mag = ref["mag"][inside] if ref["mag"] is not None else 18.0
    write_reference_ldac(refpath, ref["ra"][inside], ref["dec"][inside], ra_err_mas=ref["ra_err"][inside],
                         dec_err_mas=ref["dec_err"][inside], mag=mag, epoch=epoch)
    cat = work / f"exp{info.expnum}.ldac"
    order = write_exposure_ldac(cat, prep_ok)
    try:
        clock.tool(None, "scamp", scamp_args([cat], refpath, distort_degrees=cfg.single_epoch.scamp_distort_degrees),
                   cwd=work)
    except ToolError as err:
        return {}, f"SCAMP failed ({str(err).splitlines()[0][:200]}): the input WCS is kept"
    head = work / f"exp{info.expnum}.head"
    if not head.exists():
        return {}, "SCAMP wrote no .head: the input WCS is kept"
    text = head.read_bytes().decode("utf-8", errors="replace").encode("ascii", errors="ignore").decode()
    out: dict[int, str] = {}
    for ccd, block in zip(order, split_head_blocks(text), strict=False):
        path = work / f"ccd{ccd:02d}.scamp.head"
        path.write_text(block)
        out[ccd] = str(path)
    return out, None
