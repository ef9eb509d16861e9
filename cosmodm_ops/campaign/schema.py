"""The campaign tables, on the archive's own ``metadata`` (migration ``0002_campaigns``).

Tables
------
campaign        one row per reprocessing campaign: what was asked (params JSON), the preview,
                its state (see :mod:`cosmodm_ops.campaign.states`), who and when
campaign_item   one row per (campaign, item key): an exposure (single_epoch), a tile and band
                (coadd) or a tile (calibrate); state, attempts, the batch job, diagnostics, the
                archive run and products it made, and an operator's QA decision
campaign_progress
                one row per (campaign, item state): how many items, their core-hours used, the last
                update of one of them in that state; kept by the store's writes (migration
                ``0010_campaign_progress``), so the campaigns pages read 5 rows per campaign, not its items
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from cosmodm_ops.archive.schema import metadata

__all__ = ["campaign", "campaign_item", "campaign_progress"]

_BigId = BigInteger().with_variant(Integer(), "sqlite")

campaign = Table(
    "campaign", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("survey", String(64), nullable=False),
    Column("stage", String(40), nullable=False, doc="single_epoch | coadd | calibrate | single_epoch+downstream"),
    Column("site", String(100), nullable=False),
    Column("target_version", String(64), nullable=False),
    Column("config_hash", String(128), doc="hash of the target configuration (overrides merged)"),
    Column("params", Text, nullable=False, doc="JSON: the request as validated"),
    Column("preview", Text, doc="JSON: the impact preview"),
    Column("state", String(20), nullable=False),
    Column("queued_behind", BigInteger, doc="campaign id this one waits for (--queue)"),
    Column("source", String(250), doc="'cli' or the Airflow run id that created it (idempotency)"),
    Column("priority", Integer, nullable=False, default=1),
    Column("chunk_size", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("core_hours_estimated", Float),
    Column("created_by", String(200)),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("note", Text, doc="last operator decision or reason (approve, reject, abort, pause)"),
    UniqueConstraint("source"),
    Index(None, "state"),
)

campaign_item = Table(
    "campaign_item", metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("campaign_id", BigInteger, ForeignKey("campaign.id"), nullable=False),
    Column("item_key", String(250), nullable=False, doc="e.g. 'single_epoch:demo:00901234', 'coadd:T:r'"),
    Column("stage", String(32), nullable=False),
    Column("night", String(10)),
    Column("expnum", Integer),
    Column("band", String(64)),
    Column("tile", String(64)),
    Column("state", String(20), nullable=False),
    Column("chunk", Integer, doc="chunk number (0-based) the item runs in"),
    Column("array_index", Integer, doc="element index inside its chunk's job array"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("job_id", String(100)),
    Column("exit_code", Integer),
    Column("elapsed_s", Float),
    Column("max_rss_mb", Float),
    Column("out", Text, doc="output folder of the item's job"),
    Column("spec", Text, nullable=False, doc="JSON: what the job needs (command inputs, previous run)"),
    Column("estimate_core_h", Float),
    Column("core_h_used", Float),
    Column("diagnostics", Text, doc="why it failed (exit code, end of stderr) or was skipped"),
    Column("run_id", BigInteger, doc="archive runs.id of the registered manifest"),
    Column("product_ids", Text, doc="JSON list of archive product ids registered"),
    Column("superseded", Integer, nullable=False, default=0),
    Column("qa_verdict", String(20), doc="pass | borderline | fail"),
    Column("decision", String(20), doc="operator adjudication: accept | quarantine | rerun"),
    Column("decided_by", String(200)),
    Column("decided_at", String(40)),
    Column("updated_at", String(40), nullable=False),
    UniqueConstraint("campaign_id", "item_key"),
    Index(None, "item_key", "state"),
)
# a campaign's items page by keyset on the id, and its pager's count (migration 0007_night_runs)
Index("ix_campaign_item_campaign_id_id", campaign_item.c.campaign_id, campaign_item.c.id)
# a campaign's progress (items by state, core-hours, last update) read from the index alone (migration 0008)
Index("ix_campaign_item_progress", campaign_item.c.campaign_id, campaign_item.c.state, campaign_item.c.updated_at,
      campaign_item.c.core_h_used)

campaign_progress = Table(
    "campaign_progress", metadata,
    Column("campaign_id", BigInteger, ForeignKey("campaign.id"), primary_key=True),
    Column("state", String(20), primary_key=True),
    Column("n", Integer, nullable=False, doc="items in this state"),
    Column("core_h", Float, nullable=False, doc="their core-hours used"),
    Column("last_at", String(40), doc="the latest update of an item while in (or on entering) this state"),
)
