"""The simulator's real density against literature counts, and the strace byte counter (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.sim.density import PRESETS, point_source_limit, real_counts, sky_preset
from cosmodm_ops.sim.objects import _powerlaw_mags
from cosmodm_ops.single_epoch.iotrace import count_strace

pytestmark = pytest.mark.unit

DES_R = {"zeropoint_1s": 26.60, "exptime": 90.0, "sky_mag": 21.1, "pixel_scale": 0.263, "readnoise_e": 6.2}


def test_des_r_point_source_depth_is_the_dr1_single_epoch_depth():
    # DES DR1 (Abbott et al. 2018): median single-epoch r depth 23.34 at S/N 10 (~1" seeing)
    m10 = point_source_limit(**DES_R, fwhm_arcsec=1.0, snr=10)
    assert m10 == pytest.approx(23.34, abs=0.2)
    assert point_source_limit(**DES_R, fwhm_arcsec=1.0, snr=5) - m10 == pytest.approx(0.75, abs=0.1)


@pytest.mark.parametrize("fwhm", [0.9, 1.1, 1.3])
def test_real_preset_draws_the_literature_counts_within_20_percent(fwhm: float):
    sky = PRESETS["real"]
    rng = np.random.default_rng(5)
    stars = _powerlaw_mags(rng, int(sky.star_density), *sky.star_mag_range, sky.star_slope)
    gals = _powerlaw_mags(rng, int(sky.galaxy_density), *sky.galaxy_mag_range, sky.galaxy_slope)
    for snr in (5, 10):
        m = point_source_limit(**DES_R, fwhm_arcsec=fwhm, snr=snr)
        real = real_counts(m)
        assert (stars < m).sum() / real["stars"] == pytest.approx(1.0, abs=0.2)
        assert (gals < m).sum() / real["galaxies"] == pytest.approx(1.0, abs=0.2)


def test_real_field_counts_are_those_of_a_high_latitude_exposure():
    c = real_counts(24.0)
    assert 3.5e4 < c["galaxies"] < 6.5e4  # deep-field r counts to 24 (module docstring)
    assert 1.5e3 < c["stars"] < 6e3  # b ~ -50 deg
    assert c["galaxies"] > 10 * c["stars"]


def test_presets_by_camera_and_bad_name():
    assert sky_preset(None, "decam") == PRESETS["real"]
    assert sky_preset(None, "decam-mini") == PRESETS["crowded"]
    assert sky_preset("crowded", "decam", 0.5).density_scale == 0.5
    crowded = PRESETS["crowded"]
    assert (crowded.star_density, crowded.galaxy_density) == (150_000.0, 90_000.0)  # the earlier default
    with pytest.raises(ValueError, match="--density 'dense'"):
        sky_preset("dense", "decam")


def test_strace_counts_only_files_under_the_root_and_joins_resumed_calls(tmp_path: Path):
    root = tmp_path / "out"
    log = tmp_path / "trace.log"
    log.write_text("\n".join([
        f'101 read(3<{root}/raw.fits.fz>, ""..., 65536) = 65536',
        f'101 write(4<{root}/se/ccd01_image.fits.fz>, ""..., 1000) = 1000',
        '101 write(5</dev/shm/cosmodm/work/ccd01.fits>, ""..., 33554432) = 33554432',
        f'102 pread64(6<{root}/naive/ccd01.fits>, ""..., 2880, 0) = 2880',
        f'102 write(7<{root}/naive/ccd01.cat>, ""..., 500 <unfinished ...>',
        f'103 read(3<{root}/x.psf>, ""..., 10) = 10',
        '102 <... write resumed>) = 500',
        f'104 mmap(NULL, 8192, PROT_READ, MAP_SHARED, 8<{root}/refcat.npz>, 0) = 0x7f0000000000',
        '104 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 9</usr/lib/libc.so.6>, 0) = 0x7f0000001000',
        f'105 read(3<{root}/y.fits>, ""..., 10) = -1 EAGAIN (Resource temporarily unavailable)',
    ]) + "\n")
    c = count_strace(log, root)
    assert c.read == 65536 + 2880 + 10 + 8192
    assert c.written == 1000 + 500
    assert c.by_kind[".cat"] == [0, 500]


def test_strace_counts_both_files_of_sendfile_and_copy_file_range(tmp_path: Path):
    # sendfile(out, in, ...) and copy_file_range(in, off, out, ...): the source read, the destination written
    root = tmp_path / "out"
    log = tmp_path / "trace.log"
    log.write_text("\n".join([
        f'201 sendfile(5</dev/shm/cosmodm/job/bias.fits>, 4<{root}/calib/bias.fits>, [0] => [4000], 4000) = 4000',
        f'201 copy_file_range(4<{root}/calib/flat.fits>, NULL, 5<{root}/work/flat.fits>, NULL, 300, 0) = 300',
    ]) + "\n")
    c = count_strace(log, root)
    assert (c.read, c.written) == (4000 + 300, 300)
