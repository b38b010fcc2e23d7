"""`xnodectl node log NODE`: a node's deploy audit log, as the NODE recorded it
(`xnode-activate history`): every deploy it ran, from whichever workspace or machine, with what it
decided on its own (a dead-man timer's rollback, a recovery after a restart)."""

from __future__ import annotations

from xnodectl.deploy.agent import Agent
from xnodectl.deploy.prepare import session_of, target_of
from xnodectl.deploy.replies import DeployRecord
from xnodectl.errors import UsageError
from xnodectl.workspace import Workspace

STEP_S = 15.0
DEFAULT_LIMIT = 20


async def node_log(ws: Workspace, name: str, limit: int = DEFAULT_LIMIT) -> list[DeployRecord]:
    """The node's newest `limit` deploys, newest first."""
    if limit < 1:
        raise UsageError(f"--limit {limit} is not a positive number", hint="use 1 or more")
    inventory = ws.load()
    session = session_of(inventory)
    ssh = session.ssh(target_of(name, inventory.node(name)))
    try:
        return await Agent(ssh, install_missing=True).history(limit, timeout=STEP_S)
    finally:
        await ssh.close()
        session.close()
