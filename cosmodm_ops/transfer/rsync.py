"""Rsync over SSH: checksums, partial files kept apart, rename at the destination, host key pinned."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from cosmodm_ops.transfer.base import Transfer, TransferError, TransferItem

__all__ = ["RsyncTransfer"]


class RsyncTransfer(Transfer):
    """``rsync -a --checksum --partial-dir=.rsync-partial`` to ``user@host:`` over a pinned-host-key ssh.

    Parameters
    ----------
    host, port, username, key_file : SSH settings of the site.
    host_key : str
        The site's host key line (``ssh-ed25519 AAAA...``); written to a private known_hosts file.
    verify_host_key : bool
        ``False`` turns checking off (a warning is logged on every transfer).
    """

    method = "rsync"

    def __init__(self, host: str, port: int, username: str, key_file: str, host_key: str | None = None,
                 verify_host_key: bool = True) -> None:
        self.host, self.port, self.username, self.key_file = host, int(port), username, key_file
        self.host_key, self.verify_host_key = host_key, verify_host_key

    @classmethod
    def from_airflow_connection(cls, conn_id: str, verify_host_key: bool = True) -> RsyncTransfer:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra_dejson
        return cls(conn.host, conn.port or 22, conn.login, extra.get("key_file"), extra.get("host_key"),
                   verify_host_key)

    def _ssh_command(self, known_hosts: str) -> str:
        opts = ["ssh", "-p", str(self.port), "-i", self.key_file, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        if self.verify_host_key:
            opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
        else:
            import logging

            logging.getLogger(__name__).warning("host key verification is OFF for %s (site config)", self.host)
            opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return shlex.join(opts)

    def run(self, items: list[TransferItem]) -> dict[str, Any]:
        by_dir: dict[str, list[TransferItem]] = defaultdict(list)
        for item in items:
            by_dir[str(Path(item.dst).parent)].append(item)
        files = nbytes = 0
        with tempfile.TemporaryDirectory(prefix="cosmodm-rsync-") as tmp:
            known = os.path.join(tmp, "known_hosts")
            host = f"[{self.host}]:{self.port}" if self.port != 22 else self.host
            Path(known).write_text(f"{host} {self.host_key}\n" if self.host_key else "")
            ssh = self._ssh_command(known)
            for dst_dir, group in by_dir.items():
                for item in group:
                    if Path(item.src).name != Path(item.dst).name:
                        raise TransferError(f"{item.src} -> {item.dst}: rsync keeps file names; rename is not supported")
                argv = ["rsync", "-a", "--checksum", "--partial-dir=.rsync-partial", "--mkpath", "-e", ssh,
                        *[i.src for i in group], f"{self.username}@{self.host}:{dst_dir}/"]
                res = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
                if res.returncode != 0:
                    raise TransferError(f"rsync to {self.host}:{dst_dir} failed (exit {res.returncode}): "
                                        f"{res.stderr.strip()[-500:]}")
                files += len(group)
                nbytes += sum(Path(i.src).stat().st_size for i in group)
        return {"files": files, "bytes": nbytes, "linked": 0, "copied": files}
