"""Running the Astromatic binaries: argument lists, captured output, versions."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cosmodm_ops.config import config_dir

__all__ = [
    "ToolError",
    "ToolResult",
    "config_path",
    "psfex_args",
    "run_measured",
    "run_tool",
    "scamp_args",
    "sextractor_args",
    "tool_versions",
]

log = logging.getLogger(__name__)

#: Binary names on Debian (there is no ``sex``; SWarp is capitalised).
BINARIES = {"sextractor": "source-extractor", "scamp": "scamp", "psfex": "psfex", "swarp": "SWarp"}


class ToolError(RuntimeError):
    """An Astromatic tool failed: the message names the command, exit code and stderr tail."""

    def __init__(self, msg: str, *, argv: Sequence[str] = (), returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(msg)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class ToolResult:
    """What a tool run left behind: command, exit code, stderr text, wall seconds and CPU seconds.

    ``cpu_s`` is the user + system CPU time of the tool's own process (from ``wait4``), so it is
    exact even when other work runs in the calling process or its threads.
    """

    argv: list[str]
    returncode: int
    stderr: str
    seconds: float
    cpu_s: float = 0.0


def config_path(name: str) -> Path:
    """A file of ``include/configs/astromatic/`` (parameter lists, config files)."""
    path = config_dir() / "astromatic" / name
    if not path.exists():
        msg = f"Astromatic config file {path} is missing (COSMODM_CONFIG_DIR points at {config_dir()})"
        raise FileNotFoundError(msg)
    return path


def _flags(options: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        if isinstance(value, bool):
            value = "Y" if value else "N"
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        out += [f"-{key}", str(value)]
    return out


def run_tool(tool: str, args: Sequence[str], *, cwd: str | Path, timeout: float = 1800.0) -> ToolResult:
    """Run one Astromatic tool with an argument list (no shell) in ``cwd``.

    Parameters
    ----------
    tool : str
        'sextractor', 'scamp', 'psfex' or 'swarp' (or a binary name).
    args : sequence of str
        Arguments after the binary.
    cwd : path
        Working folder (the tools write side files there).
    timeout : float
        Seconds before the run is killed (raises :class:`ToolError`).
    """
    binary = BINARIES.get(tool, tool)
    exe = shutil.which(binary)
    if exe is None:
        msg = f"{binary} is not on PATH: install the Debian package (make os-deps)"
        raise ToolError(msg, argv=[binary, *args])
    argv = [exe, *[str(a) for a in args]]
    t0 = time.perf_counter()
    returncode, stderr, cpu_s, timed_out = run_measured(argv, cwd=cwd, timeout=timeout)
    seconds = time.perf_counter() - t0
    if timed_out:
        msg = f"{binary} timed out after {timeout:.0f} s: {' '.join(argv)}"
        raise ToolError(msg, argv=argv)
    if returncode != 0 or "> Error" in stderr or "*Error*" in stderr:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        msg = f"{binary} failed (exit {returncode}) in {cwd}: {' '.join(argv)}\n{tail}"
        raise ToolError(msg, argv=argv, returncode=returncode, stderr=stderr)
    log.debug("%s took %.2f s (%.2f s CPU)", binary, seconds, cpu_s)
    return ToolResult(argv=argv, returncode=returncode, stderr=stderr, seconds=seconds, cpu_s=cpu_s)


def run_measured(argv: list[str], *, cwd: str | Path, timeout: float) -> tuple[int, str, float, bool]:
    """Run ``argv``, reap it with ``os.wait4`` and return (exit code, stderr, CPU seconds, timed out).

    ``subprocess.run`` reaps the child itself and drops its resource usage; reaping it here keeps
    the child's own user + system time. Output goes to unnamed temp files (no pipe to drain), and a
    timer kills the child at ``timeout``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        expired = threading.Event()

        def _kill() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    return proc.returncode, stderr, usage.ru_utime + usage.ru_stime, expired.is_set()


@functools.cache
def tool_versions() -> dict[str, str]:
    """Versions of the installed tools ({'source-extractor': '2.25.0', ...}); 'missing' if absent."""
    out: dict[str, str] = {}
    for binary in ("source-extractor", "scamp", "psfex", "SWarp", "funpack"):
        exe = shutil.which(binary)
        if exe is None:
            out[binary] = "missing"
            continue
        flag = "-V" if binary == "funpack" else "--version"
        try:
            proc = subprocess.run([exe, flag], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            out[binary] = "unknown"
            continue
        text = (proc.stdout or "") + (proc.stderr or "")
        m = re.search(r"version\s+([0-9][0-9.]*)", text, re.IGNORECASE) or re.search(r"([0-9]+\.[0-9.]+)", text)
        out[binary] = m.group(1).rstrip(".") if m else "unknown"
    return out


def sextractor_args(
    image: str | Path,
    catalog: str | Path,
    *,
    weight: str | Path | None = None,
    flag: str | Path | None = None,
    params: str = "single_epoch_pass1.param",
    psf: str | Path | None = None,
    gain: float = 0.0,
    saturate: float = 1e30,
    pixel_scale: float = 0.0,
    seeing_arcsec: float = 1.2,
    detect_thresh: float = 1.5,
    detect_minarea: int = 5,
    mag_zeropoint: float = 25.0,
    phot_apertures: Sequence[float] = (7.0, 12.0, 20.0),
    extra: Mapping[str, object] | None = None,
) -> list[str]:
    """SExtractor arguments: config file of include/configs/astromatic plus per-CCD values.

    Images are in electrons (GAIN is then 1 for an image in e-, but the weight map
    carries the noise; ``gain`` is passed so Poisson noise of sources is counted).
    """
    opts: dict[str, object] = {
        "c": config_path("single_epoch.sex"),
        "PARAMETERS_NAME": config_path(params),
        "FILTER_NAME": config_path("gauss_3.0_5x5.conv"),
        "STARNNW_NAME": config_path("default.nnw"),
        "CATALOG_NAME": catalog,
        "CATALOG_TYPE": "FITS_LDAC",
        "GAIN": gain,
        "SATUR_LEVEL": saturate,
        "PIXEL_SCALE": pixel_scale,
        "SEEING_FWHM": seeing_arcsec,
        "DETECT_THRESH": detect_thresh,
        "ANALYSIS_THRESH": detect_thresh,
        "DETECT_MINAREA": detect_minarea,
        "MAG_ZEROPOINT": mag_zeropoint,
        "PHOT_APERTURES": list(phot_apertures),
        "CHECKIMAGE_TYPE": "NONE",
        "VERBOSE_TYPE": "QUIET",
        "WRITE_XML": "N",
    }
    if weight is not None:
        opts["WEIGHT_TYPE"] = "MAP_WEIGHT"
        opts["WEIGHT_IMAGE"] = weight
    if flag is not None:
        opts["FLAG_IMAGE"] = flag
    if psf is not None:
        opts["PSF_NAME"] = psf
    opts.update(extra or {})
    c = opts.pop("c")
    return [str(image), "-c", str(c), *_flags(opts)]


def psfex_args(catalog: str | Path, *, psf_size: int = 35, psfvar_degrees: int = 2, outdir: str | Path = ".",
               extra: Mapping[str, object] | None = None) -> list[str]:
    """PSFEx arguments (settings that worked here: ENVIRONMENT.md)."""
    opts: dict[str, object] = {
        "PSF_SIZE": f"{psf_size},{psf_size}",
        "PSFVAR_DEGREES": psfvar_degrees,
        "PSF_DIR": outdir,
        "CHECKPLOT_TYPE": "NONE",
        "CHECKIMAGE_TYPE": "NONE",
        "WRITE_XML": "N",
        "VERBOSE_TYPE": "QUIET",
    }
    opts.update(extra or {})
    return [str(catalog), "-c", str(config_path("single_epoch.psfex")), *_flags(opts)]


def scamp_args(catalogs: Sequence[str | Path], reference: str | Path, *, distort_degrees: int = 3,
               match: bool = True, extra: Mapping[str, object] | None = None) -> list[str]:
    """SCAMP arguments against a reference LDAC file (``-ASTREF_CATALOG FILE``)."""
    opts: dict[str, object] = {
        "ASTREF_CATALOG": "FILE",
        "ASTREFCAT_NAME": reference,
        "MATCH": match,
        "CROSSID_RADIUS": 5.0,
        "DISTORT_DEGREES": distort_degrees,
        "SOLVE_PHOTOM": "N",
        "CHECKPLOT_TYPE": "NONE",
        "WRITE_XML": "N",
        "VERBOSE_TYPE": "QUIET",
        "HEADER_SUFFIX": ".head",
    }
    opts.update(extra or {})
    return [*[str(c) for c in catalogs], "-c", str(config_path("single_epoch.scamp")), *_flags(opts)]
