"""`xnodectl node unlock NODE`: release a deploy lock whose operator is gone (SIGKILL, a lost
laptop), after showing who held it. Refused while a deploy is still settling on the node: that
lock is released by the node itself once the deploy's decision is complete."""

from __future__ import annotations

from dataclasses import dataclass

from xnodectl.deploy.agent import Agent
from xnodectl.deploy.prepare import session_of, target_of
from xnodectl.errors import UsageError
from xnodectl.workspace import Workspace

STEP_S = 15.0


@dataclass(frozen=True)
class Released:
    holder: str
    age: int | None  # seconds since the holder's last heartbeat (node's boot clock)


async def unlock(ws: Workspace, name: str) -> Released | None:
    inventory = ws.load()
    session = session_of(inventory)
    ssh = session.ssh(target_of(name, inventory.node(name)))
    try:
        agent = Agent(ssh, install_missing=True)
        info = await agent.info(timeout=STEP_S)
        if info.active is not None:
            raise UsageError(
                f"node '{name}': deploy {info.active} is still settling "
                f"(lock held by {info.lock.holder if info.lock else 'nobody'})",
                hint="wait for it: the node releases the lock itself once the deploy settled",
            )
        if info.lock is None:
            return None
        await agent.unlock(info.lock.holder, timeout=STEP_S)
        return Released(info.lock.holder, info.lock.age)
    finally:
        await ssh.close()
        session.close()
