"""Where a product lives under the archive root: a pure function of its tags.

Layout (``<ext>`` follows the kind: ``.fits.fz`` for images, weights, masks, raws and
calibrations, ``.fits`` for catalogs, ``.psf``, ``.head``, ``.json`` for manifests and QA,
``.html`` for reports)::

    <survey>/raw/<version>/<night>/<expnum:08d>/<camera>_<expnum>_<band>[_c<ccd>]_raw.fits.fz
    <survey>/calib/<version>/<night|any>/<camera>[_<expnum>][_<band>][_c<ccd>]_<kind><ext>
    <survey>/single_epoch/<version>/<night>/<expnum:08d>/<camera>_<expnum>_<band>[_c<ccd>]_<kind><ext>
    <survey>/coadd/<version>/<tile>/<band>/<tile>_<band>_<kind><ext>
    <survey>/qa/<version>/<night|tile>/[<expnum:08d>/]<camera>[_...]_<kind><ext>
    <survey>/clusters/<version>/<tile>/<tile>[_<band>]_<kind><ext>   (tile: the follow-up; band: a candidate)

Revisions: the first copy of a product sits at the path above. Storing the same tags with
different content later never overwrites it: revision ``n >= 2`` is filed beside it as
``<stem>.r<n><ext>`` (e.g. ``decam_00241238_g_c01_image.r2.fits.fz``) and the database marks
the older revision superseded. The database key of a product, :func:`tag_key`, is the
canonical ``name=value;...`` string of every tag, so it is unique whatever the file names.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from cosmodm_ops.model import ProductKind, Stage, TagError, Tags

__all__ = ["EXTENSIONS", "relpath_for", "resolve_under", "tag_key"]

#: File extension of each kind.
EXTENSIONS: dict[ProductKind, str] = {
    ProductKind.RAW: ".fits.fz",
    ProductKind.BIAS: ".fits.fz",
    ProductKind.FLAT: ".fits.fz",
    ProductKind.STARFLAT: ".fits.fz",
    ProductKind.IMAGE: ".fits.fz",
    ProductKind.WEIGHT: ".fits.fz",
    ProductKind.MASK: ".fits.fz",
    ProductKind.CATALOG: ".fits",
    ProductKind.PSF: ".psf",
    ProductKind.HEAD: ".head",
    ProductKind.COADD: ".fits.fz",
    ProductKind.COADD_WEIGHT: ".fits.fz",
    ProductKind.COADD_HOMOG: ".fits.fz",
    ProductKind.COADD_HOMOG_WEIGHT: ".fits.fz",
    ProductKind.COADD_CATALOG: ".fits",
    ProductKind.MANIFEST: ".json",
    ProductKind.QA: ".json",
    ProductKind.REPORT: ".html",
    ProductKind.THUMBNAIL: ".png",
    ProductKind.PSEUDOCOLOUR: ".png",
    ProductKind.CLUSTER_CATALOG: ".fits",
    ProductKind.INSPECTION: ".png",
    ProductKind.WARP: ".fits",
}

_TAG_ORDER = ("survey", "camera", "stage", "version", "kind", "night", "expnum", "ccd", "band", "tile")


def tag_key(tags: Tags) -> str:
    """Canonical, injective string of every tag (the product's identity in the database)."""
    d = tags.to_dict()
    return ";".join(f"{k}={'' if d[k] is None else d[k]}" for k in _TAG_ORDER)


def _need(tags: Tags, *names: str) -> None:
    missing = [n for n in names if getattr(tags, n) is None]
    if missing:
        msg = (f"tags {tag_key(tags)!r}: stage {tags.stage.value!r} needs tag(s) {missing} "
               "to be filed in the archive")
        raise TagError(msg)


def relpath_for(tags: Tags, revision: int = 1) -> PurePosixPath:
    """Relative archive path of a product (pure: depends on the tags and revision only).

    Parameters
    ----------
    tags : Tags
        Identification tags (validated on construction, so no component can escape the root).
    revision : int
        1 for the first copy; ``n >= 2`` for the n-th different content stored under the same tags.

    Raises
    ------
    TagError
        When a tag the stage needs is missing.
    """
    if revision < 1:
        msg = f"revision must be >= 1, got {revision}"
        raise ValueError(msg)
    stage = tags.stage
    parts = [tags.survey, stage.value, tags.version]
    exp = f"{tags.expnum:08d}" if tags.expnum is not None else None
    if stage is Stage.COADD:
        _need(tags, "tile", "band")
        parts += [tags.tile, tags.band]
        name = [tags.tile, tags.band]
    elif stage is Stage.CLUSTERS:
        _need(tags, "tile")
        parts += [tags.tile]
        name = [tags.tile] + ([tags.band] if tags.band is not None else [])
    else:
        if stage in (Stage.RAW, Stage.SINGLE_EPOCH):
            _need(tags, "night", "expnum")
            parts += [tags.night, exp]
        elif stage is Stage.CALIB:
            parts += [tags.night or "any"]
        else:  # QA
            if tags.night is None and tags.tile is None:
                _need(tags, "night")
            parts += [tags.night or f"tile-{tags.tile}"]
            if exp is not None:
                parts.append(exp)
        name = [tags.camera]
        name += [v for v in (exp, tags.band) if v is not None]
        if tags.ccd is not None:
            name.append(f"c{tags.ccd:02d}")
        if tags.tile is not None and stage is not Stage.QA:
            name.append(tags.tile)
    ext = EXTENSIONS[tags.kind]
    stem = "_".join([*name, tags.kind.value])
    if revision > 1:
        stem += f".r{revision}"
    return PurePosixPath(*parts, stem + ext)


def resolve_under(root: Path, rel: str | PurePosixPath) -> Path:
    """``root / rel``, refusing anything that would land outside ``root`` (lexical check).

    ``root`` should already be absolute and resolved; symbolic links inside the root are
    the operator's business (the archive itself never makes any).
    """
    text = str(rel)
    norm = os.path.normpath(text)
    if os.path.isabs(text) or norm == ".." or norm.startswith("../") or "\x00" in text:
        msg = f"archive path {text!r} would escape the archive root {root}"
        raise TagError(msg)
    return Path(root) / norm
