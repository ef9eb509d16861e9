"""The coadd jobs' ``manifest.json``: products with checksums, inputs, job record, versions, timings, bytes.

:func:`product` describes one written file; :func:`band_inputs` the single-epoch files a band's
coadd read (a rejected image's catalog as ``rejected_catalog``); :func:`write_job_manifest`
assembles and writes the manifest of a band job or of the tile calibration.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosmodm_ops.coadd.inputs import CoaddInput
from cosmodm_ops.common import utc_now, versions
from cosmodm_ops.config import Config, config_hash
from cosmodm_ops.manifest import Manifest, ManifestInput, ManifestProduct, write_manifest
from cosmodm_ops.model import ProductKind, Tags

__all__ = ["band_inputs", "extra_input", "product", "write_job_manifest"]


def product(path: Path, out: Path, kind: ProductKind, tags: Tags,
            inputs: list[str] | None = None) -> ManifestProduct:
    """A product of the job: ``path`` (relative to ``out``), its sha256 and size, its tags with ``kind``."""
    from cosmodm_ops.fits import file_sha256

    t = tags.with_(kind=kind)
    return ManifestProduct(kind=kind.value, tags=t.to_dict(), path=str(path.relative_to(out)),
                           sha256=file_sha256(path), size=path.stat().st_size, inputs=inputs)


def band_inputs(inputs: Sequence[CoaddInput], used: Sequence[int]) -> list[ManifestInput]:
    """The files a band's coadd read: every role of a used image, the catalog of a rejected one."""
    used_set = set(used)
    minputs: list[ManifestInput] = []
    for i, inp in enumerate(inputs):
        roles = ("image", "weight", "psf", "catalog") if i in used_set else ("catalog",)
        for role in roles:
            f = inp.files[role]
            minputs.append(ManifestInput(role=role if i in used_set else f"rejected_{role}", path=str(f.path),
                                         sha256=f.sha256, size=f.size, tags=f.tags or None))
    return minputs


def extra_input(role: str, path: str | Path) -> ManifestInput:
    """An input file outside the archive (reference catalog, truth), with its sha256."""
    from cosmodm_ops.fits import file_sha256

    rp = Path(path).resolve()
    return ManifestInput(role=role, path=str(rp), sha256=file_sha256(rp), size=rp.stat().st_size)


def write_job_manifest(path: Path, cfg: Config, *, name: str, start: str, tags: Mapping[str, Any],
                       products: list[ManifestProduct], inputs: list[ManifestInput],
                       timings: Mapping[str, float]) -> Path:
    """Write ``manifest.json`` of a finished job (state ``done``, exit code 0)."""
    manifest = Manifest(
        job={"name": name, "site": cfg.site.name, "host": socket.gethostname(),
             "start": start, "end": utc_now(), "state": "done", "exit_code": 0},
        tags=dict(tags), products=products, inputs=inputs, versions=versions(), config_hash=config_hash(cfg),
        timings=dict(timings),
        bytes={"read": int(sum(m.size for m in inputs)), "output": int(sum(p.size for p in products))},
    )
    return write_manifest(manifest, path)
