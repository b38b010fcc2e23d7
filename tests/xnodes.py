"""Test Xnodes: real sshd nodes on 127.0.0.1, each with a private Nix store and private node state.

Each node is a mount namespace (`unshare -m`) held open by a `sleep infinity` process. Inside it the
node's own directories are bind-mounted over the paths the deploy protocol uses
(docs/deploy-protocol.md): `/nix` (its own store and database), `/etc/nix` (its nix.conf),
`/var/lib/xnode`, `/etc/xnode`, `/var/lib/xnode-test` (stand-in activation log, faults, helper bin
dir) and a tmpfs `/run`. An sshd with its own host key runs inside the namespace (via `nsenter`), so
`nix copy --to ssh://root@127.0.0.1` with the node's NIX_SSHOPTS really lands in that node's store.
Stopping sshd does not end the namespace: detached activations and dead-man timers keep running,
like on a machine whose sshd died.

Nix on the nodes (and the host-side commands run with `NIX_ENV`) is single-user Nix as root with
`build-users-group =` (no nixbld users in a container), `sandbox = false` (no user namespaces for
builds here), `experimental-features = nix-command flakes` and an empty `substituters =`
(no network).

These are not NixOS machines: systems deployed to them are the stand-in closures of
tests/standin.py.
"""

from __future__ import annotations

import atexit
import enum
import json
import os
import shlex
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xnodectl import process
from xnodectl.process import Result

NIX_CONF = (
    "build-users-group =\n"
    "sandbox = false\n"
    "experimental-features = nix-command flakes\n"
    "substituters =\n"
)
# For host-side (operator) nix commands in tests: the same settings as the nodes' nix.conf.
NIX_ENV = {"NIX_CONFIG": NIX_CONF}

HELPER = Path(__file__).resolve().parent.parent / "xnodectl" / "data" / "node" / "xnode-activate"
# Mount points that must exist on the host for the per-node bind mounts (they stay empty there).
MOUNT_POINTS = ("/var/lib/xnode", "/etc/xnode", "/var/lib/xnode-test")
NODE_PATH = "/var/lib/xnode-test/bin:/run/current-system/sw/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Refuses every key while /run/xnode-test/refuse-ssh exists: the REFUSE_SSH fault's stand-in
# activation creates it, so connections opened after that switch fail while open ones live on.
KEYS_CMD = """#!/bin/sh
[ -e /run/xnode-test/refuse-ssh ] && exit 0
[ -f /run/xnode/fanout/keys/root ] && cat /run/xnode/fanout/keys/root
exec cat /var/lib/xnode-test/authorized_keys
"""
# The line above: modules/trust.nix's /run/xnode/fanout/keys/%u (fan-out peers' per-deploy keys).


class Fault(enum.Enum):
    """Faults the stand-in `switch-to-configuration` obeys (file names under faults/)."""

    ACTIVATION_FAILS = "activation-fails"  # exits 1 after printing an error
    ACTIVATION_HANGS = "activation-hangs"  # sleeps forever (until killed)
    ACTIVATION_SLOW = "activation-slow"  # takes 2 s, then succeeds
    BOOT_SLOW = "boot-slow"  # `switch-to-configuration boot` takes 2 s (not used up by test/switch)
    HEALTH_FAILS = "health-fails"  # the health server answers 500
    REFUSE_SSH = "refuse-new-connections"  # after switching, new SSH logins are refused
    # switches (current-system, health server) and THEN exits 4, as NixOS's switch does when units
    # failed to start
    SWITCH_THEN_FAILS = "switch-then-fails"
    BOOT_FAILS = "boot-fails"  # `switch-to-configuration boot` exits 1 (bootloader not updated)


@dataclass(frozen=True)
class OperatorKey:
    """The operator's SSH key (one per pytest session) and its public line."""

    path: Path
    public: str

    @classmethod
    def create(cls, directory: Path) -> OperatorKey:
        path = directory / "operator_ed25519"
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            process.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "xnode-test-operator",
                    "-f",
                    str(path),
                ]
            )
        return cls(path=path, public=path.with_suffix(".pub").read_text().strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _seed_store(cache: Path) -> Path:
    """An empty, initialised Nix store + database, created once and copied for each node."""
    seed = cache / "seed-store"
    if not (seed / "nix" / "var" / "nix" / "db" / "db.sqlite").exists():
        process.run(["nix", "--store", f"local?root={seed}", "store", "ping"], env=NIX_ENV)
        (seed / "nix" / "var" / "nix" / "db" / "reserved").unlink(missing_ok=True)
    return seed / "nix"


@dataclass
class Node:
    """One test Xnode; `host`, `port`, `user`, `key`, `known_hosts` are what an inventory holds."""

    name: str
    workdir: Path
    port: int
    key: Path
    operator_public: str
    host: str = "127.0.0.1"
    user: str = "root"
    health_port: int = field(default_factory=free_port)
    store_size: str | None = None  # e.g. "64m": /nix is a size-limited tmpfs (for fill_store)
    _holder: process.Spawned | None = None
    _sshd: process.Spawned | None = None

    # ---- paths and SSH configuration -------------------------------------------------------
    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def host_key(self) -> str:
        """The pinned host public key, "ssh-ed25519 AAAA..." (as the inventory's host_key)."""
        return " ".join((self.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key}"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def store_uri(self) -> str:
        """For `nix copy --to`; the port and key come from `nix_env()`'s NIX_SSHOPTS."""
        return f"ssh://{self.destination}"

    def ssh_options(self) -> list[str]:
        return [
            "-p", str(self.port), "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh_argv(self, command: str | Sequence[str] | None = None) -> list[str]:
        """`ssh ... root@127.0.0.1 [command]`; a list command is shell-quoted for the remote."""
        argv = ["ssh", *self.ssh_options(), self.destination]
        if command is None:
            return argv
        return [*argv, command if isinstance(command, str) else shlex.join(command)]

    @property
    def nix_sshopts(self) -> str:
        return shlex.join(self.ssh_options())

    def nix_env(self) -> dict[str, str]:
        """Environment for host-side `nix copy --to node.store_uri`."""
        return {**NIX_ENV, "NIX_SSHOPTS": self.nix_sshopts}

    # ---- commands ----------------------------------------------------------------------------
    def run(
        self, command: str | Sequence[str], *, timeout: float = 60, input: str | None = None
    ) -> Result:
        """Run a command on the node over a NEW SSH connection; never raises on a non-zero exit."""
        return process.run(self.ssh_argv(command), check=False, timeout=timeout, input=input)

    def put(self, remote: str, data: str | bytes, mode: str = "0600") -> None:
        """Write `data` to the file `remote` on the node over SSH (what an engine's upload does)."""
        text = data.decode() if isinstance(data, bytes) else data
        quoted = shlex.quote(remote)
        result = self.run(f"umask 077 && cat > {quoted} && chmod {mode} {quoted}", input=text)
        assert result.ok, f"{self.name}: writing {remote} failed: {result.stderr}"

    def local(self, command: str, *, timeout: float = 30) -> Result:
        """Run a shell command in the node's namespace without SSH (works while sshd is down)."""
        assert self._holder is not None, f"{self.name} was destroyed"
        return process.run(
            ["nsenter", "-t", str(self._holder.pid), "-m", "env", "-i", f"PATH={NODE_PATH}",
             "sh", "-c", command],
            check=False, timeout=timeout, env={"NIX_CONFIG": NIX_CONF},
        )  # fmt: skip

    def activate_helper(self, *args: str, timeout: float = 60) -> tuple[int, dict[str, object]]:
        """Run `xnode-activate ARGS` over SSH; (exit code, the one JSON object it printed)."""
        result = self.run(["xnode-activate", *args], timeout=timeout)
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError:
            data = {"error": f"not JSON: {result.stdout!r} stderr: {result.stderr!r}"}
        return result.returncode, data

    # ---- state -------------------------------------------------------------------------------
    def current_system(self) -> str | None:
        """The store path /run/current-system points to (None before the first activation)."""
        out = self.local("readlink /run/current-system").stdout.strip()
        return out or None

    def generation(self) -> int | None:
        """The system profile's generation number (the boot default), None if never set."""
        out = self.local("readlink /nix/var/nix/profiles/system").stdout.strip()
        if not out.startswith("system-") or not out.endswith("-link"):
            return None
        return int(out.removeprefix("system-").removesuffix("-link"))

    def boot_system(self) -> str | None:
        """The store path the boot default (the system profile) resolves to."""
        out = self.local("readlink -f /nix/var/nix/profiles/system").stdout.strip()
        return out if out.startswith("/nix/store/") else None

    def activations(self) -> list[str]:
        """Lines "activating <path> <action>" the stand-in switch-to-configuration logged."""
        log = self.workdir / "xnode-test" / "activations.log"
        return log.read_text().splitlines() if log.exists() else []

    def has_path(self, path: str) -> bool:
        return self.local(f"nix-store --check-validity {shlex.quote(path)}").ok

    def trust_store(self, keys: Sequence[str], substituters: Sequence[str] = ()) -> None:
        """The node's nix.conf as modules/trust.nix makes it: require-sigs, only `keys` trusted
        (no key at all when empty: nothing from peers or caches is accepted), `substituters`."""
        (self.workdir / "etc-nix" / "nix.conf").write_text(
            NIX_CONF.replace("substituters =\n", f"substituters = {' '.join(substituters)}\n")
            + "require-sigs = true\n"
            + f"trusted-public-keys = {' '.join(keys)}\n"
        )

    def signatures(self, path: str) -> list[str]:
        """The signatures the node's store holds for `path`."""
        out = self.local(f"nix path-info --json --sigs {shlex.quote(path)}").stdout
        data = json.loads(out or "[]")
        entries = data if isinstance(data, list) else list(data.values())
        return [s for entry in entries if entry for s in entry.get("signatures", [])]

    # ---- faults ------------------------------------------------------------------------------
    def set_fault(self, fault: Fault | str, system: str | None = None) -> None:
        """Arm a fault for the next `test`/`switch` activation (of `system` only, if given).

        A fault is one-shot: the activation that obeys it removes it, so the rollback that follows
        behaves. Fault.REFUSE_SSH stays in effect until the next activation without it.
        """
        name = fault.value if isinstance(fault, Fault) else Fault(fault).value
        faults = self.workdir / "xnode-test" / "faults"
        faults.mkdir(exist_ok=True)
        (faults / name).write_text(system or "")

    def clear_faults(self) -> None:
        shutil.rmtree(self.workdir / "xnode-test" / "faults", ignore_errors=True)
        self.local("rm -f /run/xnode-test/refuse-ssh")

    def fill_store(self, leave_bytes: int = 512 * 1024) -> int:
        """Fill the node's /nix filesystem to `leave_bytes` free; returns the bytes left free.

        Needs a node made with store_size (a tmpfs /nix), so the host's disk is never filled.
        """
        assert self.store_size, "fill_store needs a node started with store_size='64m' or similar"
        avail = int(self.local("df -B1 --output=avail /nix | tail -n1").stdout.strip())
        fill = max(avail - leave_bytes, 0)
        self.local(f"head -c {fill} /dev/zero > /nix/.fill")
        return int(self.local("df -B1 --output=avail /nix | tail -n1").stdout.strip())

    def unfill_store(self) -> None:
        self.local("rm -f /nix/.fill")

    # ---- lifecycle ---------------------------------------------------------------------------
    def create(self, seed: Path) -> None:
        """Lay out the node's directories, keys and sshd config, and enter its namespace."""
        w = self.workdir
        for sub in ("etc-nix", "xnode", "etc-xnode", "xnode-test/bin"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        (w / "etc-nix" / "nix.conf").write_text(NIX_CONF)
        (w / "etc-xnode" / "node-name").write_text(self.name + "\n")
        (w / "xnode-test" / "health-port").write_text(f"{self.health_port}\n")
        (w / "xnode-test" / "authorized_keys").write_text(self.operator_public + "\n")
        keys_cmd = w / "xnode-test" / "authorized-keys-command"
        keys_cmd.write_text(KEYS_CMD)
        keys_cmd.chmod(0o755)
        self.install_helper()
        if not self.store_size:
            shutil.copytree(seed, w / "nix", symlinks=True)
        process.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                self.name,
                "-f",
                str(w / "ssh_host_ed25519_key"),
            ]
        )
        self.known_hosts.write_text(self.known_hosts_line + "\n")
        (w / "sshd_config").write_text(self._sshd_config())
        # sshd checks that every directory above AuthorizedKeysCommand is not group/world-writable.
        for directory in (w, w / "xnode-test"):
            directory.chmod(0o755)
        self._enter_namespace(seed)

    def _sshd_config(self) -> str:
        return (
            f"ListenAddress {self.host}:{self.port}\n"
            f"HostKey {self.workdir}/ssh_host_ed25519_key\n"
            "PidFile /var/lib/xnode-test/sshd.pid\n"
            "AuthorizedKeysFile none\n"
            "AuthorizedKeysCommand /var/lib/xnode-test/authorized-keys-command\n"
            "AuthorizedKeysCommandUser root\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "MaxStartups 100:30:200\nMaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv PATH={NODE_PATH}\n"
        )

    def _enter_namespace(self, seed: Path) -> None:
        w = self.workdir
        store = (f"mount -t tmpfs -o size={self.store_size},mode=0755 tmpfs /nix && "
                 f"cp -a {shlex.quote(str(seed))}/. /nix/" if self.store_size
                 else f"mount --bind {w}/nix /nix")  # fmt: skip
        script = " && ".join([
            store,
            f"mount --bind {w}/etc-nix /etc/nix",
            f"mount --bind {w}/xnode /var/lib/xnode",
            f"mount --bind {w}/etc-xnode /etc/xnode",
            f"mount --bind {w}/xnode-test /var/lib/xnode-test",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            # sshd's bash sources root's ~/.bashrc for every session; this machine's (pyenv init)
            # would cost every SSH command ~0.1 CPU-s that no Xnode pays: the node sees it empty.
            "{ [ ! -f /root/.bashrc ] || mount --bind /dev/null /root/.bashrc; }",
            "mkdir -p /run/sshd /run/xnode-test",
            f"touch {w}/namespace-ready",
            "exec sleep infinity",
        ])  # fmt: skip
        for point in MOUNT_POINTS:
            Path(point).mkdir(parents=True, exist_ok=True)
        ready = w / "namespace-ready"
        ready.unlink(missing_ok=True)
        self._holder = process.spawn(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script], new_session=True
        )
        _wait_for(ready.exists, 5, f"{self.name}: namespace did not come up")

    def install_helper(self, source: Path = HELPER) -> None:
        """Put xnode-activate on the node's PATH (/var/lib/xnode-test/bin), as the module would."""
        if source.exists():
            target = self.workdir / "xnode-test" / "bin" / "xnode-activate"
            shutil.copyfile(source, target)
            target.chmod(0o755)

    def start(self) -> None:
        """Start sshd inside the namespace and wait until it accepts connections."""
        assert self._holder is not None, f"{self.name} was destroyed"
        if self.is_up:
            return
        self._sshd = process.spawn(
            ["nsenter", "-t", str(self._holder.pid), "-m",
             "/usr/sbin/sshd", "-D", "-e", "-f", str(self.workdir / "sshd_config")],
            new_session=True,
        )  # fmt: skip
        _wait_for(self._accepts, 5, f"{self.name}: sshd did not start on port {self.port}")

    def first_start(self, attempts: int = 3) -> None:
        """Start a new node; if its port was taken meanwhile (parallel test runs), take another."""
        for attempt in range(attempts):
            try:
                self.start()
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                (self.workdir / "sshd_config").write_text(self._sshd_config())
                self.known_hosts.write_text(self.known_hosts_line + "\n")
            else:
                return

    @property
    def is_up(self) -> bool:
        return self._sshd is not None and self._sshd.poll() is None

    def _accepts(self) -> bool:
        # sshd writes its PidFile once it listens; a connect() alone could reach another
        # program that grabbed the port (parallel test runs).
        assert self._sshd is not None
        if self._sshd.poll() is not None:
            raise RuntimeError(f"{self.name}: sshd exited with {self._sshd.returncode}")
        pidfile = self.workdir / "xnode-test" / "sshd.pid"
        return pidfile.exists() and pidfile.read_text().strip() == str(self._sshd.pid)

    def stop(self) -> None:
        """Kill sshd and its sessions: the node is down; its namespace (and activations) live on."""
        if self._sshd is None:
            return
        (self.workdir / "xnode-test" / "sshd.pid").unlink(missing_ok=True)
        for pid in self._sshd_pids():
            _signal(pid, signal.SIGKILL)
        self._sshd.wait()
        self._sshd = None

    def freeze(self) -> None:
        """kill -STOP sshd and its sessions: the node hangs (TCP connects, nothing answers)."""
        for pid in self._sshd_pids():
            _signal(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._sshd_pids():
            _signal(pid, signal.SIGCONT)

    def kill_sessions(self) -> None:
        """Kill every SSH session's sshd process, keeping the listener: 'the connection died'.

        The commands those sessions ran are left alone, as when a network link drops: they see
        their pipes close (EOF, SIGPIPE) and must cope.
        """
        assert self._sshd is not None
        for pid in self._sshd_pids():
            if pid != self._sshd.pid and _comm(pid) == "sshd":
                _signal(pid, signal.SIGKILL)

    def _sshd_pids(self) -> list[int]:
        if self._sshd is None:
            return []
        return [self._sshd.pid, *_descendants(self._sshd.pid)]

    def reboot(self) -> None:
        """Power-cycle: every process dies, /run empties, the boot default comes up, sshd starts.

        The boot default (the system profile) is activated like NixOS stage 2 would, logged as
        "activating <path> boot-up".
        """
        self.thaw()
        for pid in self.namespace_pids():
            _signal(pid, signal.SIGKILL)
        if self._sshd is not None:
            self._sshd.wait()
            self._sshd = None
        self.local("rm -rf /run/* && mkdir -p /run/sshd /run/xnode-test")
        boot = self.boot_system()
        if boot:
            self.local(f"XNODE_TEST_BOOTING=1 {boot}/bin/switch-to-configuration test")
        self.start()

    def namespace_pids(self) -> list[int]:
        """Every process in the node's mount namespace except the holder."""
        if self._holder is None:
            return []
        mine = _mnt_ns(self._holder.pid)
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self._holder.pid:
                if mine is not None and _mnt_ns(int(entry.name)) == mine:
                    pids.append(int(entry.name))
        return pids

    def namespace_commands(self) -> list[str]:
        """Command lines (space-joined) of every process in the node's namespace but the holder."""
        found = []
        for pid in self.namespace_pids():
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # exited meanwhile
            found.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
        return found

    def reset(self) -> None:
        """Back to a clean node that keeps its store (and its nix.conf, keys): no system profile,
        deploy state, node facts beyond its name, activations, faults or extra processes."""
        self.thaw()
        for pid in self.namespace_pids():
            if self._sshd is None or pid not in self._sshd_pids():
                _signal(pid, signal.SIGKILL)
        self.clear_faults()
        self.unfill_store()
        self.local(
            "rm -rf /var/lib/xnode/* /run/current-system /run/xnode-test/* "
            "/nix/var/nix/profiles/system /nix/var/nix/profiles/system-*-link "
            "/var/lib/xnode-test/activations.log /var/lib/xnode-test/verifier-calls "
            "/var/lib/xnode-test/accept /etc/xnode/*"
        )
        (self.workdir / "etc-xnode" / "node-name").write_text(self.name + "\n")
        self.install_helper()
        self.start()

    def destroy(self) -> None:
        """Stop sshd and every process in the namespace; the namespace goes with the last one."""
        self.thaw()
        for pid in self.namespace_pids():
            _signal(pid, signal.SIGKILL)
        for handle in (self._sshd, self._holder):
            if handle is not None:
                _signal(handle.pid, signal.SIGKILL)
                handle.wait()
        self._sshd = self._holder = None


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _mnt_ns(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/ns/mnt").readlink())
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_for(check: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.01)


class Fleet:
    """Creates and tracks test Xnodes under one directory; `destroy()` ends them all."""

    def __init__(self, directory: Path, key: OperatorKey | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = key or OperatorKey.create(directory / "operator")
        self.seed = _seed_store(directory)
        self.nodes: list[Node] = []
        self._made = 0
        # Scripts (benchmarks) that crash before destroy() must not leave nodes running.
        atexit.register(self.destroy)

    def new(
        self,
        name: str | None = None,
        *,
        store_size: str | None = None,
        start: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> Node:
        self._made += 1
        name = name or f"n{self._made}"
        if any(node.name == name for node in self.nodes):
            raise ValueError(f"a test Xnode named {name} exists already")
        node = Node(
            name=name,
            workdir=self.directory / name,
            port=port or free_port(),
            key=self.key.path,
            operator_public=self.key.public,
            store_size=store_size,
            host=host,
        )
        node.create(self.seed)
        self.nodes.append(node)
        if start:
            node.first_start()
        return node

    def known_hosts(self) -> Path:
        """One known_hosts file pinning every node of this fleet (for fleet-wide ssh/nix copy)."""
        path = self.directory / "known_hosts"
        path.write_text("".join(node.known_hosts_line + "\n" for node in self.nodes))
        return path

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()
        self.nodes.clear()
