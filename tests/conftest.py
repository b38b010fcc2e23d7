"""Shared pytest fixtures and options. Keep this file to fixtures and plugins others can extend.

Test Xnodes (tests/xnodes.py):
  xnode_factory(n, store_size=None, fresh=False) -> list[Node]   n running nodes for this test
  xnode_fleet                                      the session's Fleet (operator key, all nodes)
  operator_key                                     the session's operator SSH key
With `--xnodes-reuse`, nodes a test is done with are reset (deploy state, activations, faults
cleared; their stores kept) and handed to later tests instead of being destroyed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.xnodes import Fleet, Node, OperatorKey

XnodeFactory = Callable[..., list[Node]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--xnodes-reuse",
        action="store_true",
        help="reuse test Xnodes across tests (reset between tests, stores kept) instead of "
        "creating fresh ones for each test",
    )


@pytest.fixture(scope="session")
def xnode_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # A short base path: sshd and nix put these paths into socket names and configs.
    fleet = Fleet(tmp_path_factory.mktemp("xnodes", numbered=True))
    yield fleet
    fleet.destroy()


@pytest.fixture(scope="session")
def operator_key(xnode_fleet: Fleet) -> OperatorKey:
    return xnode_fleet.key


@pytest.fixture(scope="session")
def _xnode_pool() -> list[Node]:
    """Idle nodes kept for reuse under --xnodes-reuse."""
    return []


@pytest.fixture
def xnode_factory(
    xnode_fleet: Fleet, _xnode_pool: list[Node], request: pytest.FixtureRequest
) -> Iterator[XnodeFactory]:
    """`xnode_factory(n, store_size=None, fresh=False)` -> n started test Xnodes for this test."""
    reuse = bool(request.config.getoption("--xnodes-reuse"))
    mine: list[Node] = []

    def make(n: int = 1, *, store_size: str | None = None, fresh: bool = False) -> list[Node]:
        nodes: list[Node] = []
        while reuse and not fresh and store_size is None and _xnode_pool and len(nodes) < n:
            node = _xnode_pool.pop()
            node.reset()
            nodes.append(node)
        while len(nodes) < n:
            nodes.append(xnode_fleet.new(store_size=store_size))
        mine.extend(nodes)
        return nodes

    yield make
    for node in mine:
        if reuse and node.store_size is None:
            _xnode_pool.append(node)
        else:
            node.destroy()
            xnode_fleet.nodes.remove(node)


@pytest.fixture
def xnode(xnode_factory: XnodeFactory) -> Node:
    """One fresh-enough running test Xnode."""
    return xnode_factory(1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that start nodes carry the "nodes" marker so `-m "not nodes"` skips them.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "xnode_factory" in fixtures or "xnode" in fixtures:
            item.add_marker(pytest.mark.nodes)
