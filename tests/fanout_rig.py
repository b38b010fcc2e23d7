"""Test Xnodes wired for fan-out runs: each node's operator address is a counting relay
(tests/countproxy.py), its peer address is its real sshd. Shared by the tests and bench/fanout.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.countproxy import CountingProxy
from tests.xnodes import NIX_ENV, Node
from xnodectl import nix, nixsign
from xnodectl.deploy import peers, sources
from xnodectl.deploy.fanout import Tree
from xnodectl.remote import Session, Target


def owner_key(directory: Path, name: str = "test-owner") -> tuple[Path, str]:
    """A Nix signing key pair for tests: (secret key file, public key)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.secret"
    if not path.exists():
        path.write_text(nixsign.generate_secret_key(name) + "\n")
        path.chmod(0o600)
    return path, nixsign.public_key(path.read_text().strip())


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
