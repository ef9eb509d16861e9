"""What both SSH runners share: the remote command line, the host-key error, the retry backoff, the warning.

Private to :mod:`cosmodm_ops.batch.ssh` and :mod:`cosmodm_ops.batch.ssh_async` (import the public names from
:mod:`cosmodm_ops.batch.ssh`). Both runners log under the one logger ``cosmodm_ops.batch.ssh``, so an operator
filters SSH transport messages by one name.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence

from cosmodm_ops.batch.base import TransportError

__all__ = ["HostKeyError", "backoff", "log", "remote_command", "unverified_warning"]

#: The SSH transport's logger (both runners).
log = logging.getLogger("cosmodm_ops.batch.ssh")

# asyncssh logs every channel at INFO (thousands of lines per minute in a triggerer watching
# hundreds of jobs); keep its warnings and errors unless someone configured it explicitly.
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)

_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)


class HostKeyError(TransportError):
    """The server's host key is unknown or does not match the pinned key. Not retried."""


def remote_command(argv: Sequence[str]) -> str:
    """The command line a remote shell receives: every argument quoted with :func:`shlex.join`.

    Parameters
    ----------
    argv : sequence of str
        Program and arguments (non-empty; no NUL characters).

    Returns
    -------
    str
        ``shlex.join(argv)``; ``$(...)``, ``;`` and friends arrive literally.
    """
    args = [str(a) for a in argv]
    if not args:
        msg = "an SSH command needs at least a program name"
        raise ValueError(msg)
    if any("\x00" in a for a in args):
        msg = "an SSH command argument contains a NUL character"
        raise ValueError(msg)
    return shlex.join(args)


def unverified_warning(where: str) -> None:
    """Warn that host-key verification is off for ``where`` (on every connection)."""
    log.warning("SSH host key verification is OFF for %s (site setting verify_host_key=false): "
                "this connection is open to man-in-the-middle attacks", where)


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnection ``attempt`` (0-based): 1, 2, 4, 8, then 15."""
    return _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
