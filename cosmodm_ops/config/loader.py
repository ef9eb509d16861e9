"""Layered YAML loader: base -> survey -> camera -> site -> $COSMODM_CONFIG_OVERRIDES (JSON) -> overrides.

Layers are merged when a task runs, never when a DAG is parsed. Each key
remembers the file that set it, so a validation error names the file, the key,
the value and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cosmodm_ops.config.schema import Config
from cosmodm_ops.model import TagError, validate_token

__all__ = [
    "ConfigError",
    "available",
    "config_dir",
    "config_hash",
    "load_config",
    "load_yaml",
    "real_data_root",
    "resolve_data_path",
    "site_queue",
]

_PKG_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


def config_dir() -> Path:
    """Folder of the YAML configs: ``COSMODM_CONFIG_DIR`` or ``include/configs`` of the checkout."""
    env = os.environ.get("COSMODM_CONFIG_DIR")
    return Path(env) if env else _PKG_ROOT / "include" / "configs"


def resolve_data_path(value: str) -> Path:
    """Resolve a data path from a config: ``real:REL`` is relative to ``COSMODM_REAL_DATA``
    (default ``../shared/data/real`` beside the checkout); ``include:REL`` to the config dir."""
    if value.startswith("real:"):
        return real_data_root() / value[len("real:") :]
    if value.startswith("include:"):
        return config_dir() / value[len("include:") :]
    return Path(value).expanduser()


def real_data_root() -> Path:
    """Folder of the shared real data files: ``COSMODM_REAL_DATA``, else ``../shared/data/real``
    beside the checkout, else ``/work/shared/data/real`` (where a CI clone elsewhere finds it)."""
    env = os.environ.get("COSMODM_REAL_DATA")
    if env:
        return Path(env)
    for candidate in (_PKG_ROOT.parent / "shared" / "data" / "real", Path("/work/shared/data/real")):
        if candidate.is_dir():
            return candidate
    return _PKG_ROOT.parent / "shared" / "data" / "real"


def available(kind: str) -> list[str]:
    """Names of the configs of one kind (``cameras``, ``surveys``, ``sites``, ``tilings``, ``qa``)."""
    return sorted(p.stem for p in (config_dir() / kind).glob("*.yaml"))


def load_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML file as a mapping; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from err
    except UnicodeDecodeError as err:
        msg = f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"
        raise ConfigError(msg) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        msg = f"{path}:{where}: not valid YAML: {problem}"
        raise ConfigError(msg) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


@dataclass
class _Layered:
    """Merged data plus, for every dotted key, the file that set it."""

    data: dict[str, Any]
    origin: dict[tuple[str, ...], str]


def _merge(into: _Layered, layer: dict[str, Any], source: str, prefix: tuple[str, ...] = ()) -> None:
    target = into.data
    for key in prefix:
        target = target[key]
    for key, value in layer.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            into.origin[path] = source
            _merge(into, value, source, path)
        else:
            target[key] = _copy(value)
            into.origin[path] = source
            for sub in [p for p in into.origin if p[: len(path)] == path and len(p) > len(path)]:
                into.origin[sub] = source


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _origin_of(layered: _Layered, loc: tuple[Any, ...]) -> str:
    keys = tuple(str(k) for k in loc)
    for n in range(len(keys), 0, -1):
        if keys[:n] in layered.origin:
            return layered.origin[keys[:n]]
    return "<schema defaults>"


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return data


#: Environment variable holding a JSON partial tree merged after the site file (a deployment's
#: overrides, e.g. ``{"site": {"batch": {"python": "/opt/venv/bin/cosmodm"}, "ramdisk": {"path": "/scratch"}}}``).
OVERRIDES_ENV = "COSMODM_CONFIG_OVERRIDES"


def _env_overrides() -> dict[str, Any]:
    """The JSON mapping in ``$COSMODM_CONFIG_OVERRIDES`` (empty when unset)."""
    text = os.environ.get(OVERRIDES_ENV, "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"${OVERRIDES_ENV}: not valid JSON ({err.msg} at character {err.pos}); expected a mapping"
        raise ConfigError(msg) from err
    if not isinstance(data, dict):
        msg = f"${OVERRIDES_ENV}: expected a JSON mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def load_config(
    survey: str = "des",
    camera: str | None = None,
    site: str = "local",
    overrides: dict[str, Any] | None = None,
    directory: Path | None = None,
) -> Config:
    """Merge base -> survey -> camera -> site -> ``$COSMODM_CONFIG_OVERRIDES`` -> overrides and validate.

    Parameters
    ----------
    survey : str
        Survey config name (``surveys/<survey>.yaml``).
    camera : str, optional
        Camera config name; default: the survey's ``camera``.
    site : str
        Site config name (``sites/<site>.yaml``).
    overrides : dict, optional
        A partial tree merged last (e.g. an operator's campaign overrides).
    directory : Path, optional
        Config folder; default :func:`config_dir`.

    Raises
    ------
    ConfigError
        A missing or malformed file, or a value the schema refuses; the message
        names the file, the key, the value and what was expected.
    """
    root = directory or config_dir()
    for what, name in (("survey", survey), ("site", site), ("camera", camera)):
        if name is not None:
            try:
                validate_token(what, name)
            except TagError as err:
                raise ConfigError(str(err)) from err
    layered = _Layered({}, {})
    files: list[tuple[Path, str]] = []
    base = root / "base.yaml"
    if base.exists():
        files.append((base, "base"))
    files.append((root / "surveys" / f"{survey}.yaml", "survey"))
    for path, _ in files:
        _merge(layered, load_yaml(path), str(path))
    if camera is None:
        camera = layered.data.get("survey", {}).get("camera")
        if not isinstance(camera, str):
            msg = f"{root / 'surveys' / f'{survey}.yaml'}: key 'survey.camera' is missing; pass a camera"
            raise ConfigError(msg)
    for path in (root / "cameras" / f"{camera}.yaml", root / "sites" / f"{site}.yaml"):
        if not path.exists():
            names = ", ".join(available(path.parent.name)) or "none"
            msg = f"{path}: no such config; available {path.parent.name}: {names}"
            raise ConfigError(msg)
        _merge(layered, load_yaml(path), str(path))
    env_layer = _env_overrides()
    if env_layer:
        _merge(layered, env_layer, f"${OVERRIDES_ENV}")
    if overrides:
        _merge(layered, overrides, "<overrides>")
    try:
        return Config.model_validate(layered.data)
    except ValidationError as err:
        lines = []
        for item in err.errors():
            loc = tuple(item["loc"])
            key = ".".join(str(k) for k in loc)
            value = _value_at(layered.data, loc)
            lines.append(f"{_origin_of(layered, loc)}: key '{key}' = {value!r}: {item['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from err


def config_hash(config: Config) -> str:
    """sha256 of the canonical JSON of a config (recorded in manifests and lineage)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def site_queue(site: str, directory: Path | None = None) -> str | None:
    """``site.queue`` of one site (its YAML, then ``$COSMODM_CONFIG_OVERRIDES``), without a full merge.

    The one config value a DAG needs when it is parsed (an operator's Celery ``queue``): a small local
    file read, no network and no database. A missing or unreadable site file gives None (the default
    queue) so that a DAG still parses; the task itself then fails on the full config, naming the file.
    """
    root = directory or config_dir()
    try:
        validate_token("site", site)
        data = load_yaml(root / "sites" / f"{site}.yaml")
    except (ConfigError, TagError):
        data = {}
    queue = (data.get("site") or {}).get("queue")
    try:
        over = _env_overrides().get("site") or {}
    except ConfigError:
        over = {}
    if isinstance(over, dict) and "queue" in over:
        queue = over["queue"]
    return queue if isinstance(queue, str) and queue else None
