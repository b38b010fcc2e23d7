"""The fan-out schedule alone (no I/O): sources in order, failing peers skipped, the operator
seeds once and serves again only as the fallback, nobody copies from a copy in flight. Also the
run's byte booking and which paths it signs, without nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from xnodectl.deploy.fanout import OPERATOR, Schedule, Source, Tree
from xnodectl.errors import UsageError


@pytest.mark.parametrize(("spec", "degree"), [("tree", 2), ("tree:1", 1), ("tree:16", 16)])
def test_parse(spec: str, degree: int) -> None:
    assert Tree.parse(spec) == Tree(degree)


@pytest.mark.parametrize("spec", ["tree:0", "tree:65", "star", "tree:", "tree:x", "tree:2 "])
def test_parse_refuses(spec: str) -> None:
    with pytest.raises(UsageError, match="--fan-out"):
        Tree.parse(spec)


async def _copy(
    schedule: Schedule, node: str, log: list[tuple[str, str]], fail: set[str], seconds: float
) -> None:
    tried: set[str] = set()
    while True:
        source = await schedule.acquire(node, tried)
        log.append((node, source.peer or "operator"))
        await asyncio.sleep(seconds)
        broken = source.peer in fail
        await schedule.release(node, source, ok=not broken, peer_failed=broken)
        if not broken:
            return
        tried.add(source.peer)


def simulate(n: int, degree: int, fail: set[str] = frozenset()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    log: list[tuple[str, str]] = []

    async def main() -> None:
        schedule = Schedule(Tree(degree))
        await asyncio.gather(*(_copy(schedule, f"n{i}", log, set(fail), 0.01) for i in range(n)))

    asyncio.run(main())
    return log


def test_operator_seeds_one_node_and_holders_serve_the_rest() -> None:
    log = simulate(8, 2)
    assert [src for _, src in log].count("operator") == 1
    assert log[0] == ("n0", "operator")
    served: dict[str, int] = {}
    for _, src in log[1:]:
        served[src] = served.get(src, 0) + 1
    assert sum(served.values()) == 7


def test_concurrency_per_holder_is_the_degree() -> None:
    async def main() -> int:
        schedule = Schedule(Tree(2))
        seed = await schedule.acquire("a", set())
        assert seed == Source(OPERATOR)
        await schedule.release("a", seed, ok=True, peer_failed=False)
        first = await schedule.acquire("b", set())
        second = await schedule.acquire("c", set())
        assert first.peer == second.peer == "a"
        third = asyncio.ensure_future(schedule.acquire("d", set()))
        await asyncio.sleep(0.01)
        assert not third.done()  # a is busy twice; b and c are still copying: wait
        await schedule.release("b", first, ok=True, peer_failed=False)
        got = await asyncio.wait_for(third, 1)
        assert got.peer in ("a", "b")
        return len(schedule.holders)

    assert asyncio.run(main()) == 2


def test_failed_peer_is_skipped_and_the_operator_is_the_last_resort() -> None:
    log = simulate(3, 2, fail={"n0"})
    # n0 got the closure from the operator but breaks as a peer: n1 and n2 try it once, then
    # one of them falls back to the operator and the other copies from that one.
    sources = [src for _, src in log]
    assert sources.count("operator") == 2
    assert sources.count("n0") == 2


def test_seed_failure_lets_the_operator_seed_another() -> None:
    async def main() -> Source:
        schedule = Schedule(Tree(2))
        seed = await schedule.acquire("a", set())
        waiting = asyncio.ensure_future(schedule.acquire("b", set()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await schedule.release("a", seed, ok=False, peer_failed=False)
        return await asyncio.wait_for(waiting, 1)

    source = asyncio.run(main())
    assert source.is_operator and not source.fallback


def test_a_node_that_already_holds_the_closure_serves() -> None:
    async def main() -> Source:
        schedule = Schedule(Tree(1))
        await schedule.holds("a")
        return await schedule.acquire("b", set())

    assert asyncio.run(main()).peer == "a"


def test_peers_reach_a_node_at_its_peer_address() -> None:
    from xnodectl import inventory as inv
    from xnodectl.deploy import peers

    node = inv.Node(host="203.0.113.7", port=2222, host_key="ssh-ed25519 AAAA")
    assert peers.endpoint_of("a", node) == peers.Endpoint(
        "a", "203.0.113.7", 2222, "root", "ssh-ed25519 AAAA"
    )
    node = inv.Node(host="203.0.113.7", port=2222, peer_host="10.0.0.7", peer_port=22)
    endpoint = peers.endpoint_of("a", node)
    assert (endpoint.host, endpoint.port, endpoint.store_uri) == (
        "10.0.0.7",
        22,
        "ssh://root@10.0.0.7",
    )


def test_pull_command_pins_the_peer_and_never_skips_signature_checks(tmp_path: Any) -> None:
    from xnodectl.deploy import peers

    key = peers.PeerKey.create(tmp_path, "20261204T035500-abc123")
    peer = peers.Endpoint("b", "10.0.0.8", 22, "root", "ssh-ed25519 AAAAPEER")
    argv = peers.pull_command(peer, key, ["/nix/store/x-a", "/nix/store/y-b"], "root")
    script, words = argv[2], argv[4:]
    assert "--no-check-sigs" not in script and "nix copy --from" in script
    assert words[1] == "xnode-peer-b ssh-ed25519 AAAAPEER"
    assert "StrictHostKeyChecking=yes" in words[2] and "HostKeyAlias=xnode-peer-b" in words[2]
    assert words[3] == "ssh://root@10.0.0.8" and words[-2:] == ["/nix/store/x-a", "/nix/store/y-b"]
    line = key.authorized_line()
    assert line.startswith('restrict,expiry-time="') and 'command="nix-store --serve"' in line
    assert "--write" not in line and key.private.read_text() not in " ".join(argv)
    assert (key.private.stat().st_mode & 0o777) == 0o600


def _closure(*paths: tuple[str, int, tuple[str, ...]]) -> Any:
    from xnodectl import nix

    infos = {p: nix.PathInfo(p, size, (), sigs) for p, size, sigs in paths}
    return nix.Closure(root=paths[0][0], paths=infos)


def test_a_path_sent_again_by_another_source_is_booked_once() -> None:
    """A peer killed mid-path still reports that path done (Nix stops its activity as the copy
    fails); the operator then sends it again: it counts once, under the operator (before: under
    both, and the node's bytes_copied exceeded its closure)."""
    from xnodectl.deploy import sources

    closure = _closure(("/nix/store/a-sys", 100, ()), ("/nix/store/b-leaf", 1000, ()))
    dist = sources.Distribution(sources.Plan(), {"/nix/store/a-sys": closure}, {})
    seen: list[tuple[str, int]] = []
    dist._watch["n1"] = lambda kind, _path, size: seen.append((kind, size))
    dist._counter("n1", "peers")("/nix/store/b-leaf")
    dist._counter("n1", "operator")("/nix/store/b-leaf")
    dist._counter("n1", "operator")("/nix/store/a-sys")
    got = dist.per_node["n1"]
    assert (got.peers, got.operator, got.total) == (0, 1100, 1100)
    assert seen == [("peers", 1000), ("peers", -1000), ("operator", 1000), ("operator", 100)]
    assert dist.operator_bytes == 1100


def test_only_paths_the_owner_has_not_signed_are_signed(tmp_path: Any) -> None:
    """A redeploy (every path signed by the owner) starts no signing; a path signed only by
    another key, or by none, is signed; the key's name, not a prefix of it, decides."""
    import asyncio

    from xnodectl import nixsign
    from xnodectl.deploy import sources

    key = tmp_path / "key"
    key.write_text("xnode-owner-1:" + "A" * 86 + "==\n")
    mine, other = "xnode-owner-1:c2ln", "xnode-owner-10:c2ln"
    signed = _closure(("/nix/store/a-sys", 1, (mine,)), ("/nix/store/b", 1, (other, mine)))
    assert nixsign.unsigned([signed], "xnode-owner-1") == []
    mixed = _closure(("/nix/store/a-sys", 1, (mine,)), ("/nix/store/b", 1, (other,)),
                     ("/nix/store/c", 1, ()))  # fmt: skip
    assert nixsign.unsigned([signed, mixed], "xnode-owner-1") == ["/nix/store/b", "/nix/store/c"]

    async def started(closure: Any) -> bool:
        dist = sources.Distribution(sources.Plan(), {closure.root: closure}, {}, signer=key)
        dist.start_signing()
        if dist._signing is None:
            return False
        dist._signing.cancel()
        return True

    assert not asyncio.run(started(signed))
    assert asyncio.run(started(mixed))
