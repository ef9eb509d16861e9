"""The Astromatic tools (SExtractor, SCAMP, PSFEx, SWarp): config rendering, running, reading LDAC.

Every tool runs from an argument list (never a shell), in a working folder, with
stderr captured; a non-zero exit raises :class:`ToolError` carrying the command,
return code and the tail of stderr. Settings that were seen to work on this
machine (ENVIRONMENT.md) are the defaults: ``-CHECKPLOT_TYPE NONE`` everywhere,
FITS_LDAC catalogs, ``VIGNET(35,35)``, uncompressed images for SExtractor.
"""

from __future__ import annotations

from cosmodm_ops.astromatic.ldac import read_ldac, read_scamp_head, write_reference_ldac
from cosmodm_ops.astromatic.tools import (
    ToolError,
    ToolResult,
    config_path,
    psfex_args,
    run_tool,
    scamp_args,
    sextractor_args,
    tool_versions,
)

__all__ = [
    "ToolError",
    "ToolResult",
    "config_path",
    "psfex_args",
    "read_ldac",
    "read_scamp_head",
    "run_tool",
    "scamp_args",
    "sextractor_args",
    "tool_versions",
    "write_reference_ldac",
]
