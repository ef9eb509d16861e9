"""Command runners on this machine: blocking (:class:`LocalRunner`) and asyncio (:class:`AsyncLocalRunner`).

Both take argument lists (never a shell string), never raise for a non-zero exit, and raise
:class:`~cosmodm_ops.batch.base.TransportError` only when the command cannot be started
(missing executable, permission denied) or does not finish within ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from cosmodm_ops.batch.base import CommandResult, TransportError

__all__ = ["AsyncLocalRunner", "LocalRunner"]


def _argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes):
        msg = f"commands are argument lists, not strings: got {argv!r}"
        raise TypeError(msg)
    out = [str(a) for a in argv]
    if not out:
        msg = "empty command"
        raise ValueError(msg)
    return out


class LocalRunner:
    """Run commands here with :mod:`subprocess`.

    Parameters
    ----------
    env : mapping, optional
        Extra environment variables for every command (added to the current environment).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    def _environ(self) -> dict[str, str] | None:
        return {**os.environ, **self.env} if self.env else None

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = 60) -> CommandResult:
        """Run ``argv`` and wait for it.

        Returns
        -------
        CommandResult
            Exit code, stdout and stderr (text, undecodable bytes replaced).

        Raises
        ------
        TransportError
            The command cannot be started, or ran longer than ``timeout`` seconds (then its
            process group is killed).
        """
        args = _argv(argv)
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._environ(), start_new_session=True,
            )
        except OSError as err:
            msg = f"cannot run {args[0]!r}: {err.strerror or err}"
            raise TransportError(msg) from err
        try:
            out, err_b = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            _kill_group(proc.pid)
            proc.communicate()
            msg = f"{args[0]!r} did not finish within {timeout} s (killed)"
            raise TransportError(msg) from err
        return CommandResult(proc.returncode, out.decode(errors="replace"), err_b.decode(errors="replace"))


class AsyncLocalRunner:
    """The asyncio twin of :class:`LocalRunner` (for triggers)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    async def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = 60) -> CommandResult:
        """Run ``argv`` without blocking the event loop; see :meth:`LocalRunner.run`."""
        args = _argv(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env} if self.env else None, start_new_session=True,
            )
        except OSError as err:
            msg = f"cannot run {args[0]!r}: {err.strerror or err}"
            raise TransportError(msg) from err
        try:
            out, err_b = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout)
        except TimeoutError as err:
            _kill_group(proc.pid)
            await proc.wait()
            msg = f"{args[0]!r} did not finish within {timeout} s (killed)"
            raise TransportError(msg) from err
        assert proc.returncode is not None
        return CommandResult(proc.returncode, out.decode(errors="replace"), err_b.decode(errors="replace"))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
