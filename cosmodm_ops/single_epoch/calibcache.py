"""The per-node calibration cache: each calibration file staged once per node, as plain arrays.

Calibrations change once per night (or less) while a node runs many exposures of that night. Without the
cache every exposure job reads the four calibration files from the shared disk (0.8 GB for DECam) and
decompresses each CCD's HDUs (about 1.0 s of CPU per CCD). With it, the first job of a node builds one
*entry* per file in a node-local folder on the RAM disk (``single_epoch.calib_cache_path``, default
``<site.ramdisk.path>/calib-cache``: not the job's own RAM-disk folder, which a batch job removes on exit),
and every later job memory-maps the entry's arrays.

An entry is the folder ``<cache>/<key>/`` with one ``<EXTNAME>.npy`` per CCD (float32; the bad-pixel map as
uint8, 1 = bad) and ``meta.json`` (the source file's identity and sha256, each array's size and crc32).

* **Key**: the source file's identity -- resolved path, size, mtime, ctime and inode (any rewrite, copy or
  touch of the file changes it). The file's sha256 is computed while the entry is built (the file is read
  once, into memory, and decompressed from there) and recorded for the manifests of every later job.
* **Checks**: a job that finds an entry checks ``meta.json`` against the source's identity and every array
  it will read against its recorded size and crc32 (about 10 ms per 32 MiB array). A stale or corrupt
  entry is moved aside to ``<cache>/quarantine/`` (never silently used) and built again.
* **Once per node**: a job builds or checks an entry holding ``<cache>/<key>.lock`` (``flock``); a
  concurrent job waits and then finds it built. An entry is built in ``<cache>/.tmp-<key>.*`` and renamed
  into place, so a killed build leaves no half entry. A job on part of an exposure adds only its CCDs'
  arrays; a later job adds what it needs (reading those HDUs from the source).
* **Eviction**: entries whose source file is gone or changed (their key can never be asked for again) are
  removed at once, entries of other keys not used for ``calib_cache_max_age_days`` too, then the
  least recently used ones while the cache holds more than ``calib_cache_max_gb``; quarantined entries
  go after the same age. A build that would fill the RAM disk beyond ``site.ramdisk.max_fraction`` is
  not made (the job reads that file as without a cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from cosmodm_ops.common import utc_now
from cosmodm_ops.config import Config
from cosmodm_ops.fits import StagingFullError
from cosmodm_ops.single_epoch.inputs import BadInputError
from cosmodm_ops.single_epoch.rawcalib import check_calib_file
from cosmodm_ops.single_epoch.rawcamera import camera_ccds

__all__ = ["CachedCalib", "CalibCache", "cache_folder", "load_calib", "source_identity", "stage_calibrations"]

log = logging.getLogger(__name__)

#: Entry layout version (an entry of another version is rebuilt).
FORMAT = 1
#: Roles stored as uint8 (1 where the source is nonzero); the others as float32.
_MASK_ROLES = frozenset({"bpm"})
_CHUNK = 1 << 22
#: A build folder older than this (s) belongs to a killed job.
_STALE_BUILD_S = 3600.0


@dataclass(frozen=True)
class CachedCalib:
    """A calibration file's cache entry as one job uses it.

    Attributes
    ----------
    role, source : str
        The calibration role (``bias``, ``flat``, ...) and the source file.
    folder : str
        The entry folder (``<EXTNAME>.npy`` files for :func:`load_calib`).
    key : str
    sha256 : str
        sha256 of the source file (computed when the entry was built).
    status : str
        ``hit``, ``built``, ``extended`` (arrays added for this job's CCDs) or ``rebuilt`` (the entry was
        stale or corrupt: moved aside to the quarantine and built again).
    bytes_read : int
        Bytes of the source file this job read (0 on a hit).
    shapes : dict
        EXTNAME -> shape of the job's arrays.
    """

    role: str
    source: str
    folder: str
    key: str
    sha256: str
    status: str
    bytes_read: int
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def source_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What keys a source file: resolved path, size, mtime, ctime and inode (no byte of it is read)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def _key(ident: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return f"{Path(ident['path']).name}-{digest}"


def load_calib(folder: str | os.PathLike[str], extname: str) -> np.ndarray:
    """One CCD's array of a cache entry, memory-mapped read-only (checked by the job's parent)."""
    return np.load(Path(folder) / f"{extname.upper()}.npy", mmap_mode="r")


def _plain(data: np.ndarray, role: str) -> np.ndarray:
    """The array as the detrend uses it: float32, or uint8 (1 = bad) for a mask role."""
    if role in _MASK_ROLES:
        return (data != 0).astype(np.uint8)
    return np.ascontiguousarray(data, dtype=np.float32)


def _crc(arr: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(arr)).cast("B"))


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); yields False when not blocking and busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


class CalibCache:
    """A node's calibration cache folder (see the module docstring).

    Parameters
    ----------
    folder : path
        The cache folder (created if needed).
    max_age_days : float
        Entries of other keys unused for longer are evicted.
    max_gb : float
        Size cap of the entries (GB): least recently used entries of other keys go first.
    max_fraction : float
        No build fills the folder's file system beyond this fraction (``site.ramdisk.max_fraction``).
    """

    def __init__(self, folder: str | os.PathLike[str], *, max_age_days: float = 2.0, max_gb: float = 12.0,
                 max_fraction: float = 0.5) -> None:
        self.folder = Path(folder)
        self.max_age_s = max_age_days * 86400.0
        self.max_bytes = int(max_gb * 1e9)
        self.max_fraction = max_fraction

    def get(self, role: str, source: str | os.PathLike[str], extnames: Iterable[str],
            check: Callable[[], None] | None = None) -> CachedCalib:
        """The entry of ``source`` holding the arrays of ``extnames``: checked, built or completed.

        ``check`` (the source file's check, raising ``BadInputError``) runs before an entry is built or
        completed, never on a hit: a warm cache reads nothing of the source.

        Raises
        ------
        StagingFullError
            Building would fill the RAM disk beyond ``max_fraction`` (the caller reads the file as without
            a cache).
        OSError
            The source changed while it was read, or the cache folder cannot be written (transient).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        ident = source_identity(source)
        key = _key(ident)
        need = sorted({e.upper() for e in extnames})
        entry = self.folder / key
        with _locked(self.folder / f"{key}.lock"):
            meta = _read_meta(entry)
            status, nread = "hit", 0
            if meta is not None or entry.exists():
                problem = _problem(entry, meta, ident, need)
                if problem:
                    self._quarantine(entry, problem)
                    meta, status = None, "rebuilt"
            missing = need if meta is None else [e for e in need if e not in meta["hdus"]]
            if missing and check is not None:
                check()
            if meta is None:
                meta, nread = self._build(entry, role, ident, need)
                status = "built" if status == "hit" else status
            elif missing:
                nread = self._extend(entry, meta, role, ident, missing)
                status = "extended"
            (entry / ".used").touch()
        return CachedCalib(role=role, source=str(source), folder=str(entry), key=key, sha256=meta["sha256"],
                           status=status, bytes_read=nread,
                           shapes={e: tuple(meta["hdus"][e]["shape"]) for e in need})

    def _reserve(self, nbytes: int) -> None:
        st = os.statvfs(self.folder)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        total = used + st.f_bavail * st.f_frsize
        if total and (used + nbytes) / total > self.max_fraction:
            msg = (f"calibration cache {self.folder}: {nbytes / 1e6:.0f} MB more would fill its file system to "
                   f"{100 * (used + nbytes) / total:.0f}% (limit {100 * self.max_fraction:.0f}%, "
                   "site.ramdisk.max_fraction): lower single_epoch.calib_cache_max_gb or free space there")
            raise StagingFullError(msg)

    def _build(self, entry: Path, role: str, ident: dict[str, Any], need: list[str]) -> tuple[dict[str, Any], int]:
        """A new entry: the source read once into memory (hashed), the arrays of ``need`` decompressed from
        there; built in a temp folder, renamed into place."""
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}.", dir=self.folder))
        try:
            with _source_in_memory(ident) as (fits_path, sha, nread):
                meta = {"format": FORMAT, "role": role, "source": ident, "sha256": sha, "built": utc_now(),
                        "hdus": {}}
                _write_arrays(tmp, meta, fits_path, role, need, self._reserve)
            _write_meta(tmp, meta)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("calibration cache: built %s (%d CCDs) from %s", entry, len(need), ident["path"])
        return meta, nread

    def _extend(self, entry: Path, meta: dict[str, Any], role: str, ident: dict[str, Any], missing: list[str]
                ) -> int:
        """Add the arrays of ``missing`` to an entry, read from the source (its identity checked after)."""
        with fitsio.FITS(ident["path"]) as f:
            nread = _write_arrays(entry, meta, f, role, missing, self._reserve)
        if source_identity(ident["path"]) != ident:
            msg = f"{ident['path']}: changed while the calibration cache read it; retry the job"
            raise OSError(msg)
        _write_meta(entry, meta)
        return nread

    def _quarantine(self, entry: Path, problem: str) -> None:
        """Move a stale or corrupt entry aside (``<cache>/quarantine/<key>.<utc>``), logging why."""
        qdir = self.folder / "quarantine"
        qdir.mkdir(exist_ok=True)
        dst = qdir / f"{entry.name}.{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 10**9:09d}"
        log.warning("calibration cache: %s: %s; moved to %s and built again", entry, problem, dst)
        os.rename(entry, dst)

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove entries whose source file is gone or changed (orphans) and entries of keys not in ``keep``
        unused for ``max_age_days``, then the least recently used
        while the cache is over ``max_gb``; quarantined entries and dead builds past their age. The removed
        folders' names."""
        keep = set(keep)
        now = time.time()
        removed: list[str] = []
        entries = []
        for p in self.folder.iterdir() if self.folder.is_dir() else []:
            if not p.is_dir() or p.name == "quarantine":
                continue
            if p.name.startswith(".tmp-"):
                if now - p.stat().st_mtime > _STALE_BUILD_S:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
                continue
            used = p / ".used"
            entries.append((used.stat().st_mtime if used.exists() else p.stat().st_mtime, p))
        entries.sort()
        total = sum(_size(p) for _, p in entries)
        for last, p in entries:
            orphan = p.name not in keep and _orphaned(p)
            if not orphan and (p.name in keep or (now - last <= self.max_age_s and total <= self.max_bytes)):
                continue
            size = _size(p)
            if self._remove(p):
                removed.append(p.name)
                total -= size
        for lock in self.folder.glob("*.lock"):  # of entries never built (bad input) or removed
            entry = self.folder / lock.name[: -len(".lock")]
            if not entry.exists() and now - lock.stat().st_mtime > self.max_age_s:
                with _locked(lock, blocking=False) as got:
                    if got:
                        lock.unlink()
        qdir = self.folder / "quarantine"
        for p in qdir.iterdir() if qdir.is_dir() else []:
            if now - p.stat().st_mtime > self.max_age_s:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(f"quarantine/{p.name}")
        return removed

    def _remove(self, entry: Path) -> bool:
        """Remove an entry unless a job holds its lock (renamed first: no job sees half an entry)."""
        with _locked(self.folder / f"{entry.name}.lock", blocking=False) as got:
            if not got:
                return False
            trash = self.folder / f".tmp-evicted-{entry.name}.{os.getpid()}"
            os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{entry.name}.lock").unlink()
        return True


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


@contextlib.contextmanager
def _source_in_memory(ident: dict[str, Any]) -> Iterator[tuple[Any, str, int]]:
    """An open ``fitsio.FITS`` of the source read once into an anonymous memory file (Linux ``memfd``; the
    file itself elsewhere), its sha256 and the bytes read. Raises OSError when the source changed meanwhile."""
    src = ident["path"]
    h = hashlib.sha256()
    nread = 0
    fd = os.memfd_create("cosmodm-calib") if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir() \
        else None
    try:
        with open(src, "rb") as fin, (open(fd, "wb", closefd=False) if fd is not None
                                      else contextlib.nullcontext()) as mem:
            while block := fin.read(_CHUNK):
                h.update(block)
                nread += len(block)
                if mem is not None:
                    mem.write(block)
        if source_identity(src) != ident or nread != ident["size"]:
            msg = f"{src}: changed while the calibration cache read it; retry the job"
            raise OSError(msg)
        with fitsio.FITS(f"/proc/self/fd/{fd}" if fd is not None else src) as f:
            yield f, h.hexdigest(), nread
    finally:
        if fd is not None:
            os.close(fd)


def _write_arrays(folder: Path, meta: dict[str, Any], f: Any, role: str, extnames: list[str],
                  reserve: Any) -> int:
    """Decompress each HDU of ``extnames`` from the open FITS ``f`` into ``folder/<EXTNAME>.npy`` (temp name,
    then renamed), recording size and crc32 in ``meta``; the compressed bytes of those HDUs."""
    names = {(hdu.get_extname() or "").upper(): i for i, hdu in enumerate(f)}
    nread = 0
    for ext in extnames:
        if ext not in names:
            msg = f"{meta['source']['path']} HDU {ext!r}: key 'EXTNAME' not found: the {role} file has no HDU for it"
            raise BadInputError(msg)
        hdu = f[names[ext]]
        off = hdu.get_offsets()
        nread += int(off["data_end"] - off["header_start"])
        try:
            arr = _plain(hdu.read(), role)
        except (OSError, ValueError) as err:
            msg = (f"{meta['source']['path']} HDU {names[ext]} ({ext}): cannot read the {role} pixels (corrupt?): "
                   f"{err}; transfer the file again from its source")
            raise BadInputError(msg) from err
        reserve(arr.nbytes)
        tmp = folder / f".{ext}.npy.part"
        with open(tmp, "wb") as out:
            np.save(out, arr)
        dst = folder / f"{ext}.npy"
        os.rename(tmp, dst)
        meta["hdus"][ext] = {"bytes": dst.stat().st_size, "crc32": _crc(arr), "dtype": arr.dtype.str,
                             "shape": list(arr.shape)}
    return nread


def _orphaned(entry: Path) -> bool:
    """True when the entry's source file is gone or changed: its key can never be asked for again."""
    meta = _read_meta(entry)
    source = meta.get("source") if meta else None
    if not isinstance(source, dict) or "path" not in source:
        return False  # a build in progress or a broken entry: the age rule and _problem deal with it
    try:
        return source_identity(source["path"]) != source
    except OSError:
        return True


def _read_meta(entry: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    tmp = folder / ".meta.json.part"
    tmp.write_text(json.dumps(meta, indent=1))
    os.rename(tmp, folder / "meta.json")


def _problem(entry: Path, meta: dict[str, Any] | None, ident: dict[str, Any], need: list[str]) -> str | None:
    """Why an entry must not be used (None: good for the arrays of ``need`` it holds)."""
    if meta is None:
        return "meta.json missing or unreadable"
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')!r}, expected {FORMAT}"
    if meta.get("source") != ident or not isinstance(meta.get("hdus"), dict) or "sha256" not in meta:
        return "its source identity does not match the file (stale)"
    for ext in need:
        rec = meta["hdus"].get(ext)
        if rec is None:
            continue
        path = entry / f"{ext}.npy"
        try:
            if path.stat().st_size != rec["bytes"]:
                return f"{path.name}: {path.stat().st_size} bytes, expected {rec['bytes']} (truncated?)"
            arr = np.load(path, mmap_mode="r")
            ok = arr.dtype.str == rec["dtype"] and list(arr.shape) == rec["shape"] and _crc(arr) == rec["crc32"]
            del arr
        except (OSError, ValueError, KeyError) as err:
            return f"{path.name}: unreadable ({err})"
        if not ok:
            return f"{path.name}: dtype, shape or crc32 differs from meta.json (corrupt)"
    return None


def cache_folder(cfg: Config) -> Path:
    """The node's calibration cache folder: ``single_epoch.calib_cache_path`` or ``<site.ramdisk.path>/calib-cache``."""
    return Path(cfg.single_epoch.calib_cache_path or Path(cfg.site.ramdisk.path) / "calib-cache")


def stage_calibrations(cfg: Config, calib_inputs: list[tuple[str, str]], extnames: Iterable[str]
                       ) -> dict[str, CachedCalib]:
    """The cache entries of a job's calibration files (role -> entry), checked, built or completed for the
    CCDs ``extnames``; then the eviction. Empty when ``single_epoch.calib_cache`` is off. A file whose entry
    would fill the RAM disk is left out (logged): the job reads it as without a cache."""
    se = cfg.single_epoch
    if not se.calib_cache or not calib_inputs:
        return {}
    cache = CalibCache(cache_folder(cfg), max_age_days=se.calib_cache_max_age_days, max_gb=se.calib_cache_max_gb,
                       max_fraction=cfg.site.ramdisk.max_fraction)
    need = sorted(set(extnames))
    ccds = camera_ccds(cfg.camera)
    shape = (cfg.camera.ccd_ny, cfg.camera.ccd_nx)
    out: dict[str, CachedCalib] = {}
    for role, path in calib_inputs:
        check = functools.partial(check_calib_file, Path(path), role, ccds, shape)
        try:
            entry = cache.get(role, path, need, check=check)
        except StagingFullError as err:
            log.warning("%s; %s is read without the cache", err, path)
            check()
            continue
        bad = {e: s for e, s in entry.shapes.items() if s != shape}
        if bad:
            msg = (f"{path}: the calibration cache holds HDUs of shape {bad} (keys 'NAXIS2','NAXIS1'), expected the "
                   f"trimmed shape {shape} of camera {cfg.camera.name}: use the calibration made for this camera")
            raise BadInputError(msg)
        out[role] = entry
    try:
        cache.evict(keep={c.key for c in out.values()})
    except OSError as err:  # eviction is housekeeping: never the job's failure
        log.warning("calibration cache %s: eviction failed: %s", cache.folder, err)
    return out
