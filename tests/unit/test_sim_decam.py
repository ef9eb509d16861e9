"""`cosmodm sim night --camera decam --exposures 1`: the real DECam raw layout, decoded by funpack.

Slow (a full 62-CCD exposure and its calibrations); the sky is thinned with ``--density-scale``,
the layout is the real one. Marked ``astromatic`` (it needs funpack).
"""

from __future__ import annotations

import io
import subprocess

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import main
from tests.support import need_binary, real_file

pytestmark = [pytest.mark.astromatic, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def decam_night(tmp_path_factory):
    real_file("obs_decam/chipcenters.txt")
    out = tmp_path_factory.mktemp("decam")
    code = main(["sim", "night", "--camera", "decam", "--night", "2026-11-23", "--exposures", "1", "--bands", "r",
                 "--seed", "5", "--density-scale", "0.02", "--no-progress", "--out", str(out)])
    assert code == 0
    return out


def test_decam_raw_layout_decoded_by_funpack(decam_night) -> None:
    from astropy.io import fits

    need_binary("funpack")
    raw = next((decam_night / "raw").glob("decam_*.fits.fz"))
    with fitsio.FITS(str(raw)) as f:
        assert len(f) == 63
        names = [hdu.get_extname() for hdu in f[1:]]
        for hdu in f[1:]:
            h = hdu.read_header()
            assert h["ZCMPTYPE"] == "RICE_1" and h["ZBITPIX"] == 16 and h["BZERO"] == 32768
            assert (h["ZNAXIS1"], h["ZNAXIS2"]) == (2160, 4146) and h["ZTILE1"] == 2160 and h["ZTILE2"] == 1
    assert sorted(names) == sorted([f"N{k}" for k in range(1, 32)] + [f"S{k}" for k in range(1, 32)])
    assert names[:3] == ["S29", "S30", "S31"]  # chipcenters.txt order (CCDNUM 1, 2, 3)
    decoded = subprocess.run(["funpack", "-S", str(raw)], check=True, capture_output=True).stdout
    with fits.open(io.BytesIO(decoded)) as hdul:
        assert len(hdul) == 63
        assert hdul[0].header["CAMERA"] == "decam" and hdul[0].header["INSTRUME"] == "DECam"
        n1, s1 = hdul["N1"], hdul["S1"]
        for hdu in (n1, s1):
            assert hdu.header["BITPIX"] == 16 and hdu.header["BZERO"] == 32768
            assert hdu.data.shape == (4146, 2160) and hdu.data.dtype == np.uint16
        # the sections of DECam's raw data model (decam_raw_layout_notes.txt)
        assert n1.header["CCDNUM"] == 32 and s1.header["CCDNUM"] == 25
        assert n1.header["DATASECA"] == "[57:1080,1:4096]" and n1.header["DATASECB"] == "[1081:2104,1:4096]"
        assert n1.header["BIASSECA"] == "[7:56,1:4096]" and n1.header["BIASSECB"] == "[2105:2154,1:4096]"
        assert s1.header["DATASECA"] == "[1081:2104,51:4146]" and s1.header["DATASECB"] == "[57:1080,51:4146]"
        assert s1.header["BIASSECA"] == "[2105:2154,51:4146]" and s1.header["BIASSECB"] == "[7:56,51:4146]"
        assert n1.header["TRIMSEC"] == "[57:2104,1:4096]" and s1.header["TRIMSEC"] == "[57:2104,51:4146]"
        # electronics from segmentfile.txt (S1 = chip 25)
        assert s1.header["GAINA"] > 3 and s1.header["SATURATA"] > 30000
        # data pixels sit above the overscan level; postscan rows of S CCDs come first
        assert np.median(s1.data[60:, 1100:2000]) > np.median(s1.data[60:, 2110:2150]) + 50
        assert abs(float(np.median(s1.data[:50, 1100:2000])) - float(np.median(s1.data[60:, 2110:2150]))) < 10


def test_decam_calibs_and_truth(decam_night) -> None:
    calib = decam_night / "calib"
    with fitsio.FITS(str(calib / "flat_r.fits")) as f:
        assert len(f) == 63
        flat = f["N4"].read()
        assert flat.shape == (4096, 2048) and 0.9 < np.median(flat) < 1.1
    with fitsio.FITS(str(calib / "bpm.fits")) as f:
        assert f["S1"].read().dtype == np.int32
    exps = fitsio.read(decam_night / "truth" / "exposures.fits")
    assert len(exps) == 1 and exps["band"][0] == "r"
