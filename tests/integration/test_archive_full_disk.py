"""The archive on a full file system (a small tmpfs, mounted as root): the store fails cleanly, then succeeds.

What ``make faults``' ``archive_fs_full`` row measures, as a test: the error is ``ArchiveUnavailable`` (retryable,
exit 75) naming the file, the bytes needed and free, and what to do; no temporary, no partial file and no row
are left; once space is freed the same store succeeds and ``verify`` passes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cosmodm_ops.archive import Archive, ArchiveUnavailable
from cosmodm_ops.model import Tags
from tests.support import need


@pytest.fixture
def small_fs(tmp_path: Path):
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    need(res.returncode == 0, f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _tags(ccd: int) -> Tags:
    return Tags(survey="demo", camera="decam", stage="single_epoch", version="v1", kind="image", night="2026-11-21",
                expnum=2000, ccd=ccd, band="g")


def test_store_on_a_full_file_system_fails_cleanly_then_succeeds(small_fs: Path, tmp_path: Path):
    archive = Archive(f"sqlite:///{tmp_path / 'archive.db'}", small_fs / "archive")
    archive.init()
    src = tmp_path / "product.fits"
    src.write_bytes(os.urandom(1024 * 1024))
    filler = small_fs / "other-data.bin"
    filler.write_bytes(b"\0" * (3 * 1024 * 1024 + 512 * 1024))  # leaves less than the product's 1 MiB
    with pytest.raises(ArchiveUnavailable) as err:
        archive.store(src, _tags(1))
    msg = str(err.value)
    assert msg.startswith("archive file system full: cannot write ") and "decam_00002000_g_c01_image" in msg
    assert "(1048576 bytes; " in msg and "free space under the archive root and retry" in msg
    assert [p for p in (small_fs / "archive").rglob("*") if p.is_file()] == []  # no temporary, no partial file
    assert archive.find(survey="demo") == []
    filler.unlink()
    stored = archive.store(src, _tags(1))
    assert (stored.outcome, stored.revision) == ("new", 1)
    assert [p["ccd"] for p in archive.find(survey="demo")] == [1]
    report = archive.verify(quarantine=False)
    assert (report.checked, report.ok, report.temporaries) == (1, 1, [])
