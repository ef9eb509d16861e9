"""Command runners over SSH: :class:`SSHRunner` (blocking, here) and :class:`AsyncSSHRunner` (asyncio, shared;
in :mod:`cosmodm_ops.batch.ssh_async`, importable from here). Their shared parts (:func:`remote_command`,
:class:`HostKeyError`, backoff) are in :mod:`cosmodm_ops.batch._ssh`; both log as ``cosmodm_ops.batch.ssh``.

Both carry argument-list commands to a login node as ``shlex.join(argv)`` (the remote shell sees
every argument literally) and return :class:`~cosmodm_ops.batch.base.CommandResult`; they never
raise for a non-zero exit, and raise :class:`~cosmodm_ops.batch.base.TransportError` when the
command cannot be carried.

Security
--------
Host keys are verified unless the site explicitly turns verification off (then a warning is
logged on every connection). The key pinned in the connection's ``host_key`` extra is the only
key trusted for that host; without a pin, ``~/.ssh/known_hosts`` decides. An unknown or changed
host key raises :class:`HostKeyError` (a TransportError) and is never retried: retrying cannot fix
it, and hammering a spoofed server is pointless. No key, passphrase or password reaches a log or
an error message (only host, port, user and key *paths*).

Connections
-----------
:meth:`AsyncSSHRunner.shared` returns ONE runner per ``(host, port, user)`` in the process, so all
the triggers of a site multiplex their commands as channels of one SSH connection (at most
``max_sessions`` at a time, below sshd's default ``MaxSessions 10``). A lost connection is
re-established a bounded number of times with backoff, but a command that may already have
started is not re-sent: its caller gets a TransportError and decides (status polls are
idempotent; submission is idempotent by job name).
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Sequence
from typing import Any, Self

from cosmodm_ops.batch._ssh import HostKeyError, backoff, log, remote_command, unverified_warning
from cosmodm_ops.batch.base import CommandResult, TransportError
from cosmodm_ops.batch.ssh_async import AsyncSSHRunner

__all__ = ["AsyncSSHRunner", "HostKeyError", "SSHRunner", "remote_command"]


# --------------------------------------------------------------------------- blocking
class SSHRunner:
    """Blocking command runner through providers-ssh's ``SSHHook`` (paramiko); one connection, reused.

    Parameters
    ----------
    hook : SSHHook
        A configured hook (see :meth:`from_airflow_connection`); its connection is opened lazily.
    verify_host_key : bool
        False turns host key checking off for this runner (a warning on every connection).
    max_reconnects : int
        Reconnections tried (with backoff) when the connection cannot be opened or was lost
        before a command started.
    """

    def __init__(self, hook: Any, *, verify_host_key: bool = True, max_reconnects: int = 2) -> None:
        self.hook = hook
        self.verify_host_key = verify_host_key
        self.max_reconnects = max(0, int(max_reconnects))
        self.connects = 0
        self.commands = 0
        if verify_host_key:
            # The site asked for verification: a ``no_host_key_check`` extra must not undo it.
            hook.no_host_key_check = False
            hook.allow_host_key_change = False
        else:
            hook.host_key = None
            hook.no_host_key_check = True
        # Our own bounded retry decides (host key problems are never retried).
        hook.conn_retry_attempts = 1

    @classmethod
    def from_airflow_connection(cls, conn_id: str, verify_host_key: bool = True, *, conn_timeout: int = 15,
                                max_reconnects: int = 2) -> SSHRunner:
        """A runner for the Airflow SSH connection ``conn_id`` (host, port, login, extra key_file/host_key).

        Parameters
        ----------
        conn_id : str
            Airflow connection id (e.g. from ``AIRFLOW_CONN_<ID>``).
        verify_host_key : bool
            Verify the host key (pinned ``host_key`` extra, else ``~/.ssh/known_hosts``).
        conn_timeout : int
            Seconds to establish the TCP connection and the SSH handshake.
        """
        from airflow.providers.ssh.hooks.ssh import SSHHook

        if verify_host_key:
            hook = SSHHook(ssh_conn_id=conn_id, conn_timeout=conn_timeout, conn_retry_attempts=1,
                           no_host_key_check=False)
        else:
            # SSHHook refuses "no check" together with a pinned key: build it, then drop the pin.
            hook = SSHHook(ssh_conn_id=conn_id, conn_timeout=conn_timeout, conn_retry_attempts=1)
        return cls(hook, verify_host_key=verify_host_key, max_reconnects=max_reconnects)

    @property
    def where(self) -> str:
        return f"{self.hook.username}@{self.hook.remote_host}:{self.hook.port}"

    def _client(self) -> Any:
        import paramiko

        client = getattr(self.hook, "client", None)
        if client is not None:
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client
            self.hook.client = None
        if not self.verify_host_key:
            unverified_warning(self.where)
        try:
            client = self.hook.get_conn()
        except paramiko.BadHostKeyException as err:
            msg = (f"SSH host key of {self.where} does not match the pinned or known key (server offered "
                   f"{err.key.get_name()} {err.key.fingerprint}); refusing to connect: check the connection's "
                   "host_key extra")
            raise HostKeyError(msg) from None
        except paramiko.AuthenticationException as err:
            msg = f"SSH login to {self.where} refused (check the connection's login and key_file): {err}"
            raise TransportError(msg) from None
        except paramiko.SSHException as err:
            if "known_hosts" in str(err):
                msg = (f"SSH host key of {self.where} is unknown (not pinned in the connection's host_key extra "
                       "and not in known_hosts); refusing to connect")
                raise HostKeyError(msg) from None
            raise
        self.connects += 1
        return client

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = 60) -> CommandResult:
        """Run ``argv`` remotely and wait.

        Parameters
        ----------
        argv : sequence of str
            The command; sent as ``shlex.join(argv)``.
        stdin : str, optional
            Text written to the command's standard input (then closed).
        timeout : float, optional
            Seconds for the whole command; None waits forever.

        Returns
        -------
        CommandResult
            Exit code (-1 when the remote process died of a signal), stdout, stderr.

        Raises
        ------
        HostKeyError
            Host key unknown or wrong (not retried).
        TransportError
            No connection after the bounded retries, connection lost mid-command, or timeout.
        """
        import paramiko

        command = remote_command(argv)
        attempt = 0
        while True:
            try:
                client = self._client()
                channel = client.get_transport().open_session(timeout=30)
            except TransportError:
                raise
            except (TimeoutError, paramiko.SSHException, EOFError, OSError) as err:
                self.close()
                if attempt >= self.max_reconnects:
                    msg = f"cannot open an SSH session to {self.where} after {attempt + 1} attempt(s): {err}"
                    raise TransportError(msg) from None
                delay = backoff(attempt)
                log.warning("SSH to %s failed (%s); reconnecting in %.0f s", self.where, type(err).__name__, delay)
                time.sleep(delay)
                attempt += 1
                continue
            break
        self.commands += 1
        try:
            return self._exec(channel, command, stdin, timeout)
        except TransportError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as err:
            self.close()
            msg = f"SSH connection to {self.where} lost while running {argv[0]!r} (not re-sent): {err}"
            raise TransportError(msg) from None

    def _exec(self, channel: Any, command: str, stdin: str | None, timeout: float | None) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            with selectors.DefaultSelector() as sel:
                sel.register(channel, selectors.EVENT_READ)
                while True:
                    if channel.recv_ready():
                        out.append(channel.recv(65536))
                        continue
                    if channel.recv_stderr_ready():
                        err.append(channel.recv_stderr(65536))
                        continue
                    if channel.exit_status_ready():
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        msg = f"SSH command on {self.where} timed out after {timeout:.0f} s"
                        raise TransportError(msg)
                    if channel.closed and not channel.exit_status_ready():
                        msg = f"SSH channel to {self.where} closed before the command ended"
                        raise TransportError(msg)
                    sel.select(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
            code = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(returncode=code, stdout=b"".join(out).decode(errors="replace"),
                             stderr=b"".join(err).decode(errors="replace"))

    def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        client = getattr(self.hook, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception as err:  # noqa: BLE001 - closing a broken connection
                log.debug("closing the SSH connection to %s: %s", self.where, err)
            self.hook.client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
