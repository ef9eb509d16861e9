"""The asyncio SSH command runner: :class:`AsyncSSHRunner` (asyncssh), one shared connection per login node.

:meth:`AsyncSSHRunner.shared` returns ONE runner per ``(host, port, user)`` in the process, so all the
triggers of a site multiplex their commands as channels of one SSH connection. The security rules and the
reconnection policy are those of :mod:`cosmodm_ops.batch.ssh` (see its docstring); import the runner from
there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from cosmodm_ops.batch._ssh import HostKeyError, backoff, log, remote_command, unverified_warning
from cosmodm_ops.batch.base import CommandResult, TransportError

__all__ = ["AsyncSSHRunner"]


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
                unverified_warning(self.where)
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
    async def _start(self, command: str) -> tuple[Any, Any]:
        """Open a channel running ``command`` on the shared connection: (connection, process).

        The connection is (re-)established up to ``max_reconnects`` times with backoff; that is safe
        because nothing has started yet. A channel the server refuses while the connection is fine
        (it still counts closed sessions against ``MaxSessions``) is asked for again after a moment.
        """
        import asyncssh

        attempt = 0
        busy = 0
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
                return conn, process
            # Nothing started yet: reconnecting and re-sending is safe.
            if conn is not None:
                self._drop(conn)
            if attempt >= self.max_reconnects:
                msg = (f"cannot reach {self.where} over SSH after {attempt + 1} attempt(s): "
                       f"{type(error).__name__}: {error}")
                raise TransportError(msg) from None
            delay = backoff(attempt)
            log.warning("SSH to %s failed (%s); reconnecting in %.0f s", self.where, type(error).__name__,
                        delay)
            await asyncio.sleep(delay)
            attempt += 1

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
        async with self._sessions:
            conn, process = await self._start(command)
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
