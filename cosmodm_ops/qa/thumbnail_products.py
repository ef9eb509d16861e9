"""Thumbnail products: read a job's images, render with :mod:`cosmodm_ops.qa.thumbnails`, write the PNG.

Called by the single-epoch and coadd runners (one line each) just before they write their
manifest; the PNG becomes a ``thumbnail`` product with the job's tags. A preview is a
convenience: a read or render error is logged and the job goes on without one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cosmodm_ops.manifest import ManifestProduct
from cosmodm_ops.qa.thumbnails import bin_image, encode_png, focal_plane_preview, stretch

__all__ = ["ccd_preview", "coadd_thumbnail", "exposure_thumbnail", "preview_binning"]

log = logging.getLogger(__name__)

#: Longest side of a preview (pixels).
PREVIEW_SIZE = 256


def _write(png: bytes, path: Path, outdir: Path, tags: dict[str, Any]) -> ManifestProduct:
    from cosmodm_ops.fits import file_sha256

    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return ManifestProduct(kind="thumbnail", tags={**tags, "kind": "thumbnail"},
                           path=str(path.relative_to(outdir)), sha256=file_sha256(path), size=path.stat().st_size)


def preview_binning(camera: Any) -> int:
    """Block size (pixels of a full-size CCD) of the exposure preview of ``camera``."""
    from cosmodm_ops.cameras.layout import focal_plane

    span_px = max(focal_plane(camera).extent_deg()) * 3600.0 / camera.pixel_scale
    return max(1, int(span_px // (2 * PREVIEW_SIZE)))


def ccd_preview(image: Any, factor: int, ccd_nx: int) -> Any:
    """One CCD binned for the preview (``factor`` from :func:`preview_binning`; a smaller test image is binned
    to the same scale)."""
    return bin_image(image, max(1, round(factor * image.shape[1] / ccd_nx)))


def exposure_thumbnail(outdir: str | os.PathLike[str], products: Sequence[ManifestProduct], camera: Any,
                       tags: dict[str, Any], binned: dict[int, Any] | None = None) -> ManifestProduct | None:
    """A focal-plane preview of the job's ``image`` products (None when there are none or it fails).

    Parameters
    ----------
    outdir : path
        The job's output folder (product paths are relative to it).
    products : sequence of ManifestProduct
        The job's products; those of kind ``image`` (one per CCD, tag ``ccd``) are read.
    camera : CameraConfig
        The camera, for the CCD positions (:func:`cosmodm_ops.cameras.layout.focal_plane`).
    tags : dict
        Tags of the exposure (kind is replaced by ``thumbnail``, ccd by None).
    binned : dict, optional
        CCDNUM -> that CCD already binned by :func:`ccd_preview` (the workers bin their CCD while it is in
        memory); the other CCDs' image products are read.
    """
    from cosmodm_ops.cameras.layout import focal_plane
    from cosmodm_ops.fits import read_image

    outdir = Path(outdir)
    images = [p for p in products if p.kind == "image" and p.tags.get("ccd") is not None]
    if not images:
        return None
    try:
        fp = focal_plane(camera)
        factor = preview_binning(camera)
        ccds, centres = {}, {}
        for p in images:
            c = int(p.tags["ccd"])
            info = fp.ccd(c)
            if binned and c in binned:
                ccds[c] = binned[c]
            else:
                ccds[c] = ccd_preview(read_image(outdir / p.path)[0], factor, camera.ccd_nx)
            centres[c] = (info.x_mm / camera.pixel_size_mm / factor, info.y_mm / camera.pixel_size_mm / factor)
        png = encode_png(focal_plane_preview(ccds, centres, size=PREVIEW_SIZE))
        return _write(png, outdir / "thumbnail.png", outdir, {**tags, "ccd": None})
    except Exception as err:  # noqa: BLE001 - a missing preview never fails the exposure
        log.warning("no focal-plane thumbnail for %s: %s", outdir, err)
        return None


def coadd_thumbnail(image: str | os.PathLike[str], outdir: str | os.PathLike[str],
                    tags: dict[str, Any]) -> ManifestProduct | None:
    """A binned preview of a coadd image (None when it fails); written as ``<stem>_thumbnail.png``."""
    from cosmodm_ops.fits import read_image

    outdir, image = Path(outdir), Path(image)
    try:
        data, _ = read_image(image)
        factor = max(1, int(max(data.shape) // PREVIEW_SIZE))
        png = encode_png(stretch(bin_image(data, factor)[::-1]))
        stem = image.name.split(".")[0]
        return _write(png, image.with_name(f"{stem}_thumbnail.png"), outdir, tags)
    except Exception as err:  # noqa: BLE001 - a missing preview never fails the coadd
        log.warning("no coadd thumbnail for %s: %s", image, err)
        return None
