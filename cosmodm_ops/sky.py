"""Positions on the sky as unit vectors, for KD-tree matching (the one place this geometry lives)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chord", "unit_vectors"]


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors, shape (n, 3), of positions in degrees: Euclidean distance between them is the chord."""
    r, d = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    cd = np.cos(d)
    return np.column_stack([cd * np.cos(r), cd * np.sin(r), np.sin(d)])


def chord(radius_arcsec: float) -> float:
    """The chord between two unit vectors ``radius_arcsec`` apart on the sphere."""
    return 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
