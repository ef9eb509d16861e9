"""Errors of the archive, sorted by what a retry would achieve."""

from __future__ import annotations

__all__ = ["ArchiveError", "ArchiveInputError", "ArchiveUnavailable", "ProductNotFound"]


class ArchiveError(Exception):
    """Base class of every archive error."""


class ArchiveInputError(ArchiveError, ValueError):
    """Bad input (unknown or unsafe tags, missing file, checksum mismatch): do not retry.

    Nothing was registered when this is raised.
    """


class ProductNotFound(ArchiveError, LookupError):
    """No product matches the given id, archive path or sha256."""


class ArchiveUnavailable(ArchiveError):
    """The database is unreachable or busy: retrying later may succeed (CLI exit code 75)."""
