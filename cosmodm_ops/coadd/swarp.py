"""SWarp coadds of a tile: command rendering (pure), a runner, and a pseudo-colour PNG.

:func:`swarp_command` renders the full ``SWarp`` command line for one tile and band:
``-WEIGHT_TYPE MAP_WEIGHT -COMBINE_TYPE WEIGHTED -RESAMPLING_TYPE LANCZOS3
-PIXELSCALE_TYPE MANUAL``, the output centre, size and pixel scale from the tile's WCS,
and one flux scale per input from the relative zeropoints (``FLXSCALE`` given through
``-FSCALE_DEFAULT`` with a header keyword that no input carries, so the inputs' own
headers are not consulted and never need writing to). SWarp scales the weights by
``1/FLXSCALE^2`` itself. With ``compress=True`` :func:`run_swarp` lets SWarp write
plain FITS into the work folder and RICE-compresses them with
:func:`cosmodm_ops.fits.write_image` (q=4, dithered): SWarp 2.41.5's own
``-TILE_COMPRESS Y`` appends ``.fz`` to the names and fails to copy headers (".tmp"
errors), and its quantization cannot be chosen.

:func:`flux_scales` turns zeropoints into FLXSCALE: an image with ``m = -2.5 log10(counts)
+ ZP_i`` brought to the coadd zeropoint ``ZP_out`` gets ``10^(0.4 (ZP_out - ZP_i))``.

:func:`run_swarp` runs it (binary ``SWarp``) in a work folder and returns the outputs;
:func:`color_png` writes a Lupton et al. (2004) asinh RGB composite of three bands.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmodm_ops.coadd.tiling import Tile

__all__ = [
    "SwarpError",
    "SwarpInput",
    "SwarpResult",
    "color_png",
    "flux_scales",
    "run_swarp",
    "swarp_command",
]

#: A header keyword no input carries: FLXSCALE then comes from -FSCALE_DEFAULT, one value per input.
_NO_FSCALE_KEYWORD = "CDMFSCAL"


class SwarpError(RuntimeError):
    """SWarp failed or is missing; carries its stderr."""

    def __init__(
        self, message: str, stdout: str = "", stderr: str = "", returncode: int | None = None
    ) -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode


@dataclass(frozen=True)
class SwarpInput:
    """One input image of a coadd.

    Attributes
    ----------
    image, weight : Path
        Science image and its inverse-variance weight map (FITS, may be tile-compressed;
        ``[ext]`` suffixes as SWarp accepts them).
    flxscale : float
        Multiplicative flux scale to the coadd's zeropoint.
    """

    image: Path
    weight: Path
    flxscale: float = 1.0


@dataclass(frozen=True)
class SwarpResult:
    """Outputs of :func:`run_swarp`."""

    image: Path
    weight: Path
    command: list[str]
    stderr: str


def flux_scales(zeropoints: Sequence[float] | np.ndarray, target_zeropoint: float = 30.0) -> np.ndarray:
    """FLXSCALE per image: ``10^(0.4 (target - ZP_i))`` (ZP in mag for 1 count; NaN ZP -> 0, i.e. left out)."""
    zp = np.asarray(zeropoints, dtype=float)
    out = 10.0 ** (0.4 * (target_zeropoint - zp))
    return np.where(np.isfinite(out), out, 0.0)


def swarp_command(
    tile: Tile,
    inputs: Sequence[SwarpInput],
    out_image: Path,
    out_weight: Path,
    *,
    workdir: Path,
    binary: str = "SWarp",
    resampling: str = "LANCZOS3",
    combine: str = "WEIGHTED",
    subtract_back: bool = False,
    nthreads: int = 2,
    extra: dict[str, str] | None = None,
) -> list[str]:
    """The SWarp command line for one tile (pure: nothing is run or written).

    Parameters
    ----------
    tile : Tile
        Output centre, size and pixel scale.
    inputs : sequence of SwarpInput
        Images with flxscale > 0 (others are dropped).
    out_image, out_weight : Path
        Outputs (plain FITS).
    workdir : Path
        Resampled intermediates and virtual-memory files (a RAM disk is best).
    extra : dict, optional
        More ``-KEY VALUE`` settings; they override the defaults.
    """
    use = [i for i in inputs if i.flxscale > 0]
    if not use:
        msg = f"tile {tile.name}: no input image with a positive flux scale"
        raise SwarpError(msg)
    settings = {
        "IMAGEOUT_NAME": str(out_image),
        "WEIGHTOUT_NAME": str(out_weight),
        "WEIGHT_TYPE": "MAP_WEIGHT",
        "WEIGHT_IMAGE": ",".join(str(i.weight) for i in use),
        "COMBINE": "Y",
        "COMBINE_TYPE": combine,
        "RESAMPLING_TYPE": resampling,
        "CELESTIAL_TYPE": "EQUATORIAL",
        "PROJECTION_TYPE": "TAN",
        "CENTER_TYPE": "MANUAL",
        "CENTER": f"{tile.ra:.8f},{tile.dec:.8f}",
        "PIXELSCALE_TYPE": "MANUAL",
        "PIXEL_SCALE": f"{tile.pixel_scale:.6f}",
        "IMAGE_SIZE": f"{tile.npix},{tile.npix}",
        "FSCALE_KEYWORD": _NO_FSCALE_KEYWORD,
        "FSCALE_DEFAULT": ",".join(f"{i.flxscale:.9g}" for i in use),
        "FSCALASTRO_TYPE": "FIXED",
        "SUBTRACT_BACK": "Y" if subtract_back else "N",
        "BLANK_BADPIXELS": "Y",
        "TILE_COMPRESS": "N",
        "RESAMPLE_DIR": str(workdir),
        "VMEM_DIR": str(workdir),
        "DELETE_TMPFILES": "Y",
        "WRITE_XML": "N",
        "COPY_KEYWORDS": "BAND,FILTER",
        "NTHREADS": str(nthreads),
        "VERBOSE_TYPE": "NORMAL",
    }
    settings.update(extra or {})
    cmd = [binary, *(str(i.image) for i in use), "-c", "/dev/null"]
    for key, value in settings.items():
        cmd += [f"-{key}", value]
    return cmd


def run_swarp(
    tile: Tile,
    inputs: Sequence[SwarpInput],
    out_image: Path,
    out_weight: Path,
    *,
    workdir: Path,
    compress: bool = False,
    timeout: float = 3600.0,
    **kwargs: object,
) -> SwarpResult:
    """Run SWarp for one tile (see :func:`swarp_command`).

    With ``compress`` the outputs are written RICE-compressed (q=4) to ``out_image`` and
    ``out_weight`` (name them ``*.fits.fz``). Raises :class:`SwarpError` with SWarp's
    stderr on failure.
    """
    import fitsio

    from cosmodm_ops.fits import write_image

    binary = str(kwargs.pop("binary", "SWarp"))
    if shutil.which(binary) is None:
        msg = f"{binary} not found on PATH (Debian package 'swarp'; `make os-deps`)"
        raise SwarpError(msg)
    workdir.mkdir(parents=True, exist_ok=True)
    Path(out_image).parent.mkdir(parents=True, exist_ok=True)
    img_path = workdir / f"{tile.name}.swarp.fits" if compress else Path(out_image)
    wt_path = workdir / f"{tile.name}.swarp.weight.fits" if compress else Path(out_weight)
    cmd = swarp_command(tile, inputs, img_path, wt_path, workdir=workdir, binary=binary, **kwargs)  # type: ignore[arg-type]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout, check=False)
    if proc.returncode != 0 or not img_path.exists() or "ERROR" in proc.stderr:
        msg = f"SWarp failed for tile {tile.name} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        raise SwarpError(msg, proc.stdout, proc.stderr, proc.returncode)
    if compress:
        for src, dst in ((img_path, out_image), (wt_path, out_weight)):
            # write_image keeps the WCS with the compressed HDU (compress_file leaves it on the empty primary)
            data, header = fitsio.read(str(src), header=True)
            write_image(dst, data, header, compress=True)
            src.unlink()
    return SwarpResult(Path(out_image), Path(out_weight), cmd, proc.stderr)


def color_png(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    path: str | Path,
    *,
    stretch: float | None = None,
    q: float = 8.0,
    minimum: float | None = None,
) -> Path:
    """Write a pseudo-colour PNG (Lupton et al. 2004 asinh stretch) of three bands, e.g. i, r, g.

    ``minimum`` defaults to the median (sky) of each band's stack, ``stretch`` to 5 times
    the robust sky noise of the summed image; NaNs become black. North is up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import make_lupton_rgb

    imgs = [np.nan_to_num(np.asarray(a, dtype=np.float64)) for a in (red, green, blue)]
    if minimum is None:
        minimum = float(np.median(np.concatenate([a.ravel()[::97] for a in imgs])))
    if stretch is None:
        total = sum(imgs) / 3.0
        mad = float(np.median(np.abs(total - np.median(total))))
        stretch = max(5.0 * 1.4826 * mad, 1e-12)
    rgb = make_lupton_rgb(*imgs, minimum=minimum, stretch=stretch, Q=q)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, rgb, origin="lower")
    return path
