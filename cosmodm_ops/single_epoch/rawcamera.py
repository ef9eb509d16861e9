"""The camera as the raw path sees it: its science CCDs, their raw sections, and the crosstalk terms.

Read through :mod:`cosmodm_ops.cameras.layout` (inline ``ccds``/``crosstalk`` of the camera config, or the
real obs_decam tables), the parser the simulator uses, so the raw path corrects what the simulator adds.
Crosstalk convention: victim += f(source), source in ADU above its overscan; ``f(s) = c s`` up to the
file's non-linear onset ``s_nl``, and ``p1 s + p2 s^2 + p3 s^3`` above it (DECam; decam-mini is linear).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmodm_ops.config import CameraConfig
from cosmodm_ops.single_epoch.inputs import BadInputError
from cosmodm_ops.single_epoch.rawccd import CcdSections, ccd_sections

__all__ = ["CrosstalkTerm", "camera_ccds", "crosstalk_signal", "crosstalk_terms", "raw_sections"]


def _focal_plane(camera: CameraConfig) -> Any:
    from cosmodm_ops.cameras.layout import LayoutError, focal_plane

    try:
        return focal_plane(camera)
    except (LayoutError, OSError) as err:
        msg = f"camera {camera.name}: {err}"
        raise BadInputError(msg) from err


def camera_ccds(camera: CameraConfig) -> list[tuple[str, int]]:
    """(EXTNAME, CCDNUM) of every science CCD of the camera, in camera-config order
    (:func:`cosmodm_ops.cameras.layout.focal_plane`: inline ``ccds`` or the ``ccd_table`` file)."""
    return [(c.name, c.ccdnum) for c in _focal_plane(camera).ccds]


@dataclass(frozen=True)
class CrosstalkTerm:
    """victim amplifier (CCDNUM, amp name) picks up :func:`crosstalk_signal` of the source amplifier."""

    victim: tuple[int, str]
    source: tuple[int, str]
    coeff: float
    nl_onset: float = float("inf")
    nl_poly: tuple[float, ...] = ()


def crosstalk_terms(camera: CameraConfig) -> tuple[CrosstalkTerm, ...]:
    """The camera's crosstalk terms (inline ``crosstalk`` plus the ``crosstalk_file``, parsed by
    :mod:`cosmodm_ops.cameras.layout`, the same reader the simulator uses)."""
    out = []
    for t in _focal_plane(camera).crosstalk:
        nl = t.src_nl is not None and bool(t.poly)
        out.append(CrosstalkTerm(victim=(t.victim_ccd, t.victim_amp), source=(t.source_ccd, t.source_amp),
                                 coeff=float(t.coeff), nl_onset=float(t.src_nl) if nl else float("inf"),
                                 nl_poly=tuple(float(p) for p in t.poly) if nl else ()))
    return tuple(out)


def crosstalk_signal(source_adu: np.ndarray, term: CrosstalkTerm) -> np.ndarray:
    """ADU that ``term`` adds to the victim for a source ``source_adu`` (ADU above overscan), float32."""
    s = np.asarray(source_adu, np.float32)
    out = np.float32(term.coeff) * s
    if term.nl_poly and np.isfinite(term.nl_onset):
        hi = s > term.nl_onset
        if hi.any():
            src = s[hi].astype(np.float64)
            nl = sum(p * src ** (k + 1) for k, p in enumerate(term.nl_poly))
            out[hi] = nl.astype(np.float32)
    return out



def raw_sections(camera: CameraConfig, extname: str) -> CcdSections:
    """Raw sections of the camera's CCD ``extname`` (S CCDs of DECam are flipped)."""
    flipped = any(extname.startswith(p) for p in camera.flipped_prefixes)
    return ccd_sections(camera.ccd_nx, camera.ccd_ny, camera.prescan, camera.overscan, camera.postscan_rows, flipped)
