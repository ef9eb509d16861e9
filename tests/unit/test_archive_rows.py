"""Typed rows of the archive's queries: attributes, the read-only dict view, to_dict, the schema's columns."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest
import sqlalchemy as sa

from cosmodm_ops.archive import Archive
from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.rows import ConeRow, Counts, LineageEdge, LineageGraph, ProductRow, QARow, StaleRow
from tests.unit.archive_factory import build_night

pytestmark = pytest.mark.unit


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_row_fields_are_the_schema_columns_in_order():
    assert _names(ProductRow) == list(S.products.c.keys())
    assert _names(StaleRow) == [*S.products.c.keys(), "depth", "from_id"]
    assert _names(QARow) == list(S.qa_results.c.keys())
    assert _names(ConeRow) == [*S.objects.c.keys(), "path", "dist"]
    assert _names(LineageEdge) == ["product_id", "input_id", "role", "input_path", "input_sha256", "depth"]
    assert _names(LineageGraph) == ["product", "direction", "edges", "products"]


def _edge(**kw) -> LineageEdge:
    return LineageEdge(**{"product_id": 7, "input_id": None, "role": "raw", "input_path": "in/raw.fits",
                          "input_sha256": "ab" * 32, "depth": 1, **kw})


def test_a_row_is_a_frozen_dataclass_and_a_read_only_dict():
    e = _edge()
    assert e.role == e["role"] == "raw" and e.input_id is None
    assert "role" in e and "nope" not in e and e.get("nope", 3) == 3 and e.get("depth") == 1
    assert list(e.keys()) == _names(LineageEdge) and len(e) == 6
    assert e == {"product_id": 7, "input_id": None, "role": "raw", "input_path": "in/raw.fits",
                 "input_sha256": "ab" * 32, "depth": 1}
    assert isinstance(e, dict) and json.loads(json.dumps(e)) == e.to_dict()
    assert repr(e) == repr(e.to_dict())  # log lines and f-strings read as before
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.role = "flat"
    for change in (lambda: e.__setitem__("role", "flat"), lambda: e.update(role="flat"), lambda: e.pop("role"),
                   lambda: e.setdefault("x", 1), e.clear, e.popitem, lambda: e.__delitem__("role")):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert e["role"] == "raw" and len(e) == 6
    mutable = e.to_dict()
    mutable["role"] = "flat"
    assert type(mutable) is dict and e.role == "raw"
    for twin in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert type(twin) is LineageEdge and twin == e and twin.depth == 1


def test_nested_rows_to_dict_are_plain_all_the_way_down():
    prod = ProductRow(id=7, key="k", revision=1, survey="demo", camera="decam", stage="coadd", version="v1",
                      kind="coadd", night=None, expnum=None, ccd=None, band="r", tile="T1", path="a/b.fits",
                      sha256="cd" * 32, size=10, state="current", superseded_by=None, run_id=None,
                      created_at="2024-01-01T00:00:00+00:00")
    g = LineageGraph(product=prod, direction="up", edges=[_edge()], products={7: prod})
    plain = g.to_dict()
    assert type(plain["product"]) is dict and type(plain["edges"][0]) is dict and type(plain["products"][7]) is dict
    assert plain == g and g.products[7].path == g["products"][7]["path"] == "a/b.fits"
    assert prod.is_current and dataclasses.asdict(g) == plain  # FastAPI encodes dataclasses with asdict


def test_counts_map_every_table_and_name_the_archive_tables():
    c = Counts({"runs": 1, "products": 30, "campaigns": 2})
    assert c.products == c["products"] == 30 and c.runs == 1 and c["campaigns"] == 2
    assert list(c) == ["runs", "products", "campaigns"] and c.to_dict() == {"runs": 1, "products": 30, "campaigns": 2}
    with pytest.raises(TypeError, match="read-only"):
        c["runs"] = 2
    assert pickle.loads(pickle.dumps(c)) == c


@pytest.fixture
def night_archive(tmp_path):
    arch = Archive(f"sqlite:///{tmp_path / 'archive.db'}", tmp_path / "root")
    arch.init()
    return arch, build_night(arch, tmp_path)


def test_queries_answer_typed_rows_equal_to_the_table_rows(night_archive):
    archive, night = night_archive
    with archive.engine.connect() as conn:
        table = {r["id"]: dict(r) for r in conn.execute(sa.select(S.products)).mappings()}
        qa_table = [dict(r) for r in conn.execute(sa.select(S.qa_results).order_by(S.qa_results.c.id)).mappings()]
    found = archive.find(expnum=1001)
    assert found and all(type(r) is ProductRow for r in found)
    assert [r.to_dict() for r in found] == [table[r.id] for r in found]
    flat = archive.product(night["flat"])
    assert flat.to_dict() == table[night["flat"]] and flat.path == table[night["flat"]]["path"]
    g = archive.lineage(night["coadd_cat"], direction="up", depth=5)
    assert type(g) is LineageGraph and g.product.id == night["coadd_cat"] and g.direction == "up"
    assert all(type(e) is LineageEdge for e in g.edges) and {e.depth for e in g.edges} == {1, 2, 3}
    assert all(g.products[i].to_dict() == table[i] for i in g.products)
    qa = archive.qa_results(expnum=1001)
    assert qa and all(type(r) is QARow for r in qa)
    assert [r.to_dict() for r in qa] == [q for q in qa_table if q["expnum"] == 1001]
    counts = archive.counts()
    assert type(counts) is Counts and counts.products == len(table) and counts.qa_results == len(qa_table)
    assert list(counts) == [t.name for t in S.metadata.sorted_tables]
    near = archive.cone(10.5, -20.5, 0.01)
    assert [type(r) for r in near] == [ConeRow] and near[0].path == table[night["coadd_cat"]]["path"]
    assert near[0].dist == pytest.approx(0.0, abs=1e-9) and near[0].to_dict()["dist"] == near[0].dist


def test_stale_rows_carry_depth_and_origin(night_archive, tmp_path):
    from tests.unit.archive_factory import calib

    archive, night = night_archive
    calib(archive, tmp_path, "flat", b"flat v2")
    stale = archive.stale(night["flat"])
    assert stale and all(type(r) is StaleRow for r in stale)
    assert {r.from_id for r in stale} == {night["flat"]} and min(r.depth for r in stale) == 1
    assert all(r.is_current for r in stale)
    assert [r.to_dict() for r in stale] == [{**archive.product(r.id).to_dict(), "depth": r.depth,
                                             "from_id": r.from_id} for r in stale]


def test_from_mapping_puts_field_order_and_refuses_other_keys():
    values = {"product_id": 7, "input_id": None, "role": "raw", "input_path": "in/raw.fits",
              "input_sha256": "ab" * 32, "depth": 1}
    shuffled = LineageEdge.from_mapping(dict(reversed(list(values.items()))))
    assert shuffled == _edge() and list(shuffled) == _names(LineageEdge) and shuffled.depth == 1
    assert StaleRow.__dict__.get("_names") is None or "depth" in StaleRow.__dict__["_names"][0]
    with pytest.raises(TypeError, match=r"missing fields \['depth'\]"):
        LineageEdge.from_mapping({k: v for k, v in values.items() if k != "depth"})
    with pytest.raises(TypeError, match=r"unknown fields \['colour'\]"):
        LineageEdge.from_mapping(values, colour="blue")
