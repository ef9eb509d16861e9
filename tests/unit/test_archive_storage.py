"""storage.store_items on its own: revision numbers, a killed writer's name skipped, healing, waiting lineage."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from cosmodm_ops.archive import Archive, ArchiveInputError
from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.layout import relpath_for
from cosmodm_ops.archive.storage import make_item, store_items
from cosmodm_ops.model import Tags
from tests.unit.archive_factory import sha, write_bytes

pytestmark = pytest.mark.unit

FLAT = Tags(survey="demo", camera="decam", stage="calib", version="v1", kind="flat", band="r")


@pytest.fixture
def archive(tmp_path) -> Archive:
    arch = Archive(f"sqlite:///{tmp_path / 'archive.db'}", tmp_path / "root")
    arch.init()
    return arch


def _store(archive: Archive, src, tags=FLAT):
    with archive.engine.begin() as conn:
        return store_items(conn, archive.root, [make_item(tags, src, None)], None)[0]


def test_revisions_skip_a_name_no_row_claims_and_supersede(archive, tmp_path):
    orphan = write_bytes(archive.root / relpath_for(FLAT, 1), b"a killed writer's complete file")
    v1 = write_bytes(tmp_path / "flat1", b"flat v1")
    first = _store(archive, v1)
    assert (first.revision, first.outcome) == (2, "new")  # revision 1's name is taken by the orphan
    assert orphan.read_bytes() == b"a killed writer's complete file"
    second = _store(archive, write_bytes(tmp_path / "flat2", b"flat v2"))
    assert (second.revision, second.outcome) == (3, "revision")
    assert archive.product(first.id)["state"] == "superseded" and archive.product(first.id)["superseded_by"] == second.id
    assert sha(archive.root / second.path) == sha(tmp_path / "flat2")


def test_same_bytes_are_a_noop_and_heal_a_lost_file(archive, tmp_path):
    src = write_bytes(tmp_path / "flat", b"flat v1")
    first = _store(archive, src)
    (archive.root / first.path).unlink()
    again = _store(archive, src)
    assert (again.id, again.revision, again.outcome) == (first.id, 1, "same")
    assert (archive.root / first.path).read_bytes() == b"flat v1" and archive.counts()["products"] == 1


def test_a_waiting_lineage_edge_points_to_its_input_once_filed(archive, tmp_path):
    made = _store(archive, write_bytes(tmp_path / "bias", b"bias"), dataclasses.replace(FLAT, kind="bias", band=None))
    flat = write_bytes(tmp_path / "flat", b"flat v1")
    with archive.engine.begin() as conn:
        conn.execute(sa.insert(S.lineage).values(product_id=made.id, input_product_id=None, input_sha256=sha(flat),
                                                 input_path=str(flat), role="flat"))
    stored = _store(archive, flat)
    with archive.engine.connect() as conn:
        assert conn.execute(sa.select(S.lineage.c.input_product_id)).scalar_one() == stored.id


def test_the_same_tags_twice_in_one_call_are_refused(archive, tmp_path):
    a, b = write_bytes(tmp_path / "a", b"a"), write_bytes(tmp_path / "b", b"b")
    with archive.engine.begin() as conn, pytest.raises(ArchiveInputError, match="more than once"):
        store_items(conn, archive.root, [make_item(FLAT, a, None), make_item(FLAT, b, None)], None)
    with pytest.raises(ArchiveInputError, match="expected"):
        make_item(FLAT, a, "0" * 64)
