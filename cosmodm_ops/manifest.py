"""The job manifest: what a batch job made, from what, with which code and config.

Written by the compute node (``cosmodm single-epoch run`` and ``cosmodm coadd run``) as
``<out>/manifest.json``; read by the archive (``cosmodm archive register``) and the
Airflow layer. The format is a public contract (CONTRACTS.md): add fields freely,
never rename or remove one.

Paths of products are relative to the manifest's folder; paths of inputs are
absolute (or relative to the manifest folder) as the job saw them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cosmodm_ops.model import Tags

__all__ = [
    "MANIFEST_SCHEMA",
    "JobInfo",
    "Manifest",
    "ManifestInput",
    "ManifestProduct",
    "UnitStatus",
    "read_manifest",
    "write_manifest",
]

MANIFEST_SCHEMA = "cosmodm.manifest/1"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManifestInput(_Open):
    """An input file of the job (raw exposure, bias, flat, star flat, reference catalog, ...)."""

    role: str = Field(description="What the input was used as: raw, bias, flat, starflat, bpm, refcat, image, ...")
    path: str = Field(description="Path as the job saw it.")
    sha256: str = Field(description="sha256 of the file.")
    size: int = Field(ge=0, description="Size in bytes.")
    tags: dict[str, Any] | None = Field(default=None, description="Archive tags of the input, when known.")


class ManifestProduct(_Open):
    """A product file the job made."""

    kind: str = Field(description="cosmodm_ops.model.ProductKind value.")
    tags: dict[str, Any] = Field(description="Full identification tags (Tags.to_dict()).")
    path: str = Field(description="Path relative to the manifest's folder.")
    sha256: str = Field(description="sha256 of the file.")
    size: int = Field(ge=0, description="Size in bytes.")
    inputs: list[str] | None = Field(
        default=None,
        description="Roles or product paths it was made from; None = every input of the job.",
    )

    def tags_obj(self) -> Tags:
        """The tags, validated."""
        return Tags.from_dict(self.tags)


class UnitStatus(_Open):
    """Outcome of one unit of work (a CCD)."""

    ccd: int | None = None
    state: Literal["ok", "failed", "skipped"] = "ok"
    reason: str | None = None


class JobInfo(_Open):
    """Where and how the job ran."""

    name: str | None = None
    site: str | None = None
    host: str | None = None
    start: str | None = Field(default=None, description="ISO 8601 UTC.")
    end: str | None = Field(default=None, description="ISO 8601 UTC.")
    state: Literal["done", "partial", "bad_input", "transient"] = "done"
    exit_code: int = 0


class Manifest(_Open):
    """The whole manifest."""

    schema_: str = Field(default=MANIFEST_SCHEMA, alias="schema")
    job: JobInfo = Field(default_factory=JobInfo)
    tags: dict[str, Any] = Field(default_factory=dict, description="Job-level tags (exposure or tile).")
    products: list[ManifestProduct] = Field(default_factory=list)
    inputs: list[ManifestInput] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict, description="Software versions and git commit.")
    config_hash: str | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per step.")
    bytes: dict[str, int] = Field(default_factory=dict, description="'ramdisk' and 'output' bytes written.")
    cpu: dict[str, Any] = Field(default_factory=dict, description=(
        "CPU seconds of the job's process tree: 'total_s', 'own_s' (ours: total minus the tools), 'astromatic_s', "
        "'<tool>_s' per Astromatic tool, 'own_share', 'own_stages' (own CPU seconds per stage)."))
    units: list[UnitStatus] = Field(default_factory=list, description="Per-CCD outcome.")

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        msg = f"{path}: manifest not found"
        raise ValueError(msg) from err
    except json.JSONDecodeError as err:
        msg = f"{path}: not valid JSON (line {err.lineno}: {err.msg})"
        raise ValueError(msg) from err
    try:
        return Manifest.model_validate(data)
    except Exception as err:
        msg = f"{path}: not a CosmoDM manifest: {err}"
        raise ValueError(msg) from err


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w") as fh:
        fh.write(manifest.model_dump_json(by_alias=True, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
