"""Explicit states of a campaign and of its items, and the only transitions allowed between them."""

from __future__ import annotations

import enum

__all__ = [
    "ACTIVE_CAMPAIGN_STATES",
    "CampaignState",
    "IllegalTransition",
    "ItemState",
    "check_campaign_transition",
    "check_item_transition",
]


class IllegalTransition(ValueError):
    """A state change the state machine does not allow (the message names both states)."""


class ItemState(str, enum.Enum):
    """One item (an exposure, a tile and band, a tile) of a campaign."""

    PLANNED = "planned"
    """Selected, waiting for its chunk to be submitted (also: a failure with retries left)."""
    SUBMITTED = "submitted"
    """Its chunk's job array is queued at the site."""
    RUNNING = "running"
    """Its array element runs."""
    DONE = "done"
    """The job finished and its manifest is registered in the archive."""
    FAILED = "failed"
    """Failed after every retry; ``diagnostics`` says why. The campaign goes on."""
    SKIPPED = "skipped"
    """Already up to date under the target version (or quarantined by an operator's decision)."""
    CANCELLED = "cancelled"
    """The campaign was cancelled before the item finished."""


class CampaignState(str, enum.Enum):
    """A whole campaign."""

    DRY_RUN = "dry_run"
    """Only the preview was made (``dry_run``); nothing runs."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Planned; the preview waits for an operator's approval (Airflow HITL)."""
    QUEUED = "queued"
    """Waits for an overlapping campaign to end (``--queue``)."""
    PLANNED = "planned"
    """Approved (or submitted from the CLI) and ready to run."""
    RUNNING = "running"
    """Chunks are being submitted or run."""
    PAUSED = "paused"
    """Stopped by the failure-rate guard, waiting for continue-or-abort."""
    DONE = "done"
    """Every item is done, failed or skipped."""
    CANCELLED = "cancelled"
    """Cancelled (or aborted) by an operator."""
    REJECTED = "rejected"
    """The preview was rejected: nothing was submitted."""


#: Campaigns whose items a new campaign must not overlap.
ACTIVE_CAMPAIGN_STATES = frozenset({CampaignState.AWAITING_APPROVAL, CampaignState.QUEUED,
                                    CampaignState.PLANNED, CampaignState.RUNNING, CampaignState.PAUSED})

_I = ItemState
_ITEM_MOVES: dict[ItemState, frozenset[ItemState]] = {
    _I.PLANNED: frozenset({_I.SUBMITTED, _I.RUNNING, _I.DONE, _I.FAILED, _I.SKIPPED, _I.CANCELLED}),
    _I.SUBMITTED: frozenset({_I.RUNNING, _I.DONE, _I.FAILED, _I.PLANNED, _I.CANCELLED}),
    _I.RUNNING: frozenset({_I.DONE, _I.FAILED, _I.PLANNED, _I.CANCELLED}),
    _I.FAILED: frozenset({_I.PLANNED}),            # retry-failed
    _I.CANCELLED: frozenset({_I.PLANNED}),         # resume of a paused campaign's cancelled elements
    _I.DONE: frozenset({_I.PLANNED, _I.SKIPPED}),  # rerun with an override / quarantine decision
    _I.SKIPPED: frozenset(),
}

_C = CampaignState
_CAMPAIGN_MOVES: dict[CampaignState, frozenset[CampaignState]] = {
    _C.DRY_RUN: frozenset(),
    _C.AWAITING_APPROVAL: frozenset({_C.PLANNED, _C.REJECTED, _C.CANCELLED}),
    _C.QUEUED: frozenset({_C.PLANNED, _C.AWAITING_APPROVAL, _C.CANCELLED}),
    _C.PLANNED: frozenset({_C.RUNNING, _C.DONE, _C.CANCELLED}),
    _C.RUNNING: frozenset({_C.PAUSED, _C.DONE, _C.CANCELLED, _C.RUNNING}),
    _C.PAUSED: frozenset({_C.RUNNING, _C.CANCELLED}),
    _C.DONE: frozenset({_C.RUNNING}),              # retry-failed reopens a finished campaign
    _C.CANCELLED: frozenset(),
    _C.REJECTED: frozenset(),
}


def check_item_transition(old: ItemState | str, new: ItemState | str) -> ItemState:
    """Return ``new`` as an :class:`ItemState`, or raise :class:`IllegalTransition`."""
    a, b = ItemState(old), ItemState(new)
    if a is b or b in _ITEM_MOVES[a]:
        return b
    msg = f"item state cannot go from {a.value!r} to {b.value!r}"
    raise IllegalTransition(msg)


def check_campaign_transition(old: CampaignState | str, new: CampaignState | str) -> CampaignState:
    """Return ``new`` as a :class:`CampaignState`, or raise :class:`IllegalTransition`."""
    a, b = CampaignState(old), CampaignState(new)
    if b in _CAMPAIGN_MOVES[a] or (a is b and a is _C.RUNNING):
        return b
    msg = f"campaign state cannot go from {a.value!r} to {b.value!r}"
    raise IllegalTransition(msg)
