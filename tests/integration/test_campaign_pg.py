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
