"""SSH command runners against a real private sshd (fixture ``sshd``): values, host keys, sharing, reconnects."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.ssh

pytest.importorskip("asyncssh")
pytest.importorskip("airflow.providers.ssh")

from cosmodm_ops.batch.base import TransportError
from cosmodm_ops.batch.ssh import AsyncSSHRunner, HostKeyError, SSHRunner

# Another server's ed25519 key: a well-formed pin that is not the fixture's.
WRONG_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtrtT3k7o1g3v3g5uFz8r0g8pUj6c1m2xHqzq6q5cWb"

HOSTILE = ["$(touch {marker})", ";", "touch", "{marker}", "`touch {marker}`", "a b", "'\"", "&&", "|", "*"]


@pytest.fixture
def conn_id(sshd, monkeypatch, tmp_path):
    """An Airflow connection (env var) for the fixture sshd, and a HOME without known_hosts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_COSMODM_TEST_SSH", sshd.airflow_conn_json())
    return "cosmodm_test_ssh"


@pytest.fixture
def shared_reset():
    AsyncSSHRunner.reset_shared()
    yield
    AsyncSSHRunner.reset_shared()


def _secret(sshd) -> str:
    """The private key's base64 body: it must never show up in messages or logs."""
    lines = Path(sshd.key_file).read_text().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))[:40]


def _hostile(tmp_path: Path) -> tuple[list[str], Path]:
    marker = tmp_path / "pwned"
    return [a.format(marker=marker) for a in HOSTILE], marker


def _async(sshd, **kw) -> AsyncSSHRunner:
    opts = {"host": sshd.host, "port": sshd.port, "username": sshd.user, "key_file": sshd.key_file,
            "host_key": sshd.host_key, "verify_host_key": True}
    opts.update(kw)
    return AsyncSSHRunner.shared(**opts)


# --------------------------------------------------------------------------- blocking runner
def test_sync_runs_command_with_stdin_and_exit_codes(sshd, conn_id):
    with SSHRunner.from_airflow_connection(conn_id) as runner:
        who = runner.run(["id", "-un"])
        assert (who.returncode, who.stdout.strip()) == (0, sshd.user)
        payload = "".join(f"line {i}\n" for i in range(5000))  # 50 kB through stdin
        digest = runner.run(["sha256sum"], stdin=payload)
        assert digest.stdout.split()[0] == hashlib.sha256(payload.encode()).hexdigest()
        bad = runner.run(["bash", "-c", "echo oops >&2; exit 42"])
        assert (bad.returncode, bad.stdout, bad.stderr) == (42, "", "oops\n")
        assert runner.connects == 1 and runner.commands == 3


def test_sync_hostile_arguments_arrive_literally(conn_id, tmp_path):
    argv, marker = _hostile(tmp_path)
    with SSHRunner.from_airflow_connection(conn_id) as runner:
        res = runner.run(["printf", "%s\\n", *argv])
    assert res.returncode == 0
    assert res.stdout.splitlines() == argv
    assert not marker.exists()


def test_sync_timeout_is_a_transport_error(conn_id):
    with SSHRunner.from_airflow_connection(conn_id) as runner, pytest.raises(TransportError, match="timed out"):
        runner.run(["sleep", "5"], timeout=0.5)


def test_sync_reconnects_after_sshd_restart(sshd, conn_id):
    runner = SSHRunner.from_airflow_connection(conn_id)
    try:
        assert runner.run(["echo", "a"]).stdout == "a\n"
        sshd.restart()  # the open session dies with the server
        assert runner.run(["echo", "b"]).stdout == "b\n"
    finally:
        sshd.start()
        runner.close()
    assert runner.connects == 2


def test_sync_wrong_host_key_refused(sshd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    conn = sshd.airflow_conn()
    conn["extra"]["host_key"] = WRONG_KEY
    import json

    monkeypatch.setenv("AIRFLOW_CONN_WRONG_KEY", json.dumps(conn))
    before = sshd.logins()
    runner = SSHRunner.from_airflow_connection("wrong_key")
    with pytest.raises(HostKeyError, match="does not match") as err:
        runner.run(["true"])
    assert sshd.logins() == before
    assert _secret(sshd) not in str(err.value)
    assert runner.connects == 0


def test_sync_unknown_host_key_refused(sshd, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts
    monkeypatch.setenv("AIRFLOW_CONN_NO_PIN", sshd.airflow_conn_json(verify=False))
    with pytest.raises(HostKeyError, match="unknown"):
        SSHRunner.from_airflow_connection("no_pin").run(["true"])


def test_sync_verification_off_warns_on_each_connection(sshd, conn_id, caplog):
    caplog.set_level(logging.WARNING, logger="cosmodm_ops.batch.ssh")
    runner = SSHRunner.from_airflow_connection(conn_id, verify_host_key=False)
    assert runner.run(["true"]).returncode == 0
    runner.close()
    assert runner.run(["true"]).returncode == 0
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 2
    assert all(_secret(sshd) not in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- asyncio runner
def test_async_runs_command_with_stdin_and_exit_codes(sshd, shared_reset, tmp_path):
    argv, marker = _hostile(tmp_path)

    async def main():
        runner = _async(sshd)
        who = await runner.run(["id", "-un"])
        piped = await runner.run(["wc", "-c"], stdin="x" * 100_000)
        bad = await runner.run(["bash", "-c", "echo oops >&2; exit 65"])
        lit = await runner.run(["printf", "%s\\n", *argv])
        await runner.close()
        return who, piped, bad, lit

    who, piped, bad, lit = asyncio.run(main())
    assert (who.returncode, who.stdout.strip()) == (0, sshd.user)
    assert piped.stdout.strip() == "100000"
    assert (bad.returncode, bad.stderr) == (65, "oops\n")
    assert lit.stdout.splitlines() == argv and not marker.exists()


@pytest.mark.parametrize("pin", [WRONG_KEY, None], ids=["wrong", "unknown"])
def test_async_bad_host_key_refused_without_retry(sshd, shared_reset, monkeypatch, tmp_path, pin):
    monkeypatch.setenv("HOME", str(tmp_path))
    before = sshd.logins()
    runner = _async(sshd, host_key=pin)

    async def main():
        await runner.run(["true"])

    with pytest.raises(HostKeyError, match="does not match" if pin else "unknown") as err:
        asyncio.run(main())
    assert "not retried" in str(err.value) and _secret(sshd) not in str(err.value)
    assert (runner.connects, sshd.logins()) == (0, before)


def test_async_verification_off_warns(sshd, shared_reset, caplog):
    caplog.set_level(logging.WARNING, logger="cosmodm_ops.batch.ssh")
    runner = _async(sshd, host_key=None, verify_host_key=False)
    res = asyncio.run(runner.run(["echo", "ok"]))
    assert res.stdout == "ok\n"
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)


def test_async_many_concurrent_calls_share_one_connection(sshd, shared_reset):
    before = sshd.logins()
    n = 60

    async def main():
        runners = [_async(sshd) for _ in range(n)]  # as many triggers would ask for it
        assert all(r is runners[0] for r in runners)
        results = await asyncio.gather(*[r.run(["echo", str(i)]) for i, r in enumerate(runners)])
        await runners[0].close()
        return runners[0], results

    runner, results = asyncio.run(main())
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(n)]
    assert runner.connects == 1 and runner.commands == n
    assert sshd.logins() - before == 1  # sshd saw exactly one login for 60 commands


def test_async_reconnects_after_sshd_restart(sshd, shared_reset):
    async def main():
        runner = _async(sshd)
        first = await runner.run(["echo", "before"])
        sshd.stop()  # the listener and the open session die
        pending = asyncio.create_task(runner.run(["echo", "after"]))
        await asyncio.sleep(1.5)
        assert not pending.done()  # waiting in its bounded reconnect loop
        await asyncio.to_thread(sshd.start)
        second = await pending
        await runner.close()
        return runner, first, second

    try:
        runner, first, second = asyncio.run(main())
    finally:
        sshd.start()  # a no-op when running
    assert (first.stdout, second.stdout) == ("before\n", "after\n")
    assert runner.connects == 2


def test_async_gives_up_after_bounded_reconnects(sshd, shared_reset):
    runner = AsyncSSHRunner(sshd.host, sshd.port, sshd.user, sshd.key_file, sshd.host_key, max_reconnects=1)
    sshd.stop()
    try:
        with pytest.raises(TransportError, match="after 2 attempt"):
            asyncio.run(runner.run(["true"]))
    finally:
        sshd.start()


def test_openssh_client_agrees_with_fixture(sshd):
    """The fixture's pinned host key is the one the real OpenSSH client sees."""
    res = subprocess.run(sshd.ssh_argv("echo", "hi"), capture_output=True, text=True, timeout=30, check=False)
    assert (res.returncode, res.stdout) == (0, "hi\n")
