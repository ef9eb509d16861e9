"""Archive layout: a pure, injective function of tags that never escapes the root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from cosmodm_ops.archive.catalogs import angular_distance, cone_ranges, healpix_index
from cosmodm_ops.archive.layout import relpath_for, resolve_under, tag_key
from cosmodm_ops.archive.store import place_file, sha256_file
from cosmodm_ops.model import TagError, Tags


def _se(**kw):
    base = {"survey": "des", "camera": "decam", "stage": "single_epoch", "version": "v1", "kind": "image",
            "night": "2024-01-05", "expnum": 241238, "ccd": 1, "band": "g"}
    base.update(kw)
    return Tags(**base)


def test_single_epoch_path_is_hierarchical_and_pure():
    t = _se()
    assert relpath_for(t) == PurePosixPath("des/single_epoch/v1/2024-01-05/00241238/decam_00241238_g_c01_image.fits.fz")
    assert relpath_for(_se()) == relpath_for(t)
    assert relpath_for(t, 2).name == "decam_00241238_g_c01_image.r2.fits.fz"
    assert relpath_for(_se(kind="catalog")).name == "decam_00241238_g_c01_catalog.fits"
    assert relpath_for(_se(kind="psf")).suffix == ".psf"


def test_other_stages():
    coadd = Tags(survey="des", camera="decam", stage="coadd", version="y6", kind="coadd", tile="DES0001-0001",
                 band="r")
    assert str(relpath_for(coadd)) == "des/coadd/y6/DES0001-0001/r/DES0001-0001_r_coadd.fits.fz"
    flat = Tags(survey="des", camera="decam", stage="calib", version="v1", kind="flat", band="r", ccd=3)
    assert str(relpath_for(flat)) == "des/calib/v1/any/decam_r_c03_flat.fits.fz"
    raw = Tags(survey="des", camera="decam", stage="raw", version="v1", kind="raw", night="2024-01-05",
               expnum=7, band="r")
    assert str(relpath_for(raw)) == "des/raw/v1/2024-01-05/00000007/decam_00000007_r_raw.fits.fz"
    qa = Tags(survey="des", camera="decam", stage="qa", version="v1", kind="report", night="2024-01-05")
    assert str(relpath_for(qa)) == "des/qa/v1/2024-01-05/decam_report.html"


def test_missing_stage_tags_are_refused():
    with pytest.raises(TagError, match="needs tag"):
        relpath_for(Tags(survey="des", camera="decam", stage="coadd", version="v1", kind="coadd", band="r"))
    with pytest.raises(TagError, match="needs tag"):
        relpath_for(_se(expnum=None))


def test_tag_key_is_injective_on_fields():
    assert tag_key(_se(band="g", ccd=1)) != tag_key(_se(band="g_c01", ccd=None))
    assert tag_key(_se()) == tag_key(_se())


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "-rf", "x\n"])
def test_tags_that_would_escape_are_refused(bad):
    with pytest.raises(TagError):
        _se(band=bad)


def test_resolve_under_refuses_escape(tmp_path):
    assert resolve_under(tmp_path, "a/b.fits") == (tmp_path / "a/b.fits").resolve()
    for rel in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(TagError, match="escape"):
            resolve_under(tmp_path, rel)


def test_place_file_never_overwrites(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"one")
    dst = tmp_path / "a" / "dst"
    h = sha256_file(src)
    assert place_file(src, dst, h) == "created"
    assert place_file(src, dst, h) == "same"
    other = tmp_path / "other"
    other.write_bytes(b"two")
    assert place_file(other, dst, sha256_file(other)) == "taken"
    assert dst.read_bytes() == b"one"
    with pytest.raises(ValueError, match="sha256 changed"):
        place_file(other, tmp_path / "b", "0" * 64)
    assert not (tmp_path / "b").exists()
    assert not list(Path(tmp_path).rglob("*.part"))


def test_cone_ranges_cover_every_pixel_in_the_cone():
    import numpy as np

    rng = np.random.default_rng(1)
    ra0, dec0, r = 60.7, -51.45, 0.2
    ra = ra0 + rng.uniform(-0.5, 0.5, 20000)
    dec = dec0 + rng.uniform(-0.4, 0.4, 20000)
    hpx = healpix_index(ra, dec)
    inside = angular_distance(ra, dec, ra0, dec0) <= r
    ranges = cone_ranges(ra0, dec0, r)
    covered = np.zeros(ra.size, bool)
    for lo, hi in ranges:
        covered |= (hpx >= lo) & (hpx <= hi)
    assert inside.sum() > 1000
    assert covered[inside].all()
    assert covered.sum() < 4 * inside.sum()  # candidates stay a small multiple of the answer
    with pytest.raises(ValueError):
        cone_ranges(0, 0, -1)


def test_angular_distance_values():
    assert angular_distance(0.0, 0.0, 90.0, 0.0) == pytest.approx(90.0)
    assert angular_distance(10.0, 89.999, 190.0, 89.999) == pytest.approx(0.002, rel=1e-6)
