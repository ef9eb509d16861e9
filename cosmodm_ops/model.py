"""Identification tags, product kinds and the rules that keep tags safe.

A product of CosmoDM-Ops is identified by its tags alone: survey, camera, stage,
pipeline version, and either (night, expnum, ccd, band) for single-epoch products
or (tile, band) for coadd products. Every tag ends up in a file path and in the
archive database, so tags are validated here, once, and refused when they could
escape a path (``/``, ``..``, control characters) or be mistaken for an option.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = [
    "CAMERA_NAMES",
    "ProductKind",
    "Stage",
    "TagError",
    "Tags",
    "validate_night",
    "validate_token",
]

#: Camera names the platform knows. Configs live in ``include/configs/cameras/<name>.yaml``.
CAMERA_NAMES = ("decam", "decam-mini", "megacam", "gpc1")

_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_NIGHT = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class TagError(ValueError):
    """A tag value that is not allowed (bad characters, path escape, wrong type)."""


class Stage(str, enum.Enum):
    """Processing stage of a product; the first level below the survey in the archive."""

    RAW = "raw"
    """Raw exposures as they came from the telescope (or the simulator)."""
    CALIB = "calib"
    """Calibration frames: biases, flats, star flats."""
    SINGLE_EPOCH = "single_epoch"
    """Products of the single-epoch pipeline, one per exposure and CCD."""
    COADD = "coadd"
    """Products of the coadd pipeline, one per tile and band."""
    QA = "qa"
    """QA reports and plots (nightly summaries, tile reports)."""
    CLUSTERS = "clusters"
    """Products of a cluster follow-up (tile tag: the follow-up's label; band tag: a candidate, where per candidate)."""


class ProductKind(str, enum.Enum):
    """What a file is. The archive layout and the QA code dispatch on it."""

    RAW = "raw"
    """A raw multi-extension exposure (RICE-compressed integers)."""
    BIAS = "bias"
    """A master bias for one CCD or exposure."""
    FLAT = "flat"
    """A master dome flat for one band."""
    STARFLAT = "starflat"
    """A zeropoint-flatness (star-flat) correction."""
    IMAGE = "image"
    """A detrended CCD image in electrons (RICE q=4, dithered)."""
    WEIGHT = "weight"
    """Inverse-variance weight of an image (RICE q=4)."""
    MASK = "mask"
    """Bit mask of an image (lossless)."""
    CATALOG = "catalog"
    """A SExtractor catalog (FITS_LDAC)."""
    PSF = "psf"
    """A PSFEx model."""
    HEAD = "head"
    """A SCAMP astrometric solution (.head)."""
    COADD = "coadd"
    """A coadded image of a tile and band."""
    COADD_WEIGHT = "coadd_weight"
    """Weight of a coadded image."""
    COADD_HOMOG = "coadd_homog"
    """A PSF-homogenized coadd of a tile and band (every input convolved to a common Moffat PSF)."""
    COADD_HOMOG_WEIGHT = "coadd_homog_weight"
    """Weight of a PSF-homogenized coadd."""
    COADD_CATALOG = "coadd_catalog"
    """A dual-image catalog of a tile and band."""
    MANIFEST = "manifest"
    """A job manifest (JSON)."""
    QA = "qa"
    """QA values (JSON)."""
    REPORT = "report"
    """A QA report (HTML) or plot (PNG)."""
    THUMBNAIL = "thumbnail"
    """A small binned PNG preview (an exposure's focal plane, a coadd) for the UI pages."""
    PSEUDOCOLOUR = "pseudocolour"
    """A tile's Lupton asinh RGB PNG of three band coadds (band tag: the bands, e.g. ``gri``)."""
    CLUSTER_CATALOG = "cluster_catalog"
    """A follow-up's cluster catalogue (FITS: z_phot, richness, significance, confirmed, who_confirmed)."""
    INSPECTION = "inspection"
    """A candidate's picture for a person to decide on (pseudo-colour cut-out with members, or its richness curve)."""
    WARP = "warp"
    """A remapped single-epoch image on a skycell (PS1 warp), as a cluster follow-up's input."""


def validate_token(name: str, value: Any) -> str:
    """Return ``value`` as a safe path component or raise :class:`TagError`.

    Allowed: letters, digits, ``.``, ``_``, ``+``, ``-``, 1 to 64 characters, not
    starting with a punctuation mark (so never ``..`` nor an option like ``-rf``).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        msg = f"tag {name!r}: expected a string or integer, got {type(value).__name__}"
        raise TagError(msg)
    text = str(value)
    if not _TOKEN.fullmatch(text) or ".." in text:  # fullmatch: "$" would accept a trailing newline
        shown = text.encode("unicode_escape").decode("ascii")
        msg = (
            f"tag {name!r}={shown!r} is not allowed: use 1-64 characters from "
            "[A-Za-z0-9._+-], starting with a letter or digit, without '..', '/' or control characters"
        )
        raise TagError(msg)
    return text


def validate_night(value: Any) -> str:
    """Return a night as ``YYYY-MM-DD`` (the local date at the start of the night)."""
    if isinstance(value, _dt.date):
        return value.isoformat()
    text = str(value)
    if not _NIGHT.match(text):
        msg = f"tag 'night'={text!r} is not a date of the form YYYY-MM-DD"
        raise TagError(msg)
    try:
        _dt.date.fromisoformat(text)
    except ValueError as err:
        msg = f"tag 'night'={text!r} is not a valid calendar date: expected YYYY-MM-DD ({err})"
        raise TagError(msg) from err
    return text


@dataclass(frozen=True)
class Tags:
    """Identification tags of a product. Immutable; validated on construction.

    Parameters
    ----------
    survey, camera : str
        Survey and camera names (camera one of :data:`CAMERA_NAMES`).
    stage : Stage
        Processing stage.
    version : str
        Pipeline version (e.g. ``"v1"`` or a campaign name).
    kind : ProductKind
        What the file is.
    night : str, optional
        ``YYYY-MM-DD``; single-epoch and raw products.
    expnum : int, optional
        Exposure number.
    ccd : int, optional
        CCD number (DECam CCDNUM).
    band : str, optional
        Filter band (``g``, ``r``, ...).
    tile : str, optional
        Tile name; coadd products.
    """

    survey: str
    camera: str
    stage: Stage
    version: str
    kind: ProductKind
    night: str | None = None
    expnum: int | None = None
    ccd: int | None = None
    band: str | None = None
    tile: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "survey", validate_token("survey", self.survey))
        camera = validate_token("camera", self.camera)
        if camera not in CAMERA_NAMES:
            msg = f"tag 'camera'={camera!r} is unknown; known cameras: {', '.join(CAMERA_NAMES)}"
            raise TagError(msg)
        object.__setattr__(self, "camera", camera)
        try:
            object.__setattr__(self, "stage", Stage(self.stage))
        except ValueError as err:
            msg = f"tag 'stage'={self.stage!r} is unknown; expected one of {[s.value for s in Stage]}"
            raise TagError(msg) from err
        try:
            object.__setattr__(self, "kind", ProductKind(self.kind))
        except ValueError as err:
            msg = f"tag 'kind'={self.kind!r} is unknown; expected one of {[k.value for k in ProductKind]}"
            raise TagError(msg) from err
        object.__setattr__(self, "version", validate_token("version", self.version))
        if self.night is not None:
            object.__setattr__(self, "night", validate_night(self.night))
        for name in ("expnum", "ccd"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    try:
                        value = int(str(value), 10)
                    except ValueError as err:
                        msg = f"tag {name!r}={value!r}: expected a non-negative integer"
                        raise TagError(msg) from err
                    if value < 0:
                        msg = f"tag {name!r}={value!r}: expected a non-negative integer"
                        raise TagError(msg)
                object.__setattr__(self, name, int(value))
        for name in ("band", "tile"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, validate_token(name, value))

    def to_dict(self) -> dict[str, Any]:
        """Tags as plain JSON-able values (enums as strings, ``None`` kept)."""
        out = asdict(self)
        out["stage"] = self.stage.value
        out["kind"] = self.kind.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tags:
        """Build tags from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            msg = f"unknown tag(s) {sorted(unknown)}; known tags: {sorted(known)}"
            raise TagError(msg)
        return cls(**data)

    def with_(self, **changes: Any) -> Tags:
        """A copy with some tags changed (validated again)."""
        return replace(self, **changes)
