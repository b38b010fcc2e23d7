"""xnodectl.remote: the one SSH configuration (exact argv), host-key pinning, error classification.
The runner is patched as seen from the module; test_deploy_nodes.py covers real sshd nodes."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from xnodectl import process, remote, sshkeys
from xnodectl.errors import UsageError
from xnodectl.process import Result

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def session() -> Any:
    s = remote.Session()
    yield s
    s.close()


def test_known_hosts_is_pinned_and_options_are_strict(session: remote.Session) -> None:
    ssh = session.ssh(remote.Target("n1", "10.0.0.5", 2222, "root", KEY))
    assert ssh.known_hosts.read_text() == f"xnode-n1 {KEY}\n"
    opts = ssh.options()
    pairs = dict(zip(opts[::2], opts[1::2], strict=True))
    assert pairs["-p"] == "2222"
    joined = " ".join(opts)
    for want in (
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "HostKeyAlias=xnode-n1",
        f"UserKnownHostsFile={ssh.known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "ControlMaster=auto",
        f"ControlPath={ssh.control}",
    ):
        assert want in joined
    fresh = " ".join(ssh.options(fresh=True))
    assert "ControlMaster=no" in fresh and "ControlPath=none" in fresh
    assert "ControlMaster=auto" not in fresh
    assert ssh.sshopts() == joined  # nix copy uses exactly the same configuration


def _kex(argv: list[str]) -> list[str]:
    return [o for o in argv if o.startswith("KexAlgorithms")]


@pytest.mark.parametrize("aes", [True, False])
def test_algorithms_secret_free_connections_prefer_cheap_kex(
    monkeypatch: pytest.MonkeyPatch, session: remote.Session, aes: bool
) -> None:
    """A node whose deploy uploads no secret: its master (helper commands, public store paths)
    and its fresh connections put ML-KEM / curve25519 first; the master puts AES-GCM first on
    AES hardware, a fresh connection keeps the default ciphers."""
    monkeypatch.setattr(remote, "_cpu_has_aes", lambda: aes)
    ssh = session.ssh(remote.Target("n1", "10.0.0.5", 22, "root", KEY))
    master, fresh = ssh.options(), ssh.options(fresh=True)
    assert _kex(master) == _kex(fresh) == [remote.fresh_kex()]
    assert ("Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com" in master) is aes
    assert not any(o.startswith("Ciphers") for o in fresh)


def test_a_secret_never_travels_without_the_post_quantum_default(session: remote.Session) -> None:
    """A long-lived secret goes over a connection with OpenSSH's default (post-quantum hybrid)
    key exchange: the master of a node whose deploy carries secrets, else a connection of its
    own; everything else of a secret-carrying node shares that master."""
    plain = session.ssh(remote.Target("n1", "10.0.0.5", 22, "root", KEY))
    private = session.ssh(remote.Target("n2", "10.0.0.6", 22, "root", KEY), carries_secrets=True)
    secret_over_plain = plain.argv(["cat"], secret=True)
    assert _kex(secret_over_plain) == [] and "ControlPath=none" in secret_over_plain
    assert _kex(plain.argv(["true"])) == [remote.fresh_kex()]
    for argv in (private.argv(["cat"], secret=True), private.argv(["true"])):
        assert _kex(argv) == [] and f"ControlPath={private.control}" in argv
    assert _kex(private.sshopts().split()) == []  # nix copy shares the post-quantum master
    assert _kex(private.argv(["true"], fresh=True)) == [remote.fresh_kex()]


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ("curve25519-sha256\nsntrup761x25519-sha512\n",
         "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org"),
        ("mlkem768x25519-sha256\ncurve25519-sha256\n",
         "KexAlgorithms=^mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org"),
    ],
)  # fmt: skip
def test_fresh_kex_prefers_ml_kem_where_the_client_has_it(
    monkeypatch: pytest.MonkeyPatch, offered: str, expected: str
) -> None:
    def fake(argv: list[str], **kw: Any) -> Result:
        assert argv == ["ssh", "-Q", "kex"]
        return Result(tuple(argv), 0, offered, "", 0.0)

    monkeypatch.setattr("xnodectl.remote.process.run", fake)
    remote.fresh_kex.cache_clear()
    try:
        assert remote.fresh_kex() == expected
    finally:
        remote.fresh_kex.cache_clear()


def test_fresh_kex_is_accepted_by_this_ssh() -> None:
    result = process.run(["ssh", "-G", "-o", remote.fresh_kex(), "xnode-n1"], check=False)
    assert result.ok, result.stderr
    kex = next(line for line in result.stdout.splitlines() if line.startswith("kexalgorithms "))
    assert kex.split()[1].split(",")[0] in ("curve25519-sha256", remote.MLKEM)


@pytest.mark.parametrize(
    ("cpuinfo", "aes"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 aes avx2 sha_ni\n", True),  # x86
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nflags\t\t: aes\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n", True),  # ARMv8
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
        ("model name\t: aes-less cpu\n", False),  # no flags line: unknown
    ],
)  # fmt: skip
def test_cpu_aes_detection(tmp_path: Path, cpuinfo: str, aes: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert remote._cpu_has_aes(path) is aes
    assert remote._cpu_has_aes(tmp_path / "missing") is False


def test_missing_host_key_is_refused(session: remote.Session) -> None:
    with pytest.raises(remote.HostKeyMissing) as info:
        session.ssh(remote.Target("n1", "10.0.0.5"))
    assert "n1" in info.value.message and "--scan" in (info.value.hint or "")


def test_run_quotes_remote_args(monkeypatch: pytest.MonkeyPatch, session: remote.Session) -> None:
    calls: list[list[str]] = []

    async def fake(argv: list[str], **kw: Any) -> Result:
        calls.append(list(argv))
        return Result(tuple(argv), 0, "ok", "", 0.0)

    monkeypatch.setattr("xnodectl.remote.process.arun", fake)
    ssh = session.ssh(remote.Target("n1", "h", 22, "root", KEY))
    asyncio.run(ssh.run(["echo", "a b; rm -rf /"], timeout=5))
    argv = calls[0]
    assert argv[0] == "ssh" and argv[-3:] == ["--", "root@h", "echo 'a b; rm -rf /'"]
    assert shlex.split(argv[-1]) == ["echo", "a b; rm -rf /"]


@pytest.mark.parametrize(("stderr", "kind"), [
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", remote.HostKeyMismatch),
    ("Host key verification failed.", remote.HostKeyMismatch),
    ("ssh: connect to host h port 22: Connection refused", remote.Unreachable),
])  # fmt: skip
def test_ssh_errors_name_the_node(
    monkeypatch: pytest.MonkeyPatch, session: remote.Session, stderr: str, kind: type[Exception]
) -> None:
    async def fake(argv: list[str], **kw: Any) -> Result:
        return Result(tuple(argv), 255, "", stderr, 0.0)

    monkeypatch.setattr("xnodectl.remote.process.arun", fake)
    ssh = session.ssh(remote.Target("edge-7", "h", 22, "root", KEY))
    with pytest.raises(kind) as info:
        asyncio.run(ssh.run(["true"], timeout=5))
    assert "edge-7" in str(info.value)


def _ssh_g(argv: list[str]) -> dict[str, str]:
    """What ssh would do with this argv (`ssh -G` prints the resolved configuration, no connect)."""
    result = process.run([argv[0], "-G", *argv[1:]], check=False, timeout=10)
    pairs = (line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("user", "host"),
    [
        ("-oProxyCommand=touch /tmp/pwned", "10.0.0.5"),
        ("root", "-oProxyCommand=touch /tmp/pwned"),
        ("root -oProxyCommand=x", "h"),
        ("root", "h\n-oProxyCommand=x"),
        ("a@b", "h"),
        ("", "h"),
    ],
)
def test_no_value_becomes_an_ssh_option(user: str, host: str) -> None:
    """Issue 13 item 6: the user used to stand before `--`, so `ssh -G` showed the proxycommand."""
    with pytest.raises(UsageError, match="is not usable"):
        remote.ssh_argv(["-p", "22"], user, host, "true")


def test_destination_follows_double_dash_and_ssh_reads_no_option_after_it(
    session: remote.Session,
) -> None:
    ssh = session.ssh(remote.Target("n1", "10.0.0.5", 2222, "deploy", KEY))
    argv = ssh.argv(["-oProxyCommand=touch /tmp/pwned"], fresh=True)
    assert argv[argv.index("--") + 1] == "deploy@10.0.0.5"
    assert argv.index("--") == len(argv) - 3
    resolved = _ssh_g(argv)
    assert resolved["user"] == "deploy" and resolved["hostname"] == "10.0.0.5"
    assert resolved["port"] == "2222" and "proxycommand" not in resolved


def test_one_keyscan_parser_and_one_fingerprint() -> None:
    output = (
        "# 10.0.0.5:22 SSH-2.0-OpenSSH_9.2\n"
        "10.0.0.5 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n"
        f"10.0.0.5 {KEY}\n"
    )
    assert remote.parse_keyscan(output) == KEY
    assert remote.parse_keyscan("10.0.0.5 ssh-ed25519 not-base64!\n") is None
    assert remote.parse_keyscan("") is None
    printed = process.run(["ssh-keygen", "-l", "-f", "-"], input=KEY + "\n").stdout.split()[1]
    assert remote.fingerprint(KEY) == printed == sshkeys.parse(KEY).fingerprint
    assert remote.fingerprint("garbage") == "?"


def test_one_function_builds_ssh_argv() -> None:
    """Issue 15: remote.ssh_argv is the only place an ssh command line starts."""
    package = Path(remote.__file__).parent
    starts = re.compile(r"""\[\s*["']ssh["']\s*,""")
    found = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if starts.search(path.read_text())
    ]
    assert found == ["remote.py"], found
