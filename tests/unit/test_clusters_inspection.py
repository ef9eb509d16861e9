"""The HITL step's picture (cosmodm_ops.clusters.inspection): members on the pseudo-colour pixels, the PNG."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def test_members_land_on_their_pixels_of_the_north_up_image(tmp_path):
    from cosmodm_ops.clusters.finder import ClusterResult
    from cosmodm_ops.clusters.inspection import inspection_png, member_pixels
    from cosmodm_ops.coadd.tiling import target_tile
    from cosmodm_ops.qa.pseudocolour import lupton_rgb

    tile = target_tile("CL1", 150.0, 2.0, 0.05, 0.25, "syn")
    w, n = tile.wcs(), tile.npix
    rng = np.random.default_rng(2)
    xs, ys = rng.uniform(50, n - 50, 12), rng.uniform(50, n - 50, 12)
    ra, dec = w.all_pix2world(xs, ys, 0)
    # paint each member into the blue channel at its FITS pixel: it must come out where the overlay says
    blue = np.zeros((n, n))
    blue[np.round(ys).astype(int), np.round(xs).astype(int)] = 1000.0
    rgb = lupton_rgb(np.zeros((n, n)), np.zeros((n, n)), blue, stretch=1.0, minimum=[0, 0, 0])
    ov = member_pixels(w, n, ra, dec, (float(ra[0]), float(dec[0])), (150.0, 2.0))
    assert ov.members.shape == (12, 2)
    cols, rows = np.round(ov.members[:, 0]).astype(int), np.round(ov.members[:, 1]).astype(int)
    assert np.all(rgb[rows, cols, 2] == 255)
    assert ov.bcg == pytest.approx(tuple(ov.members[0]))
    cx, cy = w.all_world2pix(150.0, 2.0, 0)
    assert ov.candidate == pytest.approx((float(cx), n - 1 - float(cy)))
    assert member_pixels(w, n, [], [], (np.nan, np.nan), (150.0, 2.0)).bcg is None
    z = np.linspace(0.05, 0.8, 40)
    res = ClusterResult("CL1", 150.0, 2.0, "ok", z_phot=0.3, richness=25.0, significance=8.0, detected=True,
                        z_grid=z, richness_curve=25 * np.exp(-0.5 * ((z - 0.3) / 0.03) ** 2))
    png = inspection_png(rgb, ov, res, tmp_path / "CL1.png", half_size_px=200)
    from matplotlib.image import imread

    img = imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 600
