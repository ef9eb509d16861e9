from __future__ import annotations

import os
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops import fits as F


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(42)
    img = 1000.0 + rng.normal(0.0, 10.0, (256, 300))
    img[100:105, 100:105] += 5e4
    return img.astype(np.float32)


def test_float_round_trip_is_rice_q4_dithered_and_within_noise(tmp_path: Path, image: np.ndarray):
    path = F.write_image(tmp_path / "a.fits.fz", image, {"EXPNUM": (123, "exposure")})
    data, hdr = F.read_image(path)
    assert hdr["EXPNUM"] == 123
    info = F.hdu_summary(path)
    assert info[1]["compressed"] and info[1]["zcmptype"] == "RICE_1"
    with fitsio.FITS(str(path)) as f:
        raw = f[1].read_header()
    # q=4: quantization step sigma/4 -> added noise sigma/sqrt(12*16) ~ 0.072 sigma
    resid = np.std(data - image) / 10.0
    assert 0.05 < resid < 0.09
    assert np.sqrt(1 + resid**2) - 1 < 0.003  # noise grows by at most 0.3%
    assert os.path.getsize(path) < image.nbytes / 4
    assert raw is not None


def test_dither_seed_is_reproducible(tmp_path: Path, image: np.ndarray):
    a = F.write_image(tmp_path / "x.fits.fz", image)
    d1, _ = F.read_image(a)
    b = F.write_image(tmp_path / "sub" / "x.fits.fz", image)
    d2, _ = F.read_image(b)
    np.testing.assert_array_equal(d1, d2)
    c = F.write_image(tmp_path / "y.fits.fz", image, dither_seed=77)
    d3, _ = F.read_image(c)
    assert not np.array_equal(d1, d3)


def test_integers_are_lossless(tmp_path: Path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 2**12, (64, 128)).astype(np.int32)
    raw = rng.integers(0, 65535, (64, 128)).astype(np.uint16)
    for arr in (mask, raw):
        path = F.write_image(tmp_path / f"{arr.dtype}.fits.fz", arr)
        back, _ = F.read_image(path)
        np.testing.assert_array_equal(back, arr)


def test_input_not_modified_and_plain_files_read(tmp_path: Path, image: np.ndarray):
    before = image.copy()
    plain = F.write_image(tmp_path / "plain.fits", image, compress=False)
    np.testing.assert_array_equal(image, before)
    data, _ = F.read_image(plain)
    np.testing.assert_array_equal(data, image)


def test_compress_decompress_files(tmp_path: Path, image: np.ndarray):
    plain = F.write_image(tmp_path / "p.fits", image, compress=False)
    comp = F.compress_file(plain, tmp_path / "c.fits.fz")
    back = F.decompress_file(comp, tmp_path / "d.fits")
    d, _ = F.read_image(back)
    assert not F.hdu_summary(back)[1]["compressed"]
    assert np.std(d - image) < 1.0


def test_truncated_file_gives_clear_error(tmp_path: Path, image: np.ndarray):
    path = F.write_image(tmp_path / "t.fits", image, compress=False)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(F.FitsError, match=r"t\.fits"):
        F.read_image(path)
    with pytest.raises(F.FitsError, match="no such file"):
        F.read_image(tmp_path / "missing.fits")


def test_failed_write_leaves_no_partial_file(tmp_path: Path):
    with pytest.raises((TypeError, ValueError)):
        F.write_images(tmp_path / "bad.fits.fz", [("A", np.zeros((4, 4), "f4"), None), ("B", "not an array", None)])
    assert list(tmp_path.iterdir()) == []


def test_staging_is_cleaned_also_on_failure(tmp_path: Path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(RuntimeError):
        with F.Staging("job1", root=str(tmp_path / "ram"), max_fraction=1.0) as st:
            staged = st.stage(src)
            assert staged.read_bytes() == src.read_bytes() and st.bytes_written == 1000
            raise RuntimeError("boom")
    assert not staged.exists() and not staged.parent.exists()


def test_staging_refuses_to_fill(tmp_path: Path):
    with F.Staging("job2", root=str(tmp_path / "ram"), max_fraction=1e-9) as st:
        with pytest.raises(F.StagingFullError, match="max_fraction"):
            st.reserve(10**6)


def test_staging_counts_like_df_root_reserved_blocks_are_not_used(tmp_path: Path, monkeypatch):
    import os
    from types import SimpleNamespace

    # an ext4 scratch: 1000 blocks of 1 kB, 400 used, 50 reserved for root -> df says 400 / 950 = 42% used
    monkeypatch.setattr(os, "statvfs", lambda _p: SimpleNamespace(f_blocks=1000, f_bfree=600, f_bavail=550,
                                                                  f_frsize=1000))
    with F.Staging("job3", root=str(tmp_path / "ram"), max_fraction=0.5) as st:
        st.reserve(60_000)  # 460 / 950 = 48%: fits
        with pytest.raises(F.StagingFullError, match="to 51%"):
            st.reserve(85_000)  # 485 / 950


def test_staging_falls_back_when_ramdisk_unusable(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with F.Staging("job3", root=str(blocker / "sub")) as st:
        assert st.path is not None and st.path.exists() and blocker not in st.path.parents


def test_staging_refuses_hostile_job_name(tmp_path: Path):
    from cosmodm_ops.model import TagError

    with pytest.raises(TagError), F.Staging("../../etc", root=str(tmp_path)):
        pass


def test_compressing_a_primary_image_keeps_its_header_on_the_image(tmp_path: Path, image: np.ndarray):
    plain = F.write_image(tmp_path / "p.fits", image, {"CRVAL1": 10.5, "CTYPE1": "RA---TAN"}, compress=False)
    comp = F.compress_file(plain, tmp_path / "c.fits.fz")
    _, hdr = F.read_image(comp)
    assert hdr["CRVAL1"] == 10.5 and hdr["CTYPE1"] == "RA---TAN"


def test_decompress_file_keeps_only_the_named_hdus_and_their_numbers(tmp_path: Path):
    rng = np.random.default_rng(1)
    hdus = [(name, rng.integers(0, 60000, (20, 30)).astype(np.int32), {"CCDNUM": i + 1})
            for i, name in enumerate(("S1", "S2", "N1"))]
    comp = F.write_images(tmp_path / "raw.fits.fz", hdus)
    out = F.decompress_file(comp, tmp_path / "raw.fits", keep={"S2"})
    with fitsio.FITS(str(out)) as f:
        assert [f[i].get_extname() for i in range(1, 4)] == ["S1", "S2", "N1"]
        np.testing.assert_array_equal(f["S2"].read(), hdus[1][1])
        assert f["S1"].get_info()["dims"] == [0] and f["N1"].get_info()["dims"] == [0]  # no pixels
        assert f["N1"].read_header()["CCDNUM"] == 3
