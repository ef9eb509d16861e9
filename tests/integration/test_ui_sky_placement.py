"""The tiles page places a coadd where its real SWarp WCS says: tile row, tile polygon and sky-map square.

A simulated 300 x 300 image is SWarped (the project's wrapper, the real binary) onto a tile whose centre is
offset from the tile row already in the archive; registering the coadd through the manifest moves the row to
the coadd's WCS centre. The tile's polygon (the tiling's square of ``npix`` pixels about that row) must then
coincide with the coadd's WCS corners to within a pixel, and the sky map must put the square there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.wcs import WCS

from cosmodm_ops.archive import Archive
from cosmodm_ops.archive import schema as S
from cosmodm_ops.coadd.swarp import SwarpInput, run_swarp
from cosmodm_ops.coadd.tiling import Tile, target_tile
from cosmodm_ops.fits import file_sha256, write_image
from cosmodm_ops.manifest import JobInfo, Manifest, ManifestInput, ManifestProduct, write_manifest
from cosmodm_ops.ui import svg
from cosmodm_ops.ui import tiles as T
from tests.support import need_binary

RA0, DEC0, SCALE, SIZE = 40.0, -20.0, 0.263, 0.02  # the nominal tile: 0.02 deg, 274 pixels a side
RA1, DEC1 = RA0 + 0.004, DEC0 - 0.003  # where the coadd run actually centred it


def _input_image(path: Path) -> SwarpInput:
    n = 300
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA1 + 0.001, DEC1 + 0.001]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = np.array([[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]])
    img = np.random.default_rng(5).normal(100.0, 3.0, (n, n)).astype(np.float32)
    write_image(path / "im.fits", img, w.to_header(), compress=False)
    write_image(path / "wt.fits", np.ones((n, n), np.float32), w.to_header(), compress=False)
    return SwarpInput(path / "im.fits", path / "wt.fits")


def _corners(w: WCS, n: int) -> np.ndarray:
    """RA, Dec of the outer corners of an n x n image (0-based pixel edges)."""
    edge = [-0.5, n - 0.5]
    pix = np.array([(x, y) for x in edge for y in edge])
    return np.array(w.all_pix2world(pix, 0))


def _sep_arcsec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from cosmodm_ops.archive.catalogs import angular_distance

    return np.array([angular_distance(x[0], x[1], y[0], y[1]) for x, y in zip(a, b, strict=True)]) * 3600.0


@pytest.mark.astromatic
def test_swarp_coadd_places_the_tile_on_the_sky_map(tmp_path: Path):
    need_binary("SWarp")
    arch = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "archive")
    arch.init()
    with arch.engine.begin() as conn:  # the tiling's nominal centre, and a neighbour to the north-east for the map
        conn.execute(sa.insert(S.tiles), [{"survey": "sky", "name": "T1", "ra": RA0, "dec": DEC0},
                                          {"survey": "sky", "name": "T2", "ra": RA0 + 0.5, "dec": DEC0 + 0.5}])
    tile = target_tile("T1", RA1, DEC1, SIZE, SCALE)
    job = tmp_path / "job"
    res = run_swarp(tile, [_input_image(tmp_path)], job / "T1_r_coadd.fits", job / "T1_r_coadd.weight.fits",
                    workdir=tmp_path / "w")
    tags = {"survey": "sky", "camera": "decam", "stage": "coadd", "version": "v1", "tile": "T1", "band": "r",
            "kind": "coadd"}
    prod = ManifestProduct(kind="coadd", tags=tags, path=res.image.name, sha256=file_sha256(res.image),
                           size=res.image.stat().st_size)
    src = tmp_path / "im.fits"
    m = Manifest(job=JobInfo(name="coadd-T1-r", site="local"), products=[prod],
                 inputs=[ManifestInput(role="image", path=str(src), sha256=file_sha256(src), size=src.stat().st_size)])
    arch.register_manifest(write_manifest(m, job / "manifest.json"))

    stored = arch.root / arch.find(survey="sky", kind="coadd")[0].path
    with fits.open(stored) as hdul:
        hdr = hdul[0].header
        coadd_wcs, n = WCS(hdr, naxis=2), int(hdr["NAXIS1"])
    assert n == tile.npix
    centre = coadd_wcs.all_pix2world([[(n - 1) / 2, (n - 1) / 2]], 0)[0]
    with arch.engine.connect() as conn:
        data = T.tiles_status(conn, survey="sky")
    row = next(t for t in data["tiles"] if t["name"] == "T1")
    # the row moved from the nominal centre (~17 arcsec away) to the coadd's WCS centre
    assert _sep_arcsec(np.array([[RA0, DEC0]]), np.array([[row["ra"], row["dec"]]]))[0] > 10
    assert _sep_arcsec(np.array([centre]), np.array([[row["ra"], row["dec"]]]))[0] < 0.01 * SCALE
    # the tile's polygon about its row equals the coadd's WCS corners within a pixel
    placed = Tile("T1", row["ra"], row["dec"], SIZE, SCALE, "test")
    assert _sep_arcsec(_corners(placed.wcs(), n), _corners(coadd_wcs, n)).max() < SCALE
    # the sky map: T1's square sits at the row's projected offset from T2 (RA to the left, scaled by cos Dec0),
    # within a pixel (the map's coordinates are rounded to 0.1 of its units: far less here)
    out = svg.sky_map_svg(data["tiles"], data["bands"], tile_deg=SIZE)
    rect = {name: tuple(map(float, xywh)) for name, *xywh in re.findall(
        r'data-name="(\w+)" x="([-\d.]+)" y="([-\d.]+)" width="([\d.]+)" height="([\d.]+)"', out)}
    (x1, y1, _, _), (x2, y2, _, _) = rect["T1"], rect["T2"]
    t2 = next(t for t in data["tiles"] if t["name"] == "T2")
    cos0 = np.cos(np.radians((row["dec"] + t2["dec"]) / 2))
    scale = 900 / (abs(row["ra"] - t2["ra"]) * cos0 + 2 * SIZE)  # map units per degree (900 wide, a tile of margin)
    assert (x1 - x2) / scale == pytest.approx(-(row["ra"] - t2["ra"]) * cos0, abs=SCALE / 3600)
    assert (y2 - y1) / scale == pytest.approx(row["dec"] - t2["dec"], abs=SCALE / 3600)
    assert 'data-s="p"' in out  # a coadd without its catalog: partial in r
