"""The campaign tables as a small API: create (idempotent, overlap-checked), read, move states.

Every write is one transaction on the archive database (``Archive.engine``); on PostgreSQL
creation takes an advisory lock so two overlapping campaigns created at once cannot both pass
the overlap check; on SQLite every transaction is ``BEGIN IMMEDIATE`` (the archive's engine).
Item rows are keyed by ``(campaign_id, item_key)``: inserting the same item twice is a no-op.
Each write also keeps ``campaign_progress`` (items, core-hours and last update per campaign and state) in
its transaction, under a per-campaign advisory lock on PostgreSQL: an item's update moves its count from the
old state to the new one; a bulk move or an insert recounts the campaign.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive.db import lock_keys
from cosmodm_ops.campaign import schema as C
from cosmodm_ops.campaign.request import CampaignInputError, CampaignRequest
from cosmodm_ops.campaign.selection import Item
from cosmodm_ops.campaign.states import (
    ACTIVE_CAMPAIGN_STATES,
    CampaignState,
    ItemState,
    check_campaign_transition,
    check_item_transition,
)

__all__ = ["STAGE_ORDER", "CampaignStore", "now", "recount_progress"]

#: Stages run in this order inside a campaign (downstream after upstream).
STAGE_ORDER = {"single_epoch": 0, "coadd": 1, "calibrate": 2, "cluster_followup": 3}
_OPEN_ITEM = (ItemState.PLANNED.value, ItemState.SUBMITTED.value, ItemState.RUNNING.value)


def now() -> str:
    """ISO 8601 UTC, seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class CampaignStore:
    """Campaign rows in the archive database of ``archive``."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction; a missing table says to run ``cosmodm archive init``."""
        try:
            with self.archive.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as err:
            text = str(getattr(err, "orig", err))
            if "no such table" in text or "does not exist" in text:
                msg = f"campaign tables missing in {self.archive!r}: run `cosmodm archive init`"
                raise CampaignInputError(msg) from err
            raise

    def _insert(self, table: sa.Table) -> Any:
        if self.archive.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # ------------------------------------------------------------------ create
    def overlaps(self, conn: Connection, keys: Sequence[str], exclude: int | None = None) -> dict[int, list[str]]:
        """Open items of active campaigns that share a key with ``keys``: ``{campaign_id: [keys]}``."""
        c, i = C.campaign, C.campaign_item
        found: dict[int, list[str]] = {}
        active = [s.value for s in ACTIVE_CAMPAIGN_STATES]
        for j in range(0, len(keys), 500):
            q = (sa.select(i.c.campaign_id, i.c.item_key).join(c, c.c.id == i.c.campaign_id)
                 .where(c.c.state.in_(active), i.c.state.in_(_OPEN_ITEM), i.c.item_key.in_(list(keys[j:j + 500]))))
            if exclude is not None:
                q = q.where(c.c.id != exclude)
            for r in conn.execute(q):
                found.setdefault(int(r.campaign_id), []).append(r.item_key)
        return found

    def create(self, req: CampaignRequest, items: Sequence[Item], preview: dict[str, Any], *, state: CampaignState,
               source: str | None, config_hash: str, created_by: str | None = None,
               estimates: dict[str, float] | None = None) -> int:
        """Insert a campaign and its items in one transaction; return its id.

        A campaign with the same ``source`` (an Airflow run id) is returned as it is (a cleared
        task or a duplicate call creates nothing). Open items of an active campaign with the same
        key refuse the creation (:class:`CampaignInputError` naming the campaign and the keys),
        unless ``req.queue``: the new campaign is then ``queued`` behind it.
        """
        todo = [it for it in items if not it.up_to_date]
        t = now()
        with self.tx() as conn:
            if self.archive.engine.dialect.name == "postgresql":
                key = int.from_bytes(hashlib.sha256(b"cosmodm-campaign-create").digest()[:8], "big", signed=True)
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            if source:
                old = conn.execute(sa.select(C.campaign.c.id).where(C.campaign.c.source == source)).scalar()
                if old is not None:
                    return int(old)
            behind = None
            if state is not CampaignState.DRY_RUN:
                clash = self.overlaps(conn, [it.key for it in todo])
                if clash and not req.queue:
                    cid, keys = min(clash.items())
                    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                    msg = (f"campaign {cid} (still active) already covers {len(keys)} of these item(s): {shown}; "
                           "wait for it, cancel it, or pass --queue to run after it")
                    raise CampaignInputError(msg)
                if clash:
                    behind, state = max(clash), CampaignState.QUEUED
            cid = int(conn.execute(sa.insert(C.campaign).values(
                name=req.name, description=req.description, survey=req.survey, stage=req.stage, site=req.site,
                target_version=req.target_version, config_hash=config_hash, params=json.dumps(req.to_dict()),
                preview=json.dumps(preview), state=state.value, queued_behind=behind, source=source,
                priority=req.priority, chunk_size=req.chunk_size, max_retries=req.max_retries,
                core_hours_estimated=preview.get("core_hours_estimated"), created_by=created_by, created_at=t,
                updated_at=t).returning(C.campaign.c.id)).scalar_one())
            if state is not CampaignState.DRY_RUN:
                self._insert_items(conn, cid, req, items, estimates or {})
        return cid

    def _insert_items(self, conn: Connection, cid: int, req: CampaignRequest, items: Sequence[Item],
                      estimates: dict[str, float]) -> None:
        rows, counters = [], Counter()
        ordered = sorted(items, key=lambda it: (STAGE_ORDER[it.stage], it.key))
        chunk_base, last_stage = 0, None
        for it in ordered:
            state, chunk, index = ItemState.SKIPPED.value, None, None
            if not it.up_to_date:
                if last_stage is not None and it.stage != last_stage:
                    chunk_base += -(-counters[last_stage] // req.chunk_size)
                last_stage = it.stage
                n = counters[it.stage]
                counters[it.stage] += 1
                state, chunk, index = ItemState.PLANNED.value, chunk_base + n // req.chunk_size, n % req.chunk_size
            rows.append({"campaign_id": cid, "item_key": it.key, "stage": it.stage, "night": it.night,
                         "expnum": it.expnum, "band": it.band, "tile": it.tile, "state": state, "chunk": chunk,
                         "array_index": index, "attempts": 0, "spec": json.dumps({**it.spec, "replaces": it.replaces}),
                         "estimate_core_h": estimates.get(it.key), "superseded": 0,
                         "diagnostics": "up to date under the target version" if it.up_to_date else None,
                         "updated_at": now()})
        for j in range(0, len(rows), 1000):
            conn.execute(self._insert(C.campaign_item).on_conflict_do_nothing(
                index_elements=["campaign_id", "item_key"]), rows[j:j + 1000])
        recount_progress(conn, [cid])

    # ------------------------------------------------------------------ read
    def get(self, cid: int) -> dict[str, Any]:
        """The campaign row (``params``/``preview`` decoded); :class:`CampaignInputError` if unknown."""
        with self.tx() as conn:
            row = conn.execute(sa.select(C.campaign).where(C.campaign.c.id == int(cid))).mappings().first()
        if row is None:
            msg = f"no campaign {cid} (see `cosmodm campaign list`)"
            raise CampaignInputError(msg)
        out = dict(row)
        out["params"] = json.loads(out["params"] or "{}")
        out["preview"] = json.loads(out["preview"] or "{}")
        return out

    def list(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every campaign (newest first) with item counts by state."""
        c, i = C.campaign, C.campaign_item
        with self.tx() as conn:
            q = sa.select(c.c.id, c.c.name, c.c.survey, c.c.stage, c.c.site, c.c.target_version, c.c.state,
                          c.c.created_at, c.c.updated_at).order_by(c.c.id.desc())
            if state:
                q = q.where(c.c.state == state)
            rows = [dict(r) for r in conn.execute(q).mappings()]
            counts: dict[int, dict[str, int]] = {}
            for r in conn.execute(sa.select(i.c.campaign_id, i.c.state, sa.func.count()).group_by(
                    i.c.campaign_id, i.c.state)):
                counts.setdefault(int(r[0]), {})[r[1]] = int(r[2])
        for r in rows:
            r["items"] = counts.get(int(r["id"]), {})
        return rows

    def items(self, cid: int, *, state: str | Sequence[str] | None = None,
              chunk: int | None = None) -> list[dict[str, Any]]:
        """Item rows of a campaign (``spec``/``product_ids`` decoded), by chunk and index."""
        i = C.campaign_item
        q = sa.select(i).where(i.c.campaign_id == int(cid))
        if state is not None:
            q = q.where(i.c.state.in_([state] if isinstance(state, str) else list(state)))
        if chunk is not None:
            q = q.where(i.c.chunk == int(chunk))
        with self.tx() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(i.c.chunk, i.c.array_index, i.c.item_key)).mappings()]
        for r in rows:
            r["spec"] = json.loads(r["spec"] or "{}")
            r["product_ids"] = json.loads(r["product_ids"]) if r["product_ids"] else []
        return rows

    def chunks(self, cid: int, states: Sequence[str] = (ItemState.PLANNED.value,)) -> list[int]:
        """Chunk numbers that still have items in ``states``, in order."""
        return sorted({int(r["chunk"]) for r in self.items(cid, state=list(states)) if r["chunk"] is not None})

    # ------------------------------------------------------------------ move states
    def set_state(self, cid: int, new: CampaignState | str, note: str | None = None) -> str:
        """Move a campaign (checked against the state machine); returns the new state."""
        with self.tx() as conn:
            old = conn.execute(sa.select(C.campaign.c.state).where(C.campaign.c.id == int(cid))).scalar()
            if old is None:
                msg = f"no campaign {cid}"
                raise CampaignInputError(msg)
            state = check_campaign_transition(old, new)
            values: dict[str, Any] = {"state": state.value, "updated_at": now()}
            if note is not None:
                values["note"] = note
            conn.execute(sa.update(C.campaign).where(C.campaign.c.id == int(cid)).values(**values))
        return state.value

    def update_params(self, cid: int, **values: Any) -> None:
        """Merge keys into the campaign's ``params`` JSON (e.g. the failure-rate baseline of a continue)."""
        with self.tx() as conn:
            text = conn.execute(sa.select(C.campaign.c.params).where(C.campaign.c.id == int(cid))).scalar()
            params = {**json.loads(text or "{}"), **values}
            conn.execute(sa.update(C.campaign).where(C.campaign.c.id == int(cid))
                         .values(params=json.dumps(params), updated_at=now()))

    def update_item(self, cid: int, key: str, new: ItemState | str | None = None, **values: Any) -> dict[str, Any]:
        """Change one item (state checked against the state machine; other columns as given)."""
        i = C.campaign_item
        where = (i.c.campaign_id == int(cid), i.c.item_key == key)
        with self.tx() as conn:
            lock_keys(conn, [_progress_key(cid)])  # before the read: the count moves from the state read
            row = conn.execute(sa.select(i).where(*where)).mappings().first()
            if row is None:
                msg = f"campaign {cid}: no item {key!r}"
                raise CampaignInputError(msg)
            if new is not None:
                values["state"] = check_item_transition(row["state"], new).value
            for k in ("spec", "product_ids"):
                if k in values and not isinstance(values[k], str) and values[k] is not None:
                    values[k] = json.dumps(values[k])
            values["updated_at"] = now()
            conn.execute(sa.update(i).where(*where).values(**values))
            after = {**dict(row), **values}
            self._move_progress(conn, int(cid), dict(row), after)
            return after

    def _move_progress(self, conn: Connection, cid: int, before: dict[str, Any], after: dict[str, Any]) -> None:
        """One item's update in ``campaign_progress``: out of its old state, into its new one (an upsert)."""
        cp = C.campaign_progress
        conn.execute(sa.update(cp).where(cp.c.campaign_id == cid, cp.c.state == before["state"]).values(
            n=cp.c.n - 1, core_h=cp.c.core_h - float(before.get("core_h_used") or 0.0)))
        t, h = after["updated_at"], float(after.get("core_h_used") or 0.0)
        ins = self._insert(cp).values(campaign_id=cid, state=after["state"], n=1, core_h=h, last_at=t)
        conn.execute(ins.on_conflict_do_update(index_elements=["campaign_id", "state"], set_={
            "n": cp.c.n + 1, "core_h": cp.c.core_h + h,
            "last_at": sa.case((cp.c.last_at > t, cp.c.last_at), else_=t)}))

    def move_items(self, cid: int, from_states: Sequence[str], to: ItemState, note: str | None = None,
                   reset_attempts: bool = False) -> int:
        """Move every item in ``from_states`` to ``to`` (each move checked); returns how many moved."""
        i = C.campaign_item
        for s in from_states:
            check_item_transition(s, to)
        values: dict[str, Any] = {"state": to.value, "updated_at": now()}
        if note is not None:
            values["diagnostics"] = note
        if reset_attempts:
            values["attempts"] = 0
        with self.tx() as conn:
            lock_keys(conn, [_progress_key(cid)])  # before the items' rows: an item update holds it while it waits for them
            res = conn.execute(sa.update(i).where(i.c.campaign_id == int(cid), i.c.state.in_(list(from_states)))
                               .values(**values))
            recount_progress(conn, [int(cid)])
            return int(res.rowcount or 0)


def _progress_key(cid: int) -> str:
    return f"cosmodm-campaign-progress:{int(cid)}"


def recount_progress(conn: Connection, cids: Sequence[int]) -> None:
    """Rewrite the ``campaign_progress`` rows of campaigns ``cids`` from their items (in the caller's transaction;
    PostgreSQL: under the campaigns' advisory locks, which item updates take too)."""
    i, cp = C.campaign_item, C.campaign_progress
    lock_keys(conn, [_progress_key(c) for c in cids])
    for cid in sorted({int(c) for c in cids}):
        conn.execute(sa.delete(cp).where(cp.c.campaign_id == cid))
        conn.execute(sa.insert(cp).from_select(["campaign_id", "state", "n", "core_h", "last_at"], sa.select(
            i.c.campaign_id, i.c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(i.c.core_h_used), 0.0),
            sa.func.max(i.c.updated_at)).where(i.c.campaign_id == cid).group_by(i.c.campaign_id, i.c.state)))
