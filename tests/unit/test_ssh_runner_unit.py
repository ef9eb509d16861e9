"""SSH runner pieces that need no server: quoting, the shared-runner registry, host key pins."""

from __future__ import annotations

import shlex

import pytest

pytest.importorskip("asyncssh")

from cosmodm_ops.batch.ssh import AsyncSSHRunner, HostKeyError, remote_command


@pytest.fixture(autouse=True)
def _fresh_registry():
    AsyncSSHRunner.reset_shared()
    yield
    AsyncSSHRunner.reset_shared()


def test_remote_command_quotes_every_argument():
    argv = ["printf", "%s\n", "$(touch /tmp/x)", ";", "a b", "'", "`id`", "*"]
    line = remote_command(argv)
    assert shlex.split(line) == argv
    assert line == "printf '%s\n' '$(touch /tmp/x)' ';' 'a b' ''\"'\"'' '`id`' '*'"


@pytest.mark.parametrize("argv", [[], ["echo", "a\x00b"]])
def test_remote_command_refuses_empty_and_nul(argv):
    with pytest.raises(ValueError, match="program name|NUL"):
        remote_command(argv)


def test_shared_runner_is_one_per_host_port_user():
    a = AsyncSSHRunner.shared(host="h", port=2222, username="u", key_file="/k", host_key="ssh-ed25519 AAAA")
    b = AsyncSSHRunner.shared(host="h", port=2222, username="u", key_file="/k", host_key="ssh-ed25519 AAAA")
    c = AsyncSSHRunner.shared(host="h", port=2222, username="other", key_file="/k")
    d = AsyncSSHRunner.shared(host="h", port=22, username="u", key_file="/k")
    assert a is b and a is not c and a is not d and c is not d


def test_shared_runner_takes_new_settings():
    a = AsyncSSHRunner.shared(host="h", port=22, username="u", key_file="/k1", host_key="ssh-ed25519 AAAA")
    b = AsyncSSHRunner.shared(host="h", port=22, username="u", key_file="/k2", host_key=None, verify_host_key=False)
    assert a is b and (b.key_file, b.host_key, b.verify_host_key) == ("/k2", None, False)


def test_malformed_pin_is_a_host_key_error():
    runner = AsyncSSHRunner("h", 22, "u", host_key="AAAAC3NzaC1lZDI1NTE5")
    with pytest.raises(HostKeyError, match="malformed"):
        runner._known_hosts()


def test_pin_trusts_only_that_key_on_host_and_port():
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    runner = AsyncSSHRunner("127.0.0.1", 2200, "u", host_key=key)
    known = runner._known_hosts()
    trusted = asyncssh.match_known_hosts(known, "127.0.0.1", "127.0.0.1", 2200)[0]
    assert {" ".join(k.export_public_key().decode().split()[:2]) for k in trusted} == {" ".join(key.split()[:2])}
    other = asyncssh.match_known_hosts(known, "10.0.0.1", "10.0.0.1", 2200)[0]
    assert other == []
    assert AsyncSSHRunner("127.0.0.1", 2200, "u", verify_host_key=False)._known_hosts() is None
