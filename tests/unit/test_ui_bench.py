"""``cosmodm bench ui``'s own parts: the settled archive it measures, its targets."""

from __future__ import annotations

import sqlalchemy as sa

from cosmodm_ops.archive import Archive
from cosmodm_ops.archive import schema as S
from cosmodm_ops.ui.bench import _settle, target_ms


def test_settle_writes_the_sqlite_wal_into_the_database(tmp_path):
    arch = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "root")
    arch.init()
    with arch.engine.begin() as conn:
        conn.execute(sa.insert(S.tiles), [{"survey": "s", "name": f"T{k}", "ra": k * 1.0, "dec": -30.0}
                                          for k in range(500)])
    wal = tmp_path / "a.db-wal"
    assert wal.stat().st_size > 0
    _settle(arch)
    assert wal.stat().st_size == 0
    with arch.read_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.tiles)).scalar() == 500


def test_targets():
    assert target_ms("nights_json") == 100
    assert target_ms("nights") == target_ms("download") == 300
