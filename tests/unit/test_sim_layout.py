"""Focal-plane layout: the real DECam tables, the inline decam-mini camera, WCS, crosstalk terms."""

from __future__ import annotations

import numpy as np
import pytest

from cosmodm_ops.cameras import layout as L
from cosmodm_ops.config import load_config
from tests.support import real_file


@pytest.fixture(scope="module")
def decam() -> L.FocalPlane:
    real_file("obs_decam/chipcenters.txt")
    return L.focal_plane(load_config("des", camera="decam").camera)


@pytest.fixture(scope="module")
def mini() -> L.FocalPlane:
    return L.focal_plane(load_config("demo", camera="decam-mini").camera)


def test_decam_ccds_amps_and_crosstalk_from_the_real_tables(decam: L.FocalPlane) -> None:
    names = {c.name for c in decam.ccds}
    assert len(decam.ccds) == 62
    assert names == {f"N{k}" for k in range(1, 32)} | {f"S{k}" for k in range(1, 32)}
    s29 = decam.ccd("S29")
    assert s29.ccdnum == 1 and s29.flipped
    assert s29.amps["A"] == L.AmpInfo("A", 4.039, 6.139, 38652.0)  # segmentfile.txt line 2
    assert s29.x_mm == pytest.approx((-200.952 - 170.232) / 2)
    assert not decam.ccd("N4").flipped and decam.ccd(35).name == "N4"
    # 249 rows, all among the 62 science CCDs
    assert len(decam.crosstalk) == 249
    t = next(t for t in decam.crosstalk if (t.victim_ccd, t.victim_amp, t.source_ccd, t.source_amp) == (25, "B", 25, "A"))
    assert t.coeff == pytest.approx(1.34e-4) and t.src_nl == pytest.approx(4.078154e4)
    assert t.poly == pytest.approx((1.537540e-04, -6.980507e-08, 5.963848e-12)) and t.mirrored
    lin = next(t for t in decam.crosstalk if (t.victim_ccd, t.source_ccd, t.source_amp) == (26, 25, "A"))
    assert lin.src_nl is None and lin.poly == ()
    assert lin.amount(np.array([1000.0]))[0] == pytest.approx(lin.coeff * 1000.0)
    assert t.amount(np.array([5e4]))[0] == pytest.approx(sum(p * 5e4 ** (k + 1) for k, p in enumerate(t.poly)))
    # the focal plane spans about 2.2 degrees
    assert 1.9 < max(decam.extent_deg()) < 2.3


def test_decam_mini_inline(mini: L.FocalPlane) -> None:
    assert [c.name for c in mini.ccds] == ["S1", "S2", "N1", "N2"]
    assert mini.ccd("N2").amps["B"].gain == 4.21
    assert len(mini.crosstalk) == 9
    cross = [t for t in mini.crosstalk if t.victim_ccd != t.source_ccd]
    assert len(cross) == 1 and not cross[0].mirrored and cross[0].coeff == 2e-4
    sec = mini.sections("S1")
    assert sec.amp_names == ("B", "A") and sec.raw_shape == (1074, 624)


def test_wcs_centre_and_scale(mini: L.FocalPlane) -> None:
    cam = mini.camera
    for ccd in mini.ccds:
        w = L.ccd_wcs(mini, ccd, 150.0, 2.0)
        # the CCD centre sits at its focal-plane offset from the pointing
        ra, dec = w.all_pix2world([(cam.ccd_nx - 1) / 2], [(cam.ccd_ny - 1) / 2], 0)
        xi, eta = mini.offset_deg(ccd)
        assert dec[0] - 2.0 == pytest.approx(eta, abs=1e-6)
        assert (ra[0] - 150.0) * np.cos(np.radians(dec[0])) == pytest.approx(xi, abs=2e-6)
        assert np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600 == pytest.approx(cam.pixel_scale)
        hdr = L.ccd_wcs_header(mini, ccd, 150.0, 2.0)
        assert hdr["CTYPE1"] == "RA---TAN" and hdr["RADESYS"] == "ICRS"


def test_parsers_name_file_and_line(tmp_path) -> None:
    bad = tmp_path / "xtalk.txt"
    bad.write_text("# header\nccd25B ccd25A 1e-4\nccd25Q ccd25A 1e-4\n")
    with pytest.raises(L.LayoutError, match=r"xtalk.txt:3: amplifier 'ccd25Q'"):
        L.read_crosstalk_file(bad)
    seg = tmp_path / "seg.txt"
    seg.write_text("chipId chipName ampName nx ny xoff yoff gain sat readnoise\n1 S29 A 1024 4096 0 0 -1 3 4\n")
    with pytest.raises(L.LayoutError, match=r"seg.txt:2: gain -1.0"):
        L.read_segment_table(seg)
    with pytest.raises(L.LayoutError, match="not found"):
        L.read_ccd_table(tmp_path / "missing.txt")
