"""SSH to Xnodes: one configuration for commands AND `nix copy`; host keys pinned.

OpenSSH through the one runner (the same client `nix copy` uses, so both channels see the same
known_hosts, key and multiplexed connection). Host keys are never learned on the fly: a node's
key comes from inventory.toml and a different key is a refusal naming the node.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xnodectl import process, sshkeys
from xnodectl.errors import CommandFailed, ExitCode, ExternalError, UsageError

CONTROL_PERSIST_S = 30
# Algorithm choices (measured side by side by bench/ssh_algorithms.py; figures in docs/deploy.md):
# - A connection that carries a long-lived secret (an app's secret upload) keeps OpenSSH's default
#   key exchange: post-quantum hybrid where the client has one (sntrup761x25519 on OpenSSH 9.2),
#   so a recording of it stays closed to a future quantum computer. A node whose deploy uploads
#   secrets gets such a multiplexed master (`Session.ssh(..., carries_secrets=True)`); a secret
#   sent over any other `Ssh` goes over a connection of its own with the default exchange.
# - Every other connection (helper commands and their JSON replies, public store paths, a
#   deploy-scoped peer key that is retired when the deploy ends) puts ML-KEM first where the
#   client has it (OpenSSH >= 9.9: post-quantum AND cheap), else curve25519: sntrup761's key
#   generation costs the client ~70-100 ms of CPU per connection, curve25519 under 1 ms.
# - The multiplexed master's cipher is AES-GCM when this CPU has AES instructions, where it costs
#   a fraction of chacha20-poly1305's CPU per byte (both are AEAD; without AES instructions the
#   default order is kept).
CURVE25519 = "curve25519-sha256,curve25519-sha256@libssh.org"
FRESH_KEX = f"KexAlgorithms=^{CURVE25519}"
MLKEM = "mlkem768x25519-sha256"
AES_FIRST = "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
# ssh exits 255 on its own errors; the remote command's code otherwise.
SSH_ERROR = 255


# What may stand on either side of the '@' of an ssh destination: no leading '-' (it would be read
# as an option), no whitespace, control characters or '@'. The inventory model holds values to
# the same rules where it reads them (inventory.py); this is the last line before ssh.
_UNSAFE = re.compile(r"^-|[\s\x00-\x1f\x7f@]")


def ssh_argv(options: Sequence[str], user: str, host: str, command: str | None = None) -> list[str]:
    """THE ssh command line: options, `--`, the destination, then the remote command (one shell
    string). After `--` ssh reads no option, so neither a value from inventory.toml nor the remote
    command can become one (`user = "-oProxyCommand=..."` is refused here and in the model)."""
    for what, value in (("user", user), ("host", host)):
        if not value or _UNSAFE.search(value):
            raise UsageError(
                f"ssh {what} {value!r} is not usable",
                hint="a host or user name never starts with '-' nor holds spaces or '@'",
            )
    argv = ["ssh", *options, "--", f"{user}@{host}"]
    return [*argv, command] if command else argv


def pinned_options(port: int, known_hosts: Path, identity: str | Path | None = None) -> list[str]:
    """Options of a one-off ssh that trusts exactly the host key in `known_hosts` (no prompt, no
    global file) and, when given, only the identity `identity`."""
    options = ["-p", str(port), "-o", f"UserKnownHostsFile={known_hosts}"]
    options += ["-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"]
    if identity is not None:
        options += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    return options


class RemoteError(ExternalError):
    """SSH to a node failed (not the remote command)."""


class Unreachable(RemoteError):
    exit_code = ExitCode.UNREACHABLE


class HostKeyMismatch(RemoteError):
    pass


class HostKeyMissing(UsageError):
    pass


@dataclass(frozen=True)
class Target:
    node: str
    host: str
    port: int = 22
    user: str = "root"
    host_key: str | None = None

    @property
    def alias(self) -> str:
        # known_hosts entries are keyed by this alias, so a non-22 port needs no `[host]:port` form
        # and two nodes behind one address keep separate keys.
        return f"xnode-{self.node}"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def store_uri(self) -> str:
        return f"ssh://{self.destination}"


class Session:
    """The per-run home of control sockets and pinned known_hosts files (a short private tmpdir)."""

    def __init__(self, identity: Path | None = None, connect_timeout: int = 5) -> None:
        # /tmp, not $TMPDIR: control socket paths must stay under the 108-byte sun_path limit.
        self.dir = Path(tempfile.mkdtemp(prefix="xn-", dir="/tmp"))
        self.identity = identity
        self.connect_timeout = connect_timeout
        self._post_quantum: dict[str, bool] = {}  # node -> its master's key exchange, once fixed
        self._warming: dict[str, tuple[list[str], process.Spawned]] = {}

    def ssh(self, target: Target, *, carries_secrets: bool = False) -> Ssh:
        """`carries_secrets`: this node's deploy uploads secrets, so its multiplexed master keeps
        the post-quantum default key exchange (see "Algorithm choices" above). The first `ssh`
        of a node fixes its master's exchange for the session; later ones follow it (a secret
        then goes over a connection of its own if the master is not post-quantum)."""
        post_quantum = self._post_quantum.setdefault(target.node, carries_secrets)
        return Ssh(target, self, carries_secrets=post_quantum)

    def warm(self, target: Target, *, carries_secrets: bool = False) -> None:
        """Start opening the node's multiplexed master now, in the background (an ssh running
        `true`), so the handshake overlaps the caller's own work; the node's first command waits
        for it and fails as it would have (`Ssh.run`). Changes nothing on the node. A node
        without a pinned host key is left alone: its own first step reports that."""
        if target.node in self._warming or not target.host_key:
            return
        argv = self.ssh(target, carries_secrets=carries_secrets).argv(["true"])
        self._warming[target.node] = argv, process.spawn(argv, stderr=process.PIPE)

    def warming(self, node: str) -> tuple[list[str], process.Spawned] | None:
        """The node's background master start (once: the first command takes it over)."""
        return self._warming.pop(node, None)

    def close(self) -> None:
        """Stop what this session started and nobody took over: masters still opening or opened
        by `warm` for a node that ran no command (the run ended before it)."""
        for argv, proc in self._warming.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            control = next(o for o in argv if o.startswith("ControlPath="))
            if Path(control.removeprefix("ControlPath=")).exists():
                process.run(
                    ssh_argv(["-o", control, "-O", "exit"], "root", "xnode"), check=False, timeout=5
                )
        self._warming.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class Ssh:
    def __init__(self, target: Target, session: Session, *, carries_secrets: bool = False) -> None:
        if not target.host_key:
            raise HostKeyMissing(
                f"node '{target.node}' has no pinned host key",
                hint=f"pin it: xnodectl node add {target.node} {target.host} --port {target.port}"
                " --scan (check the printed fingerprint) or --host-key 'ssh-ed25519 ...'",
            )
        self.target = target
        self.session = session
        self.known_hosts = session.dir / f"{target.node}.hosts"
        self.known_hosts.write_text(f"{target.alias} {target.host_key.strip()}\n")
        self.control = session.dir / f"{target.node}.sock"
        self.carries_secrets = carries_secrets

    def options(self, *, fresh: bool = False, secret: bool = False) -> list[str]:
        """Options shared by commands and `nix copy`; `fresh` skips the multiplexed one. A fresh
        connection for a `secret` keeps the default (post-quantum) key exchange; the multiplexed
        master keeps it when this node's deploy carries secrets."""
        opts = [
            "-p",
            str(self.target.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            f"HostKeyAlias={self.target.alias}",
            "-o",
            "CheckHostIP=no",
            "-o",
            f"ConnectTimeout={self.session.connect_timeout}",
            # A hung node (sshd stopped, network gone) is noticed in ~6 s instead of never.
            "-o",
            "ServerAliveInterval=2",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
        ]
        if not (secret if fresh else self.carries_secrets):
            opts += ["-o", fresh_kex()]
        if fresh:
            opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        else:
            if _cpu_has_aes():
                opts += ["-o", AES_FIRST]
            opts += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control}",
                "-o",
                f"ControlPersist={CONTROL_PERSIST_S}",
            ]
        if self.session.identity is not None:
            opts += ["-i", str(self.session.identity), "-o", "IdentitiesOnly=yes"]
        return opts

    def sshopts(self) -> str:
        """NIX_SSHOPTS: nix splits it on whitespace, which is why the session dir has no spaces."""
        return " ".join(self.options())

    def argv(
        self, command: Sequence[str], *, fresh: bool = False, secret: bool = False
    ) -> list[str]:
        """`secret`: the command's input is a long-lived secret. It goes over the multiplexed
        master only when that one was opened for secrets, else over a connection of its own."""
        if secret and not self.carries_secrets:
            fresh = True
        options = self.options(fresh=fresh, secret=secret)
        return ssh_argv(options, self.target.user, self.target.host, shlex.join(command))

    async def run(
        self,
        command: Sequence[str],
        *,
        timeout: float,
        input: bytes | None = None,
        fresh: bool = False,
        secret: bool = False,
    ) -> process.Result:
        """Run a command on the node. SSH failures raise; the command's exit is returned.
        `secret`: `input` is a long-lived secret (see `argv`)."""
        if not fresh:
            await self._warmed(timeout)
        try:
            result = await process.arun(
                self.argv(command, fresh=fresh, secret=secret),
                check=False,
                input=input,
                timeout=timeout,
            )
        except CommandFailed as exc:  # timeout: the node is gone or hangs
            raise self._silent(timeout) from exc
        if result.returncode == SSH_ERROR:
            raise self.classify(result.stderr)
        return result

    async def _warmed(self, timeout: float) -> None:
        """Wait for the master `Session.warm` started; its ssh failure is this command's."""
        warming = self.session.warming(self.target.node)
        if warming is None:
            return
        argv, proc = warming
        try:
            result = await process.finish(proc, argv, timeout=timeout)
        except CommandFailed as exc:
            raise self._silent(timeout) from exc
        if result.returncode == SSH_ERROR:
            raise self.classify(result.stderr)

    def _silent(self, timeout: float) -> Unreachable:
        return Unreachable(
            f"node '{self.target.node}' ({self.target.host}:{self.target.port}) "
            f"did not answer within {timeout:g} s",
            hint="is it up and is sshd responding?",
        )

    def classify(self, stderr: str) -> RemoteError:
        """Turn ssh's own failure text into a clear error naming the node."""
        where = f"node '{self.target.node}' ({self.target.host}:{self.target.port})"
        if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
            return HostKeyMismatch(
                f"{where} presented a host key that does not match the pinned one: refusing",
                hint="if the node was reinstalled, re-pin it with: xnodectl node add "
                f"{self.target.node} {self.target.host} --port {self.target.port} --scan",
            )
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh failed"
        return Unreachable(
            f"{where} is unreachable: {last}",
            hint="is it up, and is the address right in inventory.toml?",
        )

    async def close(self) -> None:
        """Stop the multiplexing master (if one was started)."""
        if self.control.exists():
            await process.arun(
                ssh_argv(
                    ["-o", f"ControlPath={self.control}", "-O", "exit"],
                    self.target.user,
                    self.target.host,
                ),
                check=False,
                timeout=5,
            )


@functools.cache
def fresh_kex() -> str:
    """The key exchange preference of fresh connections (see FRESH_KEX): ML-KEM hybrid first when
    this ssh client has it, then curve25519; asked once per run (`ssh -Q kex`, a few ms)."""
    try:
        offered = process.run(["ssh", "-Q", "kex"], check=False, timeout=5).stdout.split()
    except ExternalError:  # no ssh at all: the connection itself will say so
        offered = []
    return f"KexAlgorithms=^{MLKEM},{CURVE25519}" if MLKEM in offered else FRESH_KEX


@functools.cache
def _cpu_has_aes(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> bool:
    """AES instructions on this machine (x86 `flags`, ARMv8 `Features`); False when unknown."""
    try:
        with cpuinfo_path.open(encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:  # the first CPU's line says it for all
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return "aes" in value.split()
    except OSError:
        pass
    return False


def parse_keyscan(output: str, kind: str = "ssh-ed25519") -> str | None:
    """The first `kind` key in ssh-keyscan's output as '<type> <base64>', or None."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#") and parts[1] == kind:
            try:
                key = sshkeys.parse(f"{parts[1]} {parts[2]}", "scanned host key")
            except ValueError:
                continue
            return f"{key.type} {key.blob}"
    return None


def keyscan(host: str, port: int, timeout: int = 5) -> str | None:
    """The node's ed25519 host key, or None when none was offered (sshd not up yet)."""
    result = process.run(
        ["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", "ed25519", "--", host],
        check=False,
        timeout=timeout + 10,
    )
    return parse_keyscan(result.stdout)


def scan_host_key(host: str, port: int, timeout: int = 5) -> str:
    """Fetch a node's ed25519 host key (trust on first use, done explicitly by the operator)."""
    key = keyscan(host, port, timeout)
    if key is None:
        raise RemoteError(
            f"no ed25519 host key from {host}:{port}",
            hint="is sshd running there? or pass --host-key 'ssh-ed25519 ...'",
        )
    return key


def fingerprint(host_key: str) -> str:
    """SHA256 fingerprint as ssh prints it, for the operator to compare out of band."""
    try:
        return sshkeys.parse(host_key, "host key").fingerprint
    except ValueError:
        return "?"
