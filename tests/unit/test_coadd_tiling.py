from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from cosmodm_ops.coadd.tiling import (
    TilingError,
    ccd_corners,
    des_tile_name,
    load_tiling,
    target_tile,
)
from cosmodm_ops.config import ConfigError
from cosmodm_ops.model import validate_token


def _ccd_wcs(ra: float, dec: float, scale: float = 0.263) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [1024.5, 2048.5]
    w.wcs.cd = np.array([[-scale / 3600, 0], [0, scale / 3600]])
    w.wcs.set()
    return w


def test_des_names_and_grid():
    assert des_tile_name(31.0, -5.0) == "DES0204-0500"
    assert des_tile_name(359.99, 0.0) == "DES0000+0000"
    t = load_tiling("des-1deg")
    assert t.kind == "grid" and t.tile_size_deg == pytest.approx(1.05)
    tile = t.nearest(31.05, -5.02)
    assert tile.name == "DES0204-0500"
    assert t.tile("DES0204-0500") == tile
    # RA step is 360/ceil(360 cos(dec)) <= 1/cos(dec)
    assert tile.dec == -5.0 and tile.ra == pytest.approx(31 * 360 / 359)
    with pytest.raises(TilingError):
        t.tile("DES0205-0500")


def test_grid_covers_sky_without_gaps_and_names_unique():
    t = load_tiling("des-1deg")
    tiles = t.tiles()
    names = [x.name for x in tiles]
    assert len(set(names)) == len(names) > 40000
    rng = np.random.default_rng(3)
    for _ in range(200):  # random points on the sphere: each lies inside some tile (no gaps)
        ra = rng.uniform(0, 360)
        dec = np.degrees(np.arcsin(rng.uniform(-0.99, 0.99)))
        d = 1e-5
        hits = t.tiles_touching([ra, ra + d, ra + d, ra], [dec, dec, dec + d, dec + d])
        assert hits and any(h.contains(ra, dec) for h in hits)
        assert len(hits) <= 4


def test_ccd_touches_expected_tiles():
    t = load_tiling("des-1deg")
    wcs = _ccd_wcs(31.0861, -5.0)  # the centre of DES0204-0500: a 9' x 18' CCD lies inside it
    ra, dec = ccd_corners(wcs, 2048, 4096)
    assert [x.name for x in t.tiles_touching(ra, dec)] == ["DES0204-0500"]
    # a CCD straddling the corner between four tiles (Dec -4.5, RA half way) touches 4 tiles
    wcs = _ccd_wcs(31.0861 + 0.5 * 360 / 359, -4.5)
    names = [x.name for x in t.tiles_touching(*ccd_corners(wcs, 2048, 4096))]
    assert len(names) == 4 and "DES0204-0500" in names
    # across RA = 0
    names = [x.name for x in t.tiles_touching(*ccd_corners(_ccd_wcs(0.0, 0.5), 2048, 4096))]
    assert "DES0000+0000" in names and "DES0000+0100" in names


def test_other_grid_names_are_tokens_and_tiles_have_wcs():
    t = load_tiling("demo-mini")
    tile = t.nearest(30.17, -0.21)
    assert tile.name == "demo-mini-030.200-00.200"
    validate_token("tile", tile.name)
    assert t.tile(tile.name) == tile
    w = tile.wcs()
    n = tile.npix
    assert n == int(np.ceil(0.12 * 3600 / 0.263))
    ra, dec = w.all_pix2world([(n + 1) / 2], [(n + 1) / 2], 1)
    assert ra[0] == pytest.approx(tile.ra) and dec[0] == pytest.approx(tile.dec)
    assert abs(w.wcs.cd[0, 0]) * 3600 == pytest.approx(0.263)
    hdr = tile.header()
    assert hdr["NAXIS1"] == n and hdr["CTYPE1"] == "RA---TAN"


def test_target_tiles():
    t = load_tiling("targets-example")
    assert t.kind == "targets" and [x.name for x in t.tiles()] == ["SPT-CLJ0509-5342", "ACO3827"]
    spt = t.tile("SPT-CLJ0509-5342")
    assert spt.size_deg == 0.4 and spt.npix == int(np.ceil(0.4 * 3600 / 0.263))
    far = ccd_corners(_ccd_wcs(10.0, 10.0), 2048, 4096)
    assert t.tiles_touching(*far) == []
    near = ccd_corners(_ccd_wcs(77.3374 + 0.25, -53.7037), 2048, 4096)
    assert [x.name for x in t.tiles_touching(*near)] == ["SPT-CLJ0509-5342"]
    custom = target_tile("C1", 10.0, 80.0, 2.0, 0.2)
    assert custom.contains(10.0, 80.9) and not custom.contains(10.0, 81.1)
    with pytest.raises(ValueError, match="not allowed"):
        target_tile("../etc", 0, 0, 1, 0.2)


def test_bad_tiling_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling: {name: x, kind: grid, step_deg: 1.0}\n")
    with pytest.raises(ConfigError, match="pixel_scale"):
        load_tiling(bad)
    bad.write_text("tiling: {name: x, kind: grid, step_deg: 2.0, tile_size_deg: 1.0, pixel_scale: 0.2}\n")
    with pytest.raises(ConfigError, match="gaps"):
        load_tiling(bad)
