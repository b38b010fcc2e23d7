"""build.jobs: one closure query per distinct system, side by side; a system every node of which
already runs it (its early preflight says so) is not waited for: a no-op redeploy does not pay for
`nix path-info` of a closure nobody copies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from xnodectl import inventory as inv
from xnodectl import nix
from xnodectl.deploy import build
from xnodectl.deploy.events import Clock
from xnodectl.deploy.job import NodeJob
from xnodectl.deploy.prepare import FleetOptions, Prepared
from xnodectl.errors import ExternalError

S1, S2 = "/nix/store/" + "1" * 32 + "-s1", "/nix/store/" + "2" * 32 + "-s2"


def prepared(names: tuple[str, ...]) -> Prepared:
    nodes = {n: inv.Node(host="127.0.0.1", host_key="ssh-ed25519 " + "A" * 68) for n in names}
    return Prepared(
        inv.Inventory(nodes=nodes),
        names,
        {n: () for n in names},
        {n: () for n in names},
        FleetOptions(),
        30,
        300.0,
        False,
    )


def closure_of(system: str) -> nix.Closure:
    return nix.Closure(system, {system: nix.PathInfo(path=system, nar_size=7, references=())})


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """nix.closure replaced: S1's query takes `slow` seconds (or fails), S2's answers at once."""
    state: dict[str, Any] = {"asked": [], "slow": 30.0, "fail": False, "cancelled": []}

    async def closure(system: str, **_: Any) -> nix.Closure:
        state["asked"].append(system)
        if system == S1:
            try:
                await asyncio.sleep(state["slow"])
            except asyncio.CancelledError:
                state["cancelled"].append(system)
                raise
            if state["fail"]:
                raise ExternalError("path-info failed")
        return closure_of(system)

    monkeypatch.setattr(nix, "closure", closure)
    return state


def jobs(systems: dict[str, str], running: set[str]) -> tuple[list[Any], list[Any], float]:
    async def runs(node: str, system: str) -> bool:
        await asyncio.sleep(0.05)  # the preflight's round trip
        return node in running

    started = time.monotonic()
    out, failed = asyncio.run(
        build.jobs(prepared(tuple(systems)), build.Built(dict(systems), 0.1), Clock(), runs)
    )
    return out, failed, time.monotonic() - started


def test_a_system_every_node_runs_is_not_waited_for(queries: dict[str, Any]) -> None:
    out, failed, seconds = jobs({"a": S1, "b": S1, "c": S2}, running={"a", "b"})
    assert seconds < 5 and not failed
    by_node = {j.target.node: j for j in out}
    assert by_node["a"].closure is None and by_node["b"].closure is None
    assert by_node["c"].closure == closure_of(S2)
    assert sorted(queries["asked"]) == [S1, S2]  # both started at once
    assert queries["cancelled"] == [S1]  # and the unneeded one stopped


def test_one_node_that_needs_the_closure_waits_for_it(queries: dict[str, Any]) -> None:
    queries["slow"] = 0.3
    out, failed, seconds = jobs({"a": S1, "b": S1}, running={"a"})
    assert not failed and seconds >= 0.3
    assert all(j.closure == closure_of(S1) for j in out)
    with pytest.raises(AssertionError):
        _ = NodeJob(out[0].target, S1, None).paths  # the guard itself


def test_a_failed_query_fails_only_the_nodes_that_need_it(queries: dict[str, Any]) -> None:
    queries["slow"], queries["fail"] = 0.01, True
    out, failed, _ = jobs({"a": S1, "b": S2}, running=set())
    assert [j.target.node for j in out] == ["b"]
    assert [r.node for r in failed] == ["a"]
    assert failed[0].error == "closure query failed: path-info failed"
    queries["asked"].clear()
    queries["slow"] = 0.5  # slower than the preflights: the nodes running it never see it fail
    out, failed, _ = jobs({"a": S1}, running={"a"})
    assert not failed and out[0].closure is None


def test_without_preflights_every_closure_is_read(queries: dict[str, Any]) -> None:
    queries["slow"] = 0.01
    out, failed = asyncio.run(build.jobs(prepared(("a",)), build.Built({"a": S1}, 0.1), Clock()))
    assert not failed and out[0].closure == closure_of(S1)
