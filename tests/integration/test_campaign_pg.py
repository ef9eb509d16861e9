"""Campaign tables and a whole campaign on the real PostgreSQL (migration 0002, overlap lock, registration)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cosmodm_ops.campaign import CampaignInputError, CampaignStore
from cosmodm_ops.workflows import campaign as wf
from tests.unit.campaign_factory import build_survey, survey_env

pytestmark = pytest.mark.postgres


def test_campaign_on_postgres(pg_url, tmp_path, monkeypatch):
    survey_env(tmp_path, monkeypatch)
    monkeypatch.setenv("COSMODM_DB", pg_url)
    archive = build_survey(tmp_path)["archive"]
    from tests.unit.test_archive_db import _schema_head

    assert archive.init() == _schema_head()  # the newest migration
    cols = {c["name"] for c in sa.inspect(archive.engine).get_columns("campaign_item")}
    assert {"campaign_id", "item_key", "state", "attempts", "decision", "decided_by"} <= cols
    params = {"survey": "demo", "stage": "single_epoch", "target_version": "v1", "nights": "2026-11-24",
              "overrides": {"single_epoch.detect_thresh": 3.0}}
    row = wf.create_campaign(params, source="pg-1")
    assert wf.create_campaign(params, source="pg-1")["id"] == row["id"]
    with pytest.raises(CampaignInputError, match="already covers 2"):
        wf.create_campaign(params)
    summary = wf.run_local(row["id"])
    assert (summary["state"], summary["done"], summary["superseded"]) == ("done", 2, 4)
    items = CampaignStore(archive).items(row["id"])
    assert all(it["run_id"] and len(it["product_ids"]) == 2 for it in items)
    revs = archive.find(expnum=902001, kind="image", include_superseded=True)
    assert [(r["revision"], r["state"]) for r in revs] == [(1, "superseded"), (2, "current")]


_UPDATER = """
import sys, time
from pathlib import Path
from cosmodm_ops.archive import Archive
from cosmodm_ops.campaign import CampaignStore, ItemState
db, root, go, cid, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")
while not Path(go).exists():
    time.sleep(0.005)
store = CampaignStore(Archive(db, root))
if keys == ["recount"]:  # the bulk writers' path (move_items, new items): recount the campaign, again and again
    from cosmodm_ops.campaign.store import recount_progress
    for _ in range(60):
        with store.archive.engine.begin() as conn:
            recount_progress(conn, [cid])
    sys.exit(0)
for k in keys:
    store.update_item(cid, k, ItemState.SUBMITTED)
    store.update_item(cid, k, ItemState.RUNNING)
    store.update_item(cid, k, ItemState.DONE, core_h_used=0.125)
"""


def test_concurrent_item_updates_keep_campaign_progress(pg_url, tmp_path):
    """Four processes move 24 items of one campaign through submitted, running and done while a fifth recounts
    the campaign (as bulk moves do) over and over: the kept progress equals the items' own counts. The updates'
    increments are atomic per row; the recount and the updates exclude each other by the campaign's advisory
    lock (without it, a recount from a snapshot taken before an update's commit writes that update away)."""
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.campaign import schema as C
    from cosmodm_ops.ui.seed import seed_campaigns
    from tests.unit.archive_factory import run_workers
    from tests.unit.campaign_factory import progress_kept_and_live

    archive = Archive(pg_url, tmp_path / "root")
    archive.init()
    (cid,) = seed_campaigns(archive, list(range(700001, 700145)), n=1)  # 144 items, 24 of them planned
    with archive.engine.connect() as conn:
        planned = [k for (k,) in conn.execute(sa.select(C.campaign_item.c.item_key).where(
            C.campaign_item.c.campaign_id == cid, C.campaign_item.c.state == "planned")).all()]
    assert len(planned) == 24
    jobs = [(str(cid), keys) for keys in [",".join(planned[j::4]) for j in range(4)] + ["recount"]]
    run_workers(archive, tmp_path, jobs, script=_UPDATER)
    kept, live = progress_kept_and_live(archive)
    assert kept == live
    assert kept[(cid, "done")] == (72, round(48 * 0.4 + 24 * 0.125, 9)) and "planned" not in {s for _, s in kept}
