"""Test Xnodes wired for fan-out runs: each node's operator address is a counting relay
(tests/countproxy.py), its peer address is its real sshd. Shared by the tests and bench/fanout.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.countproxy import CountingProxy
from tests.standin import StandinFlake
from tests.xnodes import NIX_ENV, Node
from xnodectl import inventory as inv
from xnodectl import nix, nixsign, process
from xnodectl.deploy import peers, sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session, Target
from xnodectl.workspace import GITIGNORE

CONFIRM = 3  # --confirm-timeout of the workspaces' deploys


@dataclass
class FanWs:
    """A stand-in workspace over test Xnodes whose operator addresses are counting relays (the
    inventory's port) and whose peer addresses are their real sshd ports (peer_port)."""

    root: Path
    nodes: list[Node]
    flake: StandinFlake
    proxies: dict[str, CountingProxy] = field(default_factory=dict)

    @classmethod
    def create(
        cls, directory: Path, nodes: list[Node], size: int, salt: str, **knobs: Any
    ) -> FanWs:
        names = [x.name for x in nodes]
        flake = StandinFlake(directory, names, size=size, leaf_salt=salt, **knobs).write()
        (flake.directory / ".gitignore").write_text(GITIGNORE)
        ws = cls(flake.directory, nodes, flake)
        inventory = inv.Inventory(settings=inv.Settings(ssh_key=str(nodes[0].key)))
        for node in nodes:
            proxy = CountingProxy(node.port)
            ws.proxies[node.name] = proxy
            inventory.nodes[node.name] = inv.Node(
                host=node.host, port=proxy.start(), host_key=node.host_key, peer_port=node.port
            )
        inv.save(inventory, flake.directory / inv.FILENAME)
        return ws

    @property
    def operator_sent(self) -> int:
        return sum(p.sent for p in self.proxies.values())

    @property
    def owner_public(self) -> str:
        keys: list[str] = inv.load(self.root / inv.FILENAME).settings.store_keys
        return keys[0]

    def deploy_argv(self, *args: str) -> list[str]:
        """`deploy --json` of every node, unless ARGS name nodes (--node)."""
        every = [] if "--node" in args else ["--all"]
        return ["deploy", "--json", *every, "--workspace", str(self.root),
                "--confirm-timeout", str(CONFIRM), *args]  # fmt: skip

    def cli(self, *args: str, timeout: float = 300) -> Outcome:
        """`xnodectl deploy --json --all ... ARGS` as its own process (python -m xnodectl)."""
        argv = [sys.executable, "-m", "xnodectl", *self.deploy_argv(*args)]
        result = process.run(argv, check=False, timeout=timeout)
        return Outcome.parse(result.returncode, result.stdout, result.stderr)

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()


@dataclass
class Outcome:
    code: int
    events: list[dict[str, Any]]
    report: dict[str, Any]
    stderr: str

    @classmethod
    def parse(cls, code: int, stdout: str, stderr: str) -> Outcome:
        lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
        assert "Traceback" not in stderr + stdout
        reports = [x for x in lines if x.get("type") == "report"]
        events = [x for x in lines if x.get("type") == "event"]
        return cls(code, events, reports[-1] if reports else {}, stderr)

    def node(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(n for n in self.report["nodes"] if n["node"] == name)
        return found

    def messages(self, name: str) -> list[str]:
        return [e["message"] for e in self.events if e["node"] == name and e.get("message")]


def owner_key(directory: Path, name: str = "test-owner") -> tuple[Path, str]:
    """A Nix signing key pair for tests: (secret key file, public key)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.secret"
    if not path.exists():
        path.write_text(nixsign.generate_secret_key(name) + "\n")
        path.chmod(0o600)
    return path, nixsign.public_key(path.read_text().strip())


@contextlib.contextmanager
def ssh_ng_cache(fleet: Any, public: str) -> Iterator[tuple[Node, str]]:
    """A binary cache that is another sshd store trusting `public`: port 22 on its own loopback
    address (Nix 2.8 store URLs carry no port), its host key pinned in the ssh-ng:// URL."""
    import base64
    import random

    address = f"127.0.{random.randint(2, 250)}.{random.randint(2, 250)}"
    cache: Node = fleet.new(host=address, port=22)
    try:
        cache.trust_store([public])
        host_key = base64.b64encode(cache.host_key.encode()).decode()
        yield (
            cache,
            f"ssh-ng://root@{address}?ssh-key={cache.key}&base64-ssh-public-host-key={host_key}",
        )
    finally:
        cache.destroy()
        fleet.nodes.remove(cache)


def sign(key_file: Path, system: str) -> None:
    asyncio.run(nixsign.sign(key_file, [system], env=NIX_ENV))


@dataclass
class Rig:
    nodes: list[Node]
    identity: Path
    proxies: dict[str, CountingProxy] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    endpoints: dict[str, peers.Endpoint] = field(default_factory=dict)

    @classmethod
    def create(cls, nodes: Sequence[Node], identity: Path, *, counting: bool = True) -> Rig:
        """`counting=False`: the operator talks to the nodes directly (for timings: the relay's
        Python threads cost CPU the nodes share)."""
        rig = cls(list(nodes), identity)
        for node in nodes:
            port = node.port
            if counting:
                proxy = CountingProxy(node.port)
                rig.proxies[node.name] = proxy
                port = proxy.start()
            rig.targets[node.name] = Target(node.name, node.host, port, node.user, node.host_key)
            rig.endpoints[node.name] = peers.Endpoint(
                node.name, node.host, node.port, node.user, node.host_key
            )
        return rig

    @property
    def operator_sent(self) -> int:
        return sum(p.sent for p in self.proxies.values())

    @property
    def operator_received(self) -> int:
        return sum(p.received for p in self.proxies.values())

    def reset_counts(self) -> None:
        for proxy in self.proxies.values():
            proxy.reset()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()

    def distribution(
        self,
        session: Session,
        system: str,
        *,
        fan_out: Tree | None = None,
        via: str | None = None,
        deploy_id: str = "test-deploy",
        signer: Path | None = None,
    ) -> sources.Distribution:
        closure = asyncio.run(nix.closure(system, env=NIX_ENV))
        plan = sources.Plan(fan_out=fan_out, via=via, copy_timeout=120)
        return sources.Distribution(
            plan,
            {system: closure},
            self.endpoints,
            key=sources.make_key(plan, session.dir, deploy_id),
            signer=signer,
        )

    async def copy_all(
        self,
        session: Session,
        dist: sources.Distribution,
        systems: dict[str, str] | None = None,
        *,
        notes: list[str] | None = None,
        watch: Callable[[str, str], None] | None = None,
    ) -> dict[str, sources.Bytes | BaseException]:
        """Every node's copy at once (as a fleet wave does); a node's failure is its result.
        `systems`: node -> system (default: the one system of `dist`); `notes` collects
        "node: message"; `watch(node, kind)` sees each path arrive."""
        sshs = {name: session.ssh(target) for name, target in self.targets.items()}
        default = next(iter(dist.closures))

        async def one(name: str) -> sources.Bytes:
            return await dist.copy(
                name,
                sshs[name],
                (systems or {}).get(name, default),
                on_path=lambda kind, _p, _n: watch(name, kind) if watch else None,
                note=lambda msg: notes.append(f"{name}: {msg}") if notes is not None else None,
            )

        try:
            results = await asyncio.gather(*(one(n) for n in sshs), return_exceptions=True)
            await dist.close(lambda name: session.ssh(self.targets[name]))
        finally:
            await asyncio.gather(*(ssh.close() for ssh in sshs.values()))
        return dict(zip(sshs, results, strict=True))


class PeerKiller:
    """Kills a peer's store server mid-copy: the first read-only `nix-store --serve` (what a peer
    runs for a node pulling from it; the operator's pushes run `--serve --write`) under one of
    `nodes`' sshd, once it has written `after_bytes`, with its sshd session: SIGKILL. The node
    stays up otherwise (its own deploy goes on); the pull's connection dies as in a crash.

    A loopback copy is too fast to catch by polling alone: the server found, it runs in slices
    of half a millisecond (SIGSTOP / SIGCONT) until it has written `after_bytes`."""

    def __init__(self, nodes: Sequence[Node], after_bytes: int = 256 * 1024) -> None:
        self.listeners = {_pid_of(n._sshd): n.name for n in nodes}
        self.after_bytes = after_bytes
        self.killed: list[tuple[str, int]] = []  # (peer node, bytes its server had written)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeerKiller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.killed:
            for listener, node in self.listeners.items():
                for chain in _chains(listener):
                    if _serves_peers(chain[-1]) and self._step(chain):
                        self.killed.append((node, _written(chain[-1])))
                        _kill(chain)
                        return
            time.sleep(0.001)

    def _step(self, chain: list[int]) -> bool:
        """Run the server until it has written `after_bytes` (True, left stopped) or exited."""
        pid = chain[-1]
        try:
            while True:
                os.kill(pid, signal.SIGSTOP)
                if _written(pid) >= self.after_bytes:
                    return True
                if self._stop.is_set() or not _alive(pid):
                    os.kill(pid, signal.SIGCONT)
                    return False
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.0005)
        except ProcessLookupError:
            return False


def _chains(root: int) -> list[list[int]]:
    """Every process under `root` with the chain of its ancestors below `root`."""
    found, todo = [], [[root]]
    while todo:
        chain = todo.pop()
        try:
            children = Path(f"/proc/{chain[-1]}/task/{chain[-1]}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.append([*chain[1:], int(child)])
            todo.append([*chain, int(child)])
    return found


def _serves_peers(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[0].endswith(b"nix-store") and b"--serve" in argv and b"--write" not in argv


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(chain: list[int]) -> None:
    for pid in chain:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pid_of(spawned: process.Spawned | None) -> int:
    assert spawned is not None, "the node is not running"
    return spawned.pid


def _written(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
