"""Typed, layered configuration: schema (pydantic) and a YAML loader (base -> survey -> camera -> site)."""

from __future__ import annotations

from cosmodm_ops.config.loader import (
    ConfigError,
    available,
    config_dir,
    config_hash,
    load_config,
    load_yaml,
    real_data_root,
    resolve_data_path,
    site_queue,
)
from cosmodm_ops.config.schema import CameraConfig, Config, QAConfig, SiteConfig, SurveyConfig

__all__ = [
    "CameraConfig",
    "Config",
    "ConfigError",
    "QAConfig",
    "SiteConfig",
    "SurveyConfig",
    "available",
    "config_dir",
    "config_hash",
    "load_config",
    "load_yaml",
    "real_data_root",
    "resolve_data_path",
    "site_queue",
]
