"""FITS I/O through fitsio (CFITSIO): RICE tile compression and RAM-disk staging.

Float images are written RICE-compressed with quantization level q=4 and
subtractive dithering (a reproducible seed, derived from the file name unless
given), as fpack does; integer images and masks are compressed losslessly.
Compressed and plain files are read alike. Intermediates live in a per-job
staging folder on the RAM disk (:class:`Staging`), always removed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import fitsio
import numpy as np

from cosmodm_ops.model import validate_token

__all__ = [
    "FitsError",
    "Staging",
    "StagingFullError",
    "atomic_fits",
    "clean_header",
    "compress_file",
    "decompress_file",
    "dither_seed_for",
    "file_sha256",
    "hdu_summary",
    "read_header",
    "read_image",
    "write_image",
    "write_images",
]

log = logging.getLogger(__name__)

#: Tile shape for image compression: one row per tile, as fpack does by default.
DEFAULT_QLEVEL = 4.0


class FitsError(ValueError):
    """A FITS file that cannot be read as expected; the message names the file and HDU."""


class StagingFullError(OSError):
    """Staging would fill the RAM disk beyond the configured fraction."""


def clean_header(header: Any) -> Any:
    """A copy of an astropy ``Header`` without structural and tile-compression keys.

    What is left (WCS, exposure and detector keys, history) can be written into any new
    image or table HDU. Cards astropy refuses to copy are dropped.
    """
    from astropy.io import fits as afits

    out = afits.Header()
    for card in header.cards:
        if card.keyword in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
                            "GCOUNT", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "INHERIT", "EXTNAME", ""):
            continue
        if card.keyword.startswith(("ZIMAGE", "ZCMPTYPE", "ZBITPIX", "ZNAXIS", "ZTILE", "ZNAME", "ZVAL", "ZQUANTIZ",
                                    "ZDITHER", "ZSIMPLE", "ZEXTEND", "ZBLANK", "ZTENSION", "ZPCOUNT", "ZGCOUNT")):
            continue
        try:
            out.append(card, useblanks=False, bottom=True)
        except (ValueError, KeyError):
            continue
    return out


def dither_seed_for(name: str) -> int:
    """A reproducible dither seed in 1..10000 from a name (CFITSIO's allowed range)."""
    return zlib.crc32(name.encode()) % 10000 + 1


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _header_records(header: Any) -> list[dict[str, Any]] | None:
    """Convert an astropy Header, a dict or a fitsio header into fitsio records."""
    if header is None:
        return None
    if isinstance(header, fitsio.FITSHDR):
        return [r for r in header.records() if r["name"] not in _STRUCTURAL]
    records: list[dict[str, Any]] = []
    if hasattr(header, "cards"):  # astropy.io.fits.Header
        for card in header.cards:
            key = card.keyword
            if key in _STRUCTURAL or key == "":
                continue
            if key in ("COMMENT", "HISTORY"):
                records.append({"name": key, "value": str(card.value)})
            else:
                records.append({"name": key, "value": card.value, "comment": card.comment})
        return records
    for key, value in dict(header).items():
        if isinstance(value, tuple):
            records.append({"name": key, "value": value[0], "comment": value[1]})
        else:
            records.append({"name": key, "value": value})
    return records


_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
    "BZERO", "BSCALE", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2",
    "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZDITHER0", "TFIELDS", "TTYPE1",
    "TFORM1", "TTYPE2", "TFORM2", "TTYPE3", "TFORM3", "ZSIMPLE", "ZEXTEND", "ZTENSION", "ZPCOUNT", "ZGCOUNT",
    "CHECKSUM", "DATASUM", "ZHECKSUM", "ZDATASUM",
}


def _compress_args(data: np.ndarray, compress: bool, qlevel: float, seed: int | None) -> dict[str, Any]:
    if not compress:
        return {}
    if np.issubdtype(data.dtype, np.floating):
        return {
            "compress": "RICE",
            "qlevel": float(qlevel),
            "qmethod": "SUBTRACTIVE_DITHER_1",
            "dither_seed": seed,
            "tile_dims": [1, data.shape[-1]],
        }
    # Integers: RICE is lossless for them (qlevel is ignored by CFITSIO).
    return {"compress": "RICE", "tile_dims": [1, data.shape[-1]]}


@contextlib.contextmanager
def atomic_fits(path: str | os.PathLike[str]) -> Iterator[fitsio.FITS]:
    """An open FITS file written under a temporary name beside ``path``, fsynced and renamed on success.

    A failure (or a killed process) leaves no partial file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        with fitsio.FITS(tmp, "rw", clobber=True) as fits:
            yield fits
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_images(
    path: str | os.PathLike[str],
    hdus: list[tuple[str | None, np.ndarray | None, Any]],
    *,
    compress: bool = True,
    qlevel: float = DEFAULT_QLEVEL,
    dither_seed: int | None = None,
    primary_header: Any = None,
) -> Path:
    """Write a (multi-extension) file atomically: a temp name in the same folder, then rename.

    Parameters
    ----------
    path : path
        Output file.
    hdus : list of (extname, data, header)
        Image extensions in order; ``data`` of shape (ny, nx). ``None`` data writes an empty HDU.
    compress : bool
        RICE tile compression (q=``qlevel`` dithered for floats, lossless for integers).
    dither_seed : int, optional
        1..10000; default derived from the file name and extension (reproducible).
    primary_header : header-like, optional
        Keywords for an empty primary HDU (always written first for compressed files).
    """
    path = Path(path)
    with atomic_fits(path) as fits:
        if compress or primary_header is not None:
            fits.write_image(None, header=_header_records(primary_header))
        for i, (extname, data, header) in enumerate(hdus):
            if data is None:
                fits.write_image(None, extname=extname, header=_header_records(header))
                continue
            data = np.ascontiguousarray(data)
            seed = dither_seed if dither_seed is not None else dither_seed_for(f"{path.name}:{extname or i}")
            fits.write_image(
                data, extname=extname, header=_header_records(header),
                **_compress_args(data, compress, qlevel, seed),
            )
    return path


def write_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    header: Any = None,
    *,
    extname: str | None = None,
    compress: bool = True,
    qlevel: float = DEFAULT_QLEVEL,
    dither_seed: int | None = None,
) -> Path:
    """Write one image (see :func:`write_images`)."""
    return write_images(
        path, [(extname, data, header)], compress=compress, qlevel=qlevel, dither_seed=dither_seed
    )


def _open(path: str | os.PathLike[str]) -> fitsio.FITS:
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file"
        raise FitsError(msg)
    try:
        return fitsio.FITS(str(path))
    except OSError as err:
        msg = f"{path}: not a readable FITS file ({str(err).strip().splitlines()[-1] if str(err).strip() else err})"
        raise FitsError(msg) from err


def _pick_hdu(fits: fitsio.FITS, path: Path, ext: int | str | None) -> fitsio.hdu.ImageHDU:
    if ext is not None:
        try:
            return fits[ext]
        except (OSError, ValueError, IndexError, KeyError) as err:
            msg = f"{path}: no HDU {ext!r} (has {len(fits)} HDUs)"
            raise FitsError(msg) from err
    for hdu in fits:
        if hdu.get_exttype() == "IMAGE_HDU" and hdu.has_data():
            return hdu
    msg = f"{path}: no image HDU with data"
    raise FitsError(msg)


def read_image(
    path: str | os.PathLike[str], ext: int | str | None = None, *, dtype: Any = None
) -> tuple[np.ndarray, fitsio.FITSHDR]:
    """Read an image and its header; compressed or not, the first image with data by default.

    Raises
    ------
    FitsError
        A missing or truncated file, or a missing HDU; the message names the file and HDU.
    """
    path = Path(path)
    with _open(path) as fits:
        hdu = _pick_hdu(fits, path, ext)
        try:
            data = hdu.read()
            header = hdu.read_header()
        except (OSError, ValueError) as err:
            msg = f"{path}[{ext if ext is not None else hdu.get_extnum()}]: cannot read image data, file truncated or corrupt ({err})"
            raise FitsError(msg) from err
    if data is None:
        msg = f"{path}[{ext}]: HDU has no data"
        raise FitsError(msg)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return data, header


def read_header(path: str | os.PathLike[str], ext: int | str = 0) -> fitsio.FITSHDR:
    """Read one header (compressed HDUs give the image header)."""
    path = Path(path)
    with _open(path) as fits:
        return _pick_hdu(fits, path, ext).read_header()


def hdu_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One dict per HDU: index, extname, type, shape, dtype/bitpix, compression."""
    path = Path(path)
    out = []
    with _open(path) as fits:
        for i, hdu in enumerate(fits):
            info = hdu.get_info()
            entry: dict[str, Any] = {"hdu": i, "extname": hdu.get_extname() or None, "type": hdu.get_exttype()}
            if entry["type"] == "IMAGE_HDU":
                dims = info.get("dims") or []
                entry["shape"] = [int(d) for d in dims]
                entry["bitpix"] = int(info.get("img_equiv_type", info.get("img_type", 0)))
                entry["compressed"] = bool(hdu.is_compressed())
                if entry["compressed"]:
                    hdr = hdu.read_header()
                    entry["zcmptype"] = hdu._info.get("comptype") or hdr.get("ZCMPTYPE")
            else:
                entry["nrows"] = int(info.get("nrows", 0))
                entry["columns"] = [c["name"] for c in info.get("colinfo", [])]
            out.append(entry)
    return out


def compress_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], qlevel: float = DEFAULT_QLEVEL) -> Path:
    """Copy every HDU of ``src`` to ``dst``, images RICE-compressed (tables copied as they are)."""
    return _recode(Path(src), Path(dst), compress=True, qlevel=qlevel)


def decompress_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                    keep: Collection[str] | None = None) -> Path:
    """Copy every HDU of ``src`` to ``dst`` uncompressed (what SExtractor can read).

    ``keep``: EXTNAMEs (upper case) whose pixels are copied; the other image extensions are written with
    their header and no data (HDU numbers stay those of ``src``). None: every HDU.
    """
    return _recode(Path(src), Path(dst), compress=False, qlevel=DEFAULT_QLEVEL, keep=keep)


def _recode(src: Path, dst: Path, *, compress: bool, qlevel: float, keep: Collection[str] | None = None) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        with _open(src) as fin, fitsio.FITS(tmp, "rw", clobber=True) as fout:
            for i, hdu in enumerate(fin):
                header = hdu.read_header()
                extname = hdu.get_extname() or None
                if hdu.get_exttype() == "IMAGE_HDU":
                    skip = keep is not None and i > 0 and (extname or "").upper() not in keep
                    try:
                        data = hdu.read() if hdu.has_data() and not skip else None
                    except (OSError, ValueError) as err:
                        msg = f"{src}[{i}]: cannot read image data, file truncated or corrupt ({err})"
                        raise FitsError(msg) from err
                    records = _header_records(header)
                    if data is None and i == 0:
                        fout.write_image(None, extname=extname, header=records)
                        continue
                    if data is None:  # an extension without pixels (NAXIS1 = 0), its header kept
                        fout.create_image_hdu(dims=[0], dtype=np.uint8, extname=extname)
                        fout[-1].write_keys(records or [])
                        continue
                    if compress and i == 0:
                        # A compressed image cannot be the primary HDU: an empty primary, and the
                        # image (with its header: WCS and all) in the first extension.
                        fout.write_image(None)
                    seed = dither_seed_for(f"{dst.name}:{extname or i}")
                    fout.write_image(data, extname=extname, header=records,
                                     **_compress_args(data, compress, qlevel, seed))
                else:
                    data = hdu.read()
                    fout.write_table(data, extname=extname, header=_header_records(header))
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dst


@dataclass
class Staging:
    """A per-job staging folder on the RAM disk, removed on exit (also on failure).

    Parameters
    ----------
    job : str
        Job name (a safe token); the folder is ``<root>/<job>``.
    root : str
        Parent folder, default ``/dev/shm/cosmodm``; where it cannot be created
        (no ``/dev/shm``), a temp folder is used instead and that is logged.
    max_fraction : float
        :meth:`reserve` refuses to let the filesystem grow fuller than this.
    """

    job: str
    root: str = "/dev/shm/cosmodm"
    max_fraction: float = 0.5
    path: Path | None = None
    bytes_written: int = 0

    def __enter__(self) -> Self:
        validate_token("job", self.job)
        root = Path(self.root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            os.chmod(root, 0o1777) if root.stat().st_uid == os.getuid() else None
            self.path = Path(tempfile.mkdtemp(prefix=f"{self.job}.", dir=root))
        except OSError as err:
            log.warning("RAM disk %s unavailable (%s); staging in a temp folder instead", root, err)
            self.path = Path(tempfile.mkdtemp(prefix=f"cosmodm-{self.job}."))
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the staging folder and everything in it."""
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def reserve(self, nbytes: int) -> None:
        """Raise :class:`StagingFullError` if ``nbytes`` more would exceed ``max_fraction``."""
        assert self.path is not None, "use Staging as a context manager"
        st = os.statvfs(self.path)
        # as df computes Use%: blocks reserved for root (ext4's 5%) are neither used nor ours to fill
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        total = used + st.f_bavail * st.f_frsize
        if total and (used + nbytes) / total > self.max_fraction:
            msg = (
                f"staging {nbytes / 1e6:.1f} MB into {self.path} would fill its filesystem to "
                f"{100 * (used + nbytes) / total:.0f}% (limit {100 * self.max_fraction:.0f}%): "
                "free space there or raise site.ramdisk.max_fraction"
            )
            raise StagingFullError(msg)

    def stage(self, src: str | os.PathLike[str], name: str | None = None) -> Path:
        """Copy a file into the staging folder (after :meth:`reserve`); returns the new path."""
        assert self.path is not None, "use Staging as a context manager"
        src = Path(src)
        size = src.stat().st_size
        self.reserve(size)
        dst = self.path / (name or src.name)
        shutil.copyfile(src, dst)
        self.bytes_written += size
        return dst

    def file(self, name: str) -> Path:
        """A path inside the staging folder (the caller writes it)."""
        assert self.path is not None, "use Staging as a context manager"
        return self.path / name


@contextlib.contextmanager
def staging(job: str, root: str = "/dev/shm/cosmodm", max_fraction: float = 0.5) -> Iterator[Staging]:
    """Context manager shorthand for :class:`Staging`."""
    with Staging(job=job, root=root, max_fraction=max_fraction) as st:
        yield st
