"""Command runners over SSH: :class:`SSHRunner` (blocking) and :class:`AsyncSSHRunner` (asyncio, shared).

Both carry argument-list commands to a login node as ``shlex.join(argv)`` (the remote shell sees
every argument literally) and return :class:`~cosmodm_ops.batch.base.CommandResult`; they never
raise for a non-zero exit, and raise :class:`~cosmodm_ops.batch.base.TransportError` when the
command cannot be carried.

Longer than 500 lines because the two runners share one set of rules (host-key pinning, the
error translation, the connection cache and its drop detection) that must stay side by side to be
reviewed together; a split into a shared private module and two runners was tried and left out
until the Slurm node-failure test is shown to pass with it on a quiet machine.

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

import asyncio
import logging
import selectors
import shlex
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from cosmodm_ops.batch.base import CommandResult, TransportError

__all__ = ["AsyncSSHRunner", "HostKeyError", "SSHRunner", "remote_command"]

log = logging.getLogger(__name__)

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


def _unverified_warning(where: str) -> None:
    log.warning("SSH host key verification is OFF for %s (site setting verify_host_key=false): "
                "this connection is open to man-in-the-middle attacks", where)


def _backoff(attempt: int) -> float:
    return _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]


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
            _unverified_warning(self.where)
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
                delay = _backoff(attempt)
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


# --------------------------------------------------------------------------- asyncio
class AsyncSSHRunner:
    """Asyncio command runner (asyncssh) multiplexing many commands over one shared connection.

    Use :meth:`shared` (one runner per ``(host, port, user)`` in the process) rather than the
    constructor. Counters ``connects`` and ``commands`` are kept for benchmarks and tests.

    Parameters
    ----------
    host, port, username : where to log in
    key_file : str, optional
        Private key path (None: asyncssh's default keys).
    host_key : str, optional
        Pinned public host key ``"ssh-ed25519 AAAA..."`` (the connection's ``host_key`` extra).
    verify_host_key : bool
        False accepts any host key (a warning on every connection).
    max_reconnects : int
        Reconnection attempts (backoff 1, 2, 4, ... s) before a command fails with TransportError.
    max_sessions : int
        Commands in flight at once on the connection (sshd's default ``MaxSessions`` is 10).
    connect_timeout : float
        Seconds for TCP connect, handshake and login.
    """

    _shared: ClassVar[dict[tuple[str, int, str], AsyncSSHRunner]] = {}

    def __init__(self, host: str, port: int = 22, username: str | None = None, key_file: str | None = None,
                 host_key: str | None = None, verify_host_key: bool = True, *, max_reconnects: int = 3,
                 max_sessions: int = 8, connect_timeout: float = 20.0) -> None:
        self.host = host
        self.port = int(port or 22)
        self.username = username
        self.key_file = key_file
        self.host_key = host_key.strip() if host_key else None
        self.verify_host_key = bool(verify_host_key)
        self.max_reconnects = max(0, int(max_reconnects))
        self.max_sessions = max(1, int(max_sessions))
        self.connect_timeout = connect_timeout
        self.connects = 0
        self.commands = 0
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._sessions: asyncio.Semaphore | None = None

    @classmethod
    def shared(cls, *, host: str, port: int = 22, username: str | None = None, key_file: str | None = None,
               host_key: str | None = None, verify_host_key: bool = True) -> AsyncSSHRunner:
        """The process-wide runner of ``(host, port, username)``; created on first use.

        A later call with different key or verification settings updates the runner (the next
        connection uses them); the open connection is dropped when verification settings change.
        """
        key = (host, int(port or 22), username or "")
        runner = cls._shared.get(key)
        if runner is None:
            runner = cls(host, port, username, key_file, host_key, verify_host_key)
            cls._shared[key] = runner
            return runner
        pin = host_key.strip() if host_key else None
        if (runner.key_file, runner.host_key, runner.verify_host_key) != (key_file, pin, bool(verify_host_key)):
            runner.key_file, runner.host_key, runner.verify_host_key = key_file, pin, bool(verify_host_key)
            runner._drop()
        return runner

    @classmethod
    def reset_shared(cls) -> None:
        """Forget every shared runner (tests; a triggerer never needs this)."""
        for runner in cls._shared.values():
            runner._drop()
        cls._shared.clear()

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    # -- connection
    def _bind_loop(self) -> None:
        """Locks, semaphore and connection belong to one event loop; a new loop starts afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._conn = None  # a connection of a previous (closed) loop cannot be used here
            self._loop = loop
            self._lock = asyncio.Lock()
            self._sessions = asyncio.Semaphore(self.max_sessions)

    def _known_hosts(self) -> Any:
        import asyncssh

        if not self.verify_host_key:
            return None
        if self.host_key:
            parts = self.host_key.split()
            if len(parts) < 2:
                msg = (f"the pinned host key for {self.host}:{self.port} is malformed: expected "
                       "'<type> <base64>' (e.g. 'ssh-ed25519 AAAA...')")
                raise HostKeyError(msg)
            entry = " ".join(parts[:2])
            return asyncssh.import_known_hosts(f"[{self.host}]:{self.port} {entry}\n{self.host} {entry}\n")
        return ()  # asyncssh default: ~/.ssh/known_hosts if readable, else nothing is trusted

    def _drop(self, failed: Any = None) -> None:
        """Forget (abort) the connection; with ``failed``, only if it is still the current one."""
        if failed is not None and self._conn is not failed:
            return  # another command already replaced the broken connection
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.abort()
            except Exception as err:  # noqa: BLE001 - the loop of a stale connection may be gone
                log.debug("aborting a stale SSH connection to %s: %s", self.where, err)

    async def _connection(self) -> Any:
        import asyncssh

        assert self._lock is not None
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            if not self.verify_host_key:
                _unverified_warning(self.where)
            options: dict[str, Any] = {
                "port": self.port, "username": self.username, "known_hosts": self._known_hosts(),
                "config": None, "agent_path": None, "password": None, "preferred_auth": "publickey",
                "keepalive_interval": 15, "keepalive_count_max": 3, "login_timeout": self.connect_timeout,
            }
            if self.key_file:
                options["client_keys"] = [self.key_file]
            try:
                conn = await asyncio.wait_for(asyncssh.connect(self.host, **options), self.connect_timeout)
            except asyncssh.HostKeyNotVerifiable:
                if self.host_key:
                    msg = (f"SSH host key of {self.where} does not match the key pinned in the connection's "
                           "host_key extra; refusing to connect (not retried)")
                else:
                    msg = (f"SSH host key of {self.where} is unknown (no host_key pinned in the connection and "
                           "not in known_hosts); refusing to connect (not retried)")
                raise HostKeyError(msg) from None
            except asyncssh.PermissionDenied:
                msg = f"SSH login to {self.where} refused: check the connection's login and key_file"
                raise TransportError(msg) from None
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as err:
                msg = f"cannot load the SSH key file {self.key_file!r}: {type(err).__name__}"
                raise TransportError(msg) from None
            self._conn = conn
            self.connects += 1
            log.info("SSH connected to %s (connection %d of this runner)", self.where, self.connects)
            return conn

    # -- commands
    async def run(self, argv: Sequence[str], *, stdin: str | None = None,
                  timeout: float | None = 60) -> CommandResult:
        """Run ``argv`` remotely over the shared connection and wait.

        Parameters
        ----------
        argv : sequence of str
            The command; sent as ``shlex.join(argv)``.
        stdin : str, optional
            Text written to the command's standard input (then closed).
        timeout : float, optional
            Seconds for the command once started; None waits forever.

        Returns
        -------
        CommandResult
            Exit code (-1 when the remote process died of a signal), stdout, stderr.

        Raises
        ------
        HostKeyError
            Host key unknown or wrong (not retried).
        TransportError
            No connection after ``max_reconnects`` attempts, connection lost mid-command, or timeout.
        """
        import asyncssh

        command = remote_command(argv)
        self._bind_loop()
        assert self._sessions is not None
        attempt = 0
        busy = 0
        async with self._sessions:
            while True:
                conn = None
                try:
                    conn = await self._connection()
                    process = await conn.create_process(command, encoding="utf-8", errors="replace")
                except TransportError:
                    raise
                except asyncssh.ChannelOpenError as err:
                    if self._conn is not None and not self._conn.is_closed() and busy < 50:
                        # The server still counts sessions we have closed (MaxSessions): the
                        # connection is fine, wait a moment and open the channel again.
                        busy += 1
                        await asyncio.sleep(0.05 * min(busy, 10))
                        continue
                    error: Exception = err
                except (TimeoutError, asyncssh.Error, OSError) as err:
                    error = err
                else:
                    break
                # Nothing started yet: reconnecting and re-sending is safe.
                if conn is not None:
                    self._drop(conn)
                if attempt >= self.max_reconnects:
                    msg = (f"cannot reach {self.where} over SSH after {attempt + 1} attempt(s): "
                           f"{type(error).__name__}: {error}")
                    raise TransportError(msg) from None
                delay = _backoff(attempt)
                log.warning("SSH to %s failed (%s); reconnecting in %.0f s", self.where, type(error).__name__,
                            delay)
                await asyncio.sleep(delay)
                attempt += 1
            self.commands += 1
            try:
                stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
                # Hold the session slot until the server has closed the channel too.
                await asyncio.wait_for(process.wait_closed(), 10)
            except TimeoutError:
                process.close()
                msg = f"SSH command {argv[0]!r} on {self.where} timed out after {timeout:.0f} s"
                raise TransportError(msg) from None
            except (asyncssh.Error, OSError) as err:
                self._drop(conn)
                msg = (f"SSH connection to {self.where} lost while running {argv[0]!r} (not re-sent): "
                       f"{type(err).__name__}: {err}")
                raise TransportError(msg) from None
        code = process.exit_status
        if code is None or (code == -1 and process.exit_signal is None):
            msg = f"SSH channel to {self.where} closed before {argv[0]!r} reported an exit status (not re-sent)"
            raise TransportError(msg)
        return CommandResult(returncode=int(code), stdout=stdout or "", stderr=stderr or "")

    async def close(self) -> None:
        """Close the connection (the next command reconnects)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                await conn.wait_closed()
            except Exception as err:  # noqa: BLE001 - closing a broken connection
                log.debug("closing the SSH connection to %s: %s", self.where, err)
