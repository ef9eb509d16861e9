"""Typed rows of the archive's queries: frozen dataclasses that are also read-only dicts.

Every query of :class:`~cosmodm_ops.archive.api.Archive` returns these, so a campaign planner
or a UI page can write ``row.path``, ``row.superseded_by`` or ``graph.edges[0].input_id`` and
have a type checker follow it.

Why a ``dict`` subclass rather than a plain dataclass: the archive answered plain dicts
before, and callers (the CLI's JSON, the FastAPI pages, ``json.dumps`` in workflows and tests,
``row == {...}`` in tests, ``isinstance(row, dict)``) keep working byte for byte when each row
*is* that dict. The dict items are the dataclass fields, in field order (which is the order of
the table's columns), holding the same objects; :meth:`to_dict` returns a plain, mutable copy
(nested rows as plain dicts too), exactly the dict the archive answered before. The mapping
view is read-only like the fields: ``row["x"] = 1`` raises ``TypeError``; take ``dict(row)``
or ``row.to_dict()`` for something to change. ``repr`` is the dict's (log lines unchanged).

The field lists mirror :mod:`~cosmodm_ops.archive.schema` (a unit test holds them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn, Self

__all__ = ["ConeRow", "Counts", "LineageEdge", "LineageGraph", "ProductRow", "QARow", "StaleRow"]


def _plain(value: Any) -> Any:
    """``value`` with every row, dict and list in it turned into plain dicts and lists."""
    if isinstance(value, _ReadOnlyDict):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _ReadOnlyDict(dict):
    """A dict whose items cannot be changed after construction (construction uses ``dict.update``)."""

    def _read_only(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        msg = f"{type(self).__name__} is read-only; use dict(row) or row.to_dict() for a copy to change"
        raise TypeError(msg)

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable dict of the items (nested rows as plain dicts): the archive's former answer."""
        return {k: _plain(v) for k, v in self.items()}


class _Row(_ReadOnlyDict):
    """Base of the dataclass rows: the dict items are the fields, filled in once after ``__init__``."""

    def __post_init__(self) -> None:
        dict.update(self, ((f.name, getattr(self, f.name)) for f in fields(self)))

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], **extra: Any) -> Self:
        """A row from a database mapping (``Result.mappings()``) plus ``extra`` fields.

        The fast path for query results (a lineage walk builds thousands): the instance's
        attributes and items are filled directly, without a frozen ``__setattr__`` per field
        (several times faster than ``cls(**row)``). The keys must be exactly the fields.
        """
        names, name_set = cls.__dict__.get("_names") or cls._cache_names()
        values = dict(row)
        if extra:
            values.update(extra)
        if values.keys() != name_set:
            missing, unknown = sorted(name_set - values.keys()), sorted(values.keys() - name_set)
            msg = f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}"
            raise TypeError(msg)
        if tuple(values) != names:  # the query's column order differs: put the fields' order
            values = {k: values[k] for k in names}
        out = cls.__new__(cls)
        out.__dict__.update(values)
        dict.update(out, values)
        return out

    @classmethod
    def _cache_names(cls) -> tuple[tuple[str, ...], frozenset[str]]:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        type.__setattr__(cls, "_names", (names, frozenset(names)))
        return names, frozenset(names)

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy through __init__, not item assignment
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True, eq=False, repr=False)
class ProductRow(_Row):
    """One archived file: a row of the ``products`` table.

    ``path`` is relative to the archive root; ``state`` is ``current`` or ``superseded``
    (then ``superseded_by`` is the id of the revision that replaced it); ``size`` in bytes;
    ``created_at`` ISO 8601 UTC. Tags that do not apply (``ccd`` of a coadd...) are None.
    """

    id: int
    key: str
    revision: int
    survey: str
    camera: str
    stage: str
    version: str
    kind: str
    night: str | None
    expnum: int | None
    ccd: int | None
    band: str | None
    tile: str | None
    path: str
    sha256: str
    size: int
    state: str
    superseded_by: int | None
    run_id: int | None
    created_at: str

    @property
    def is_current(self) -> bool:
        """True for the current revision of its tags."""
        return self.state == "current"


@dataclass(frozen=True, eq=False, repr=False)
class StaleRow(ProductRow):
    """A current product made, directly or not, from a superseded one (:meth:`Archive.stale`)."""

    depth: int
    """Shortest number of lineage steps from the superseded product."""
    from_id: int
    """The superseded product it descends from (the smallest id when several)."""


@dataclass(frozen=True, eq=False, repr=False)
class LineageEdge(_Row):
    """One lineage edge, product <- input; ``input_id`` is None when the input is not an archived product."""

    product_id: int
    input_id: int | None
    role: str
    input_path: str | None
    input_sha256: str
    depth: int
    """Levels from the start product (1: a direct input, or a direct output when walking down)."""


@dataclass(frozen=True, eq=False, repr=False)
class LineageGraph(_Row):
    """The lineage around one product (:meth:`Archive.lineage`).

    ``edges`` are sorted by depth, product id, role and input id; ``products`` holds every
    archived product the edges name, by id.
    """

    product: ProductRow
    direction: str
    """``up`` (what it was made from) or ``down`` (what was made from it)."""
    edges: list[LineageEdge]
    products: dict[int, ProductRow]


@dataclass(frozen=True, eq=False, repr=False)
class QARow(_Row):
    """One QA check result: a row of the ``qa_results`` table.

    ``scope`` is ``exposure``, ``ccd<N>``, ``tile`` or ``product<N>``; ``value`` and
    ``threshold`` are None when the check gave no finite number.
    """

    id: int
    run_id: int | None
    product_id: int | None
    survey: str | None
    expnum: int | None
    ccd: int | None
    tile: str | None
    band: str | None
    scope: str
    check_name: str
    value: float | None
    threshold: float | None
    verdict: str
    created_at: str


@dataclass(frozen=True, eq=False, repr=False)
class ConeRow(_Row):
    """A catalog object found by :meth:`Archive.cone`: the ``objects`` row, its catalog's path, the distance.

    ``ra``, ``dec`` and ``dist`` in degrees; float columns that were not finite are None.
    """

    id: int
    product_id: int
    exposure_id: int | None
    expnum: int | None
    ccd: int | None
    tile: str | None
    band: str | None
    number: int | None
    ra: float
    dec: float
    hpx: int
    mag_auto: float | None
    magerr_auto: float | None
    mag_psf: float | None
    magerr_psf: float | None
    spread_model: float | None
    class_star: float | None
    flags: int | None
    path: str
    dist: float


def _count(table: str) -> property:
    return property(lambda self: self[table], doc=f"Rows in ``{table}``.")


class Counts(_ReadOnlyDict):
    """Row counts by table name, in the schema's table order (:meth:`Archive.counts`).

    A mapping rather than fixed fields, because tables added to the schema's ``metadata``
    (by later migrations) are counted too; the archive's own tables are attributes as well.
    """

    def __init__(self, counts: Mapping[str, int]) -> None:
        dict.__init__(self, counts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    runs = _count("runs")
    products = _count("products")
    exposures = _count("exposures")
    ccd_images = _count("ccd_images")
    tiles = _count("tiles")
    lineage = _count("lineage")
    qa_results = _count("qa_results")
    quarantine = _count("quarantine")
    objects = _count("objects")
