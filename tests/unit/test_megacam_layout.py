"""MegaCam raw layout against the camera's own description: obs_cfht's camGeom AmpInfo table for ccd00.

The reference is ``real:obs_cfht/megacam_ccd00_amps.fits`` (lsst/obs_cfht@82198040,
``megacam/camera/ccd00.fits``): per amplifier the raw bbox (1056 x 4644), the data bbox
(1024 x 4612 at x = 32 / 1056), the horizontal overscan (32 columns at x = 0 / 2080) and the
vertical overscan rows above the data (y >= 4612). A raw MegaCam CCD HDU is 2112 x 4644.
"""

from __future__ import annotations

from pathlib import Path

import fitsio
import pytest

from cosmodm_ops.cameras.layout import focal_plane
from cosmodm_ops.config import load_config, resolve_data_path

pytestmark = pytest.mark.unit


def _amps():
    path = Path(resolve_data_path("real:obs_cfht/megacam_ccd00_amps.fits"))
    if not path.is_file():
        pytest.fail(f"{path}: the real obs_cfht table is missing (COSMODM_REAL_DATA)")
    return fitsio.read(str(path), ext=1)


def test_megacam_raw_sections_match_obs_cfht() -> None:
    amps = _amps()
    fp = focal_plane(load_config("des", camera="megacam", site="local").camera)
    assert len(fp.ccds) == 36
    sec = fp.sections(fp.ccds[0])
    ny = int(amps["raw_bbox_extent_y"][0])
    nx = int(amps["raw_bbox_extent_x"].sum())
    assert sec.raw_shape == (ny, nx) == (4644, 2112)
    for k in range(2):
        x0, w = int(amps["raw_databbox_min_x"][k]), int(amps["raw_databbox_extent_x"][k])
        assert (sec.data[k].start, sec.data[k].stop) == (x0, x0 + w)
        o0, ow = int(amps["raw_horizontaloverscanbbox_min_x"][k]), int(amps["raw_horizontaloverscanbbox_extent_x"][k])
        assert (sec.overscan[k].start, sec.overscan[k].stop) == (o0, o0 + ow)
    y0, h = int(amps["raw_databbox_min_y"][0]), int(amps["raw_databbox_extent_y"][0])
    assert (sec.rows.start, sec.rows.stop) == (y0, y0 + h)
    assert int(amps["raw_verticaloverscanbbox_min_y"][0]) == sec.rows.stop  # overscan rows above the data


def test_megacam_raw_headers_name_the_obs_cfht_sections() -> None:
    from cosmodm_ops.sim.exposure import _ccd_header
    from cosmodm_ops.sim.night import plan_night

    cfg = load_config("des", camera="megacam", site="local")
    plan = plan_night(cfg, "2026-11-23", 1, ["i"])
    fp = focal_plane(cfg.camera)
    hdr = {k: (v[0] if isinstance(v, tuple) else v) for k, v in _ccd_header(fp, fp.ccds[0], plan.exposures[0]).items()}
    amps = _amps()
    for amp, k in (("A", 0), ("B", 1)):
        x0, w = int(amps["raw_databbox_min_x"][k]), int(amps["raw_databbox_extent_x"][k])
        o0 = int(amps["raw_horizontaloverscanbbox_min_x"][k])
        assert hdr[f"DSEC{amp}"] == f"[{x0 + 1}:{x0 + w},1:4612]"
        assert hdr[f"BSEC{amp}"] == f"[{o0 + 1}:{o0 + 32},1:4612]"
        b0 = int(amps["bbox_min_x"][k])
        assert hdr[f"CSEC{amp}"] == f"[{b0 + 1}:{b0 + w},1:4612]"
    assert hdr["DATASEC"] == "[33:2080,1:4612]" and hdr["DETPOS"] == "ccd00"
