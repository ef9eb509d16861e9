"""Moving data to and from sites: one interface, three implementations (local, rsync, Globus)."""

from __future__ import annotations

from cosmodm_ops.transfer.base import Transfer, TransferError, TransferItem
from cosmodm_ops.transfer.factory import get_transfer
from cosmodm_ops.transfer.local import LocalTransfer
from cosmodm_ops.transfer.rsync import RsyncTransfer

__all__ = ["LocalTransfer", "RsyncTransfer", "Transfer", "TransferError", "TransferItem", "get_transfer"]
