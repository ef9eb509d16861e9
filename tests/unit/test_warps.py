"""PS1-like warps: the files the simulator writes, checked against the PS1 DR2 warp conventions, and ingest.

Reference: STScI's PS1 DR2 pages "Warps" and "PS1 Sky Tessellation" (outerspace.stsci.edu/display/PANSTARRS):
0.25"/pixel TAN projection, North up / East left, skycells of a projection cell share CRVAL; image + mask +
variance ('.wt') files; asinh-compressed pixels (BSOFTEN, BOFFSET); zeropoint FPA.ZP with EXPTIME.
"""

from __future__ import annotations

import math

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cameras.gpc1 import WarpError, read_warp
from cosmodm_ops.sim.clusters import BANDS, Objects
from cosmodm_ops.sim.warps import SkycellSpec, skycell_wcs, write_warp

pytestmark = pytest.mark.unit


def _stars(ra: np.ndarray, dec: np.ndarray, mag: float) -> Objects:
    n = len(ra)
    return Objects(ra, dec, {b: np.full(n, mag) for b in BANDS}, np.ones(n, bool), np.zeros(n),
                   np.full(n, -1), np.zeros(n, bool), np.zeros(n, bool))


def test_skycells_share_the_projection_cell() -> None:
    a, b = (skycell_wcs(SkycellSpec(1784, k, 150.0, 2.0)) for k in (44, 45))
    assert (a["CRVAL1"], a["CRVAL2"]) == (b["CRVAL1"], b["CRVAL2"]) == (150.0, 2.0)
    assert a["CRPIX1"] - b["CRPIX1"] == 6250 - 240 and a["CRPIX2"] == b["CRPIX2"]
    assert a["CD1_1"] == pytest.approx(-0.25 / 3600) and a["CD2_2"] == pytest.approx(0.25 / 3600)  # East left


def test_warp_files_and_ingest_against_truth(tmp_path) -> None:
    spec = SkycellSpec(1784, 55, 150.0, 2.0, size=300, overlap=20)
    from astropy.wcs import WCS

    w = WCS({**skycell_wcs(spec), "NAXIS": 2, "NAXIS1": 300, "NAXIS2": 300})
    xs, ys = np.array([60.0, 150.0, 240.0]), np.array([80.0, 150.0, 220.0])
    ra, dec = w.all_pix2world(xs, ys, 0)
    paths = write_warp(tmp_path, spec, "i", 123456, _stars(ra, dec, 19.0), gap_columns=(280, 290))
    assert paths["image"].name == "rings.v3.skycell.1784.055.wrp.i.123456.fits"
    assert {p.name.split(".wrp.i.123456")[1] for p in paths.values()} == {".fits", ".mask.fits", ".wt.fits"}
    hdr = fitsio.read_header(str(paths["image"]))
    for key in ("FPA.ZP", "FPA.EXPOSURE", "FPA.FILTERID", "EXPTIME", "BSOFTEN", "BOFFSET", "MJD-OBS"):
        assert key in hdr
    mhdr = fitsio.read_header(str(paths["mask"]))
    assert mhdr["MSKNAM03"].strip() == "BLANK" and mhdr["MSKVAL03"] == 8

    warp = read_warp(paths["image"])
    assert warp.band == "i" and warp.skycell == "skycell.1784.055"
    assert warp.magzero == pytest.approx(25.0 + 2.5 * math.log10(45.0))
    yy, xx = np.mgrid[0:300, 0:300]
    for x, y in zip(xs, ys, strict=True):
        ap = np.hypot(xx - x, yy - y) < 12
        flux = float(warp.image[ap].sum() - np.median(warp.image[:, :250]) * ap.sum())
        assert -2.5 * math.log10(flux) + warp.magzero == pytest.approx(19.0, abs=0.03)
    assert np.all(warp.weight[:, 280:290] == 0) and np.all(warp.mask[:, 280:290] == 1)  # BLANK -> BADPIX
    var = fitsio.read(str(paths["variance"]))
    assert warp.weight[10, 10] == pytest.approx(1.0 / var[10, 10], rel=1e-6)


def test_warp_missing_mask_file_is_named(tmp_path) -> None:
    spec = SkycellSpec(1784, 0, 150.0, 2.0, size=64, overlap=8)
    paths = write_warp(tmp_path, spec, "g", 1, _stars(np.array([150.0]), np.array([2.0]), 30.0))
    paths["mask"].unlink()
    with pytest.raises(WarpError, match="mask file .*mask.fits is missing"):
        read_warp(paths["image"])
