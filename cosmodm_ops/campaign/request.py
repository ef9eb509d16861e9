"""What an operator asks for: a campaign request, validated before anything is selected or created.

The same request comes from the Airflow trigger form (``dags/reprocess_campaign.py`` params)
and from ``cosmodm campaign plan/submit`` flags. :func:`parse_request` checks every field
and raises :class:`CampaignInputError` with a message that names the field, what was given
and what is expected; config overrides are checked against the config schema
(:func:`validate_overrides`) with the key, the expected type and the config file the key
belongs to.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = [
    "STAGES",
    "CampaignInputError",
    "CampaignRequest",
    "parse_request",
    "target_config",
    "validate_overrides",
]

#: Stages a campaign can redo.
STAGES = ("single_epoch", "coadd", "calibrate", "single_epoch+downstream")
QA_CHOICES = ("any", "pass", "fail", "quarantined")


class CampaignInputError(ValueError):
    """A request that cannot be run; nothing was created. The message says which field and why."""


@dataclass
class CampaignRequest:
    """A validated campaign request (JSON-able: it travels by XCom and is stored in ``campaign.params``)."""

    name: str
    survey: str
    stage: str
    target_version: str
    site: str = "local"
    description: str = ""
    nights: list[str] = field(default_factory=list)
    night_from: str | None = None
    night_to: str | None = None
    expnums: list[int] = field(default_factory=list)
    bands: list[str] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    box: list[float] | None = None
    tiling: str | None = None
    qa: str = "any"
    stale: bool = False
    stale_from: str | None = None
    from_version: str | None = None
    from_config_hash: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    priority: int = 1
    chunk_size: int = 100
    max_parallel: int = 0
    max_retries: int = 1
    dry_run: bool = False
    qa_borderline: float = 0.05
    max_failure_rate: float = 0.25
    queue: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    def config_overrides(self) -> dict[str, Any]:
        """The overrides plus the target pipeline version (what every job of the campaign loads)."""
        return {**self.overrides, "pipeline_version": self.target_version}


def _tokens(name: str, value: Any, *, ints: bool = False) -> list[Any]:
    from cosmodm_ops.model import TagError, validate_token

    if value in (None, "", []):
        return []
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    out = []
    for v in items:
        if v in ("", None):
            continue
        if ints:
            try:
                out.append(int(v))
            except (TypeError, ValueError) as err:
                msg = f"{name}: {v!r} is not an integer (expected exposure numbers like 901234)"
                raise CampaignInputError(msg) from err
        else:
            try:
                out.append(validate_token(name, v))
            except TagError as err:
                raise CampaignInputError(f"{name}: {err}") from err
    return out


def _night(name: str, value: Any) -> str:
    from cosmodm_ops.model import TagError, validate_night

    try:
        return validate_night(str(value).strip())
    except TagError as err:
        msg = f"{name}: {value!r} is not a date (expected YYYY-MM-DD, e.g. 2026-11-23)"
        raise CampaignInputError(msg) from err


def _known(kind: str, name: str, what: str) -> str:
    from cosmodm_ops.config import available, config_dir

    names = available(kind)
    if name not in names:
        msg = (f"unknown {what} {name!r}: no {config_dir() / kind / (name + '.yaml')}; "
               f"known {what}s: {', '.join(names) or 'none'}")
        raise CampaignInputError(msg)
    return name


def _number(name: str, value: Any, kind: type, lo: float, hi: float | None = None) -> Any:
    try:
        if isinstance(value, bool):
            raise TypeError
        num = kind(value)
    except (TypeError, ValueError) as err:
        msg = f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}"
        raise CampaignInputError(msg) from err
    if num < lo or (hi is not None and num > hi):
        msg = f"{name}: {num} is out of range (expected {lo} .. {hi if hi is not None else 'any'})"
        raise CampaignInputError(msg)
    return num


def _box(value: Any) -> list[float] | None:
    if value in (None, "", []):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        box = [float(v) for v in parts]
    except (TypeError, ValueError) as err:
        msg = f"box: {value!r}: expected four numbers RA_MIN,RA_MAX,DEC_MIN,DEC_MAX in degrees"
        raise CampaignInputError(msg) from err
    if len(box) != 4:
        msg = f"box: {value!r}: expected four numbers RA_MIN,RA_MAX,DEC_MIN,DEC_MAX in degrees"
        raise CampaignInputError(msg)
    if not (box[0] < box[1] and box[2] < box[3]) or not (-90 <= box[2] and box[3] <= 90):
        msg = f"box: {box}: expected RA_MIN < RA_MAX and -90 <= DEC_MIN < DEC_MAX <= 90 (degrees)"
        raise CampaignInputError(msg)
    return box


def parse_request(params: dict[str, Any]) -> CampaignRequest:
    """Validate a request (form params or CLI flags as a dict); raise :class:`CampaignInputError`.

    Checks: known survey, site, stage and tiling; nights are dates; tiles belong to the tiling;
    numbers in range; overrides against the config schema (:func:`validate_overrides`).
    """
    from cosmodm_ops.model import TagError, validate_token

    p = {k: v for k, v in dict(params).items() if v is not None}
    unknown = set(p) - set(CampaignRequest.__dataclass_fields__)
    if unknown:
        msg = f"unknown request field(s) {sorted(unknown)}; known: {sorted(CampaignRequest.__dataclass_fields__)}"
        raise CampaignInputError(msg)
    survey = _known("surveys", str(p.get("survey") or ""), "survey")
    site = _known("sites", str(p.get("site") or "local"), "site")
    stage = str(p.get("stage") or "")
    if stage not in STAGES:
        msg = f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}"
        raise CampaignInputError(msg)
    try:
        target = validate_token("target_version", p.get("target_version") or "")
    except TagError as err:
        msg = f"target_version: {err} (a pipeline version tag, e.g. v2)"
        raise CampaignInputError(msg) from err
    name = str(p.get("name") or "").strip() or f"{stage}-{target}"
    qa = str(p.get("qa") or "any")
    if qa not in QA_CHOICES:
        msg = f"qa: {qa!r}: expected one of {', '.join(QA_CHOICES)}"
        raise CampaignInputError(msg)
    overrides = p.get("overrides") or {}
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as err:
            msg = f"overrides: not valid JSON ({err.msg} at character {err.pos}); expected a mapping"
            raise CampaignInputError(msg) from err
    req = CampaignRequest(
        name=name[:200], survey=survey, stage=stage, target_version=target, site=site,
        description=str(p.get("description") or ""),
        nights=[_night("nights", n) for n in _tokens("nights", p.get("nights"))],
        night_from=_night("night_from", p["night_from"]) if p.get("night_from") else None,
        night_to=_night("night_to", p["night_to"]) if p.get("night_to") else None,
        expnums=_tokens("expnums", p.get("expnums"), ints=True), bands=_tokens("bands", p.get("bands")),
        tiles=_tokens("tiles", p.get("tiles")), box=_box(p.get("box")),
        tiling=str(p["tiling"]) if p.get("tiling") else None, qa=qa, stale=bool(p.get("stale", False)),
        stale_from=str(p["stale_from"]) if p.get("stale_from") else None,
        from_version=validate_token("from_version", p["from_version"]) if p.get("from_version") else None,
        from_config_hash=str(p["from_config_hash"]) if p.get("from_config_hash") else None,
        overrides=overrides, priority=_number("priority", p.get("priority", 1), int, 1, 100),
        chunk_size=_number("chunk_size", p.get("chunk_size", 100), int, 1, 10000),
        max_parallel=_number("max_parallel", p.get("max_parallel", 0), int, 0, 10000),
        max_retries=_number("max_retries", p.get("max_retries", 1), int, 0, 10),
        dry_run=bool(p.get("dry_run", False)),
        qa_borderline=_number("qa_borderline", p.get("qa_borderline", 0.05), float, 0.0, 1.0),
        max_failure_rate=_number("max_failure_rate", p.get("max_failure_rate", 0.25), float, 0.0, 1.0),
        queue=bool(p.get("queue", False)),
    )
    if req.night_from and req.night_to and req.night_from > req.night_to:
        msg = f"night_from {req.night_from} is after night_to {req.night_to}"
        raise CampaignInputError(msg)
    _check_tiles(req)
    req.overrides = validate_overrides(req.survey, req.site, overrides)
    return req


def _check_tiles(req: CampaignRequest) -> None:
    from cosmodm_ops.coadd.tiling import TilingError, load_tiling
    from cosmodm_ops.config import ConfigError, load_config

    if not req.tiles and req.box is None:
        return
    name = req.tiling or load_config(req.survey, site=req.site).survey.tiling
    try:
        tiling = load_tiling(name)
    except (TilingError, ConfigError) as err:
        msg = f"tiling {name!r}: {err}"
        raise CampaignInputError(msg) from err
    for t in req.tiles:
        try:
            tiling.tile(t)
        except TilingError as err:
            msg = f"unknown tile {t!r}: {err}"
            raise CampaignInputError(msg) from err
    req.tiling = name


# ---------------------------------------------------------------------------- config overrides
_SECTION_FILE = {"survey": "surveys/{survey}.yaml", "camera": "cameras/<the survey's camera>.yaml",
                 "site": "sites/{site}.yaml"}


def _file_for(top: str, survey: str, site: str) -> str:
    from cosmodm_ops.config import config_dir

    rel = _SECTION_FILE.get(top, "base.yaml").format(survey=survey, site=site)
    return str(config_dir() / rel)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_key(model: type[BaseModel], dotted: str, value: Any, file: str) -> None:
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            msg = (f"override {dotted!r}: no key {part!r} under {where} of the configuration ({file}); "
                   f"known keys there: {', '.join(sorted(fields))}")
            raise CampaignInputError(msg)
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                msg = f"override {dotted!r}: {'.'.join(parts[:i + 1])} is a value, not a section ({file})"
                raise CampaignInputError(msg)
            model = annotation
            continue
        try:
            TypeAdapter(annotation).validate_python(value, strict=not isinstance(value, str) or annotation is str)
        except ValidationError as err:
            msg = (f"override {dotted!r} = {value!r}: expected {_type_name(annotation)} "
                   f"({err.errors()[0]['msg']}); the key belongs to {file}")
            raise CampaignInputError(msg) from err


def validate_overrides(survey: str, site: str, overrides: Any) -> dict[str, Any]:
    """Check overrides against the config schema; return them as a nested tree.

    Accepts a nested mapping (``{"single_epoch": {"detect_thresh": 3.0}}``) or dotted keys
    (``{"single_epoch.detect_thresh": 3.0}``). Each key must exist in the schema and its value
    have the key's type; the merged configuration must then load (range checks). Errors name the
    key, the expected type and the config file the key belongs to.
    """
    from cosmodm_ops.config import Config, ConfigError, load_config

    if not isinstance(overrides, dict):
        msg = f"overrides: expected a mapping of config keys to values, got {type(overrides).__name__}"
        raise CampaignInputError(msg)
    nested: dict[str, Any] = {}
    for dotted, value in _flatten(overrides).items():
        if dotted == "pipeline_version":
            msg = "overrides: set the version with target_version, not pipeline_version"
            raise CampaignInputError(msg)
        _check_key(Config, dotted, value, _file_for(dotted.split(".")[0], survey, site))
        node = nested
        *head, last = dotted.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        load_config(survey, site=site, overrides=nested)
    except ConfigError as err:
        msg = f"overrides: {err}"
        raise CampaignInputError(msg) from err
    return nested


def target_config(req: CampaignRequest) -> Any:
    """The configuration every job of the campaign runs with (overrides and target version merged)."""
    from cosmodm_ops.config import load_config

    return load_config(req.survey, site=req.site, overrides=req.config_overrides())
