"""Format anchors of ``cosmodm bench exposure``: what the products' FITS format alone costs, measured with the
reference tools on the run's own files, so the own-code share has a floor to be read against.

The design prescribes the formats (RICE tile-compressed raw input; image at q = 4 with dithering, weight at
q = 1, mask lossless), so their compression and decompression is work any implementation does. The anchors are
the CPU seconds per CCD of ``fpack`` compressing one CCD's image, weight and mask with those settings (from
their ``funpack``-ed copies) and of ``funpack`` decompressing the raw exposure (divided by its CCDs). With the
tools' own CPU (SExtractor, PSFEx, SCAMP) they give two floors of the run:

* ``own_share_floor``: the own-code share if our code did nothing but the prescribed format work,
  ``format_floor_s_per_ccd / cpu_per_ccd``;
* ``tools_core_minutes``: the core-minutes of the third-party tools alone, scaled to the exposure.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["format_anchors"]

#: fpack arguments per product (the settings of ``single_epoch/outputs.py``).
FPACK_ARGS = {"image": ["-q", "4"], "weight": ["-q", "1"], "mask": []}


def _timed(argv: list[str], cwd: str) -> float:
    """CPU seconds of one tool run (``astromatic.run_measured``: the child's own rusage); it must succeed."""
    from cosmodm_ops.astromatic.tools import run_measured

    code, stderr, cpu_s, _ = run_measured(argv, cwd=cwd, timeout=600.0)
    if code != 0:
        msg = f"{argv[0]} exited {code}: {stderr[-500:]}"
        raise RuntimeError(msg)
    return cpu_s


def format_anchors(products: Path, raw: Path, n_cam: int, results: dict[str, Any]) -> dict[str, Any]:
    """Anchors on the first CCD's products under ``products`` and the raw file ``raw`` (``n_cam`` CCDs);
    ``results`` gives the run's per-CCD CPU and tool CPU (keys of the exposure benchmark). Empty when fpack
    or funpack is missing or no product is found (the bench then prints no floor)."""
    fpack, funpack = shutil.which("fpack"), shutil.which("funpack")
    found = {kind: sorted(products.glob(f"*_{kind}.fits.fz")) for kind in FPACK_ARGS}
    if not (fpack and funpack) or not all(found.values()):
        return {}
    with tempfile.TemporaryDirectory(prefix="anchor.") as tmp:
        compress = 0.0
        for kind, args in FPACK_ARGS.items():
            plain = Path(tmp) / f"{kind}.fits"
            subprocess.run([funpack, "-O", str(plain), str(found[kind][0])], check=True, capture_output=True)
            compress += _timed([fpack, *args, "-O", str(plain) + ".fz", str(plain)], tmp)
        unpack = _timed([funpack, "-O", str(Path(tmp) / "raw.fits"), str(raw)], tmp) / n_cam
    floor = compress + unpack
    n_run = max(int(results.get("n_ccds") or 1), 1)
    tools = float(results.get("cpu_astromatic_s") or 0.0)
    per_ccd = results.get("cpu_per_ccd_s") or (float(results.get("cpu_total_s") or 0.0) / n_run)
    return {
        "fpack_products_cpu_s_per_ccd": round(compress, 3),
        "funpack_raw_cpu_s_per_ccd": round(unpack, 3),
        "format_floor_s_per_ccd": round(floor, 3),
        "own_share_floor": round(floor / per_ccd, 4) if per_ccd else None,
        "tools_core_minutes": round(tools / n_run * n_cam / 60.0, 2),
        "format_anchor_method": "fpack (image -q 4, weight -q 1, mask lossless) of one CCD's funpacked products; "
                                "funpack of the raw file / its CCDs; CPU of the child processes",
    }
