"""What the coadd steps take in: the single-epoch input images of a band, the band coadds of a tile, the errors.

- :class:`CoaddInput` / :class:`InputFile`: one accepted single-epoch CCD image with its weight,
  PSF model and catalog (found in the archive or in job manifests by :mod:`cosmodm_ops.coadd.cli`;
  this module imports no SQL);
- :class:`BandCoadd` / :func:`read_band_coadds`: the PSF-homogenized coadd of each band that
  ``cosmodm coadd run`` left, checked against its manifest (the input of the tile calibration);
- :class:`CoaddBadInput` / :class:`NoInputsError`: inputs the coadd cannot use (exit 65).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmodm_ops.manifest import ManifestInput

__all__ = [
    "NEEDED_ROLES",
    "SE_MAGZERO",
    "BandCoadd",
    "CoaddBadInput",
    "CoaddInput",
    "InputFile",
    "NoInputsError",
    "read_band_coadds",
]

#: Zeropoint of the single-epoch catalogs' magnitudes (SExtractor MAG_ZEROPOINT on images in electrons).
SE_MAGZERO = 25.0
#: Roles of an input image's files that the coadd needs.
NEEDED_ROLES = ("image", "weight", "psf", "catalog")


class CoaddBadInput(ValueError):
    """Inputs the coadd cannot use (exit 65: retrying does not help)."""


class NoInputsError(CoaddBadInput):
    """No accepted input image for the tile and band."""


@dataclass(frozen=True)
class InputFile:
    """One archived input file of the coadd."""

    role: str
    path: Path
    sha256: str
    size: int
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CoaddInput:
    """One accepted single-epoch CCD image with its weight, PSF model and catalog.

    Attributes
    ----------
    name : str
        ``<expnum:08d>_c<ccd:02d>``.
    expnum, ccd : int
    files : dict of role to InputFile
        ``image``, ``weight``, ``psf``, ``catalog`` (``mask`` optional).
    """

    name: str
    expnum: int
    ccd: int
    files: dict[str, InputFile]

    def __post_init__(self) -> None:
        missing = [r for r in NEEDED_ROLES if r not in self.files]
        if missing:
            msg = f"input {self.name}: missing {missing} (need image, weight, psf and catalog)"
            raise CoaddBadInput(msg)


@dataclass
class BandCoadd:
    """The PSF-homogenized coadd of one band, as ``cosmodm coadd run`` left it.

    Attributes
    ----------
    band : str
    folder : Path
        The band job's output folder (holds ``manifest.json``).
    image, weight : Path
        The homogenized coadd and its weight (checksums verified).
    inputs : list of ManifestInput
        The files, as inputs of the calibration's manifest.
    tags : dict
        The ``coadd_homog`` product's tags.
    plain : Path or None
        The non-homogenized coadd (``coadd`` product) when the band job left one (checksum verified).
    """

    band: str
    folder: Path
    image: Path
    weight: Path
    inputs: list[ManifestInput]
    tags: dict[str, Any]
    plain: Path | None = None


def _band_folders(coadds: Sequence[Path], bands: Sequence[str]) -> list[Path]:
    """Folders with a ``manifest.json``: each of ``coadds``, or its ``<band>/`` subfolders."""
    folders: list[Path] = []
    for c in coadds:
        c = Path(c)
        if (c / "manifest.json").exists():
            folders.append(c)
        else:
            folders += [c / b for b in bands if (c / b / "manifest.json").exists()]
    return folders


def read_band_coadds(coadds: Sequence[Path], bands: Sequence[str], tile: str) -> dict[str, BandCoadd]:
    """The homogenized coadd of each band from the band jobs' folders (checksums verified).

    Parameters
    ----------
    coadds : sequence of Path
        Band folders, or their parent with ``<band>/`` subfolders.
    bands : sequence of str
    tile : str
        Tile name; manifests of other tiles are ignored.

    Raises
    ------
    CoaddBadInput
        A band without a coadd, a manifest without the homogenized products, a file whose
        sha256 differs from its manifest.
    """
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    found: dict[str, BandCoadd] = {}
    for f in _band_folders(coadds, bands):
        m = read_manifest(f / "manifest.json")
        band = m.tags.get("band")
        if band not in bands or m.tags.get("tile") != tile:
            continue
        prods = {p.kind: p for p in m.products}
        if "coadd_homog" not in prods or "coadd_homog_weight" not in prods:
            msg = f"{f / 'manifest.json'}: no coadd_homog / coadd_homog_weight product (run `cosmodm coadd run`)"
            raise CoaddBadInput(msg)
        ins = []
        for kind in ("coadd_homog", "coadd_homog_weight", "coadd"):
            if kind not in prods:  # the non-homogenized coadd: optional (the pseudo-colour image)
                continue
            p = prods[kind]
            path = (f / p.path).resolve()
            if not path.exists() or file_sha256(path) != p.sha256:
                msg = f"{path}: missing or its sha256 differs from {f / 'manifest.json'}"
                raise CoaddBadInput(msg)
            ins.append(ManifestInput(role=kind, path=str(path), sha256=p.sha256, size=p.size, tags=p.tags))
        found[band] = BandCoadd(band, f, Path(ins[0].path), Path(ins[1].path), ins, prods["coadd_homog"].tags,
                                Path(ins[2].path) if len(ins) > 2 else None)
    missing = [b for b in bands if b not in found]
    if missing:
        msg = (f"tile {tile}: no coadd of band(s) {missing} under {[str(c) for c in coadds]} "
               f"(expected <dir>/<band>/manifest.json from `cosmodm coadd run`)")
        raise CoaddBadInput(msg)
    return found
