"""Serve the studio: bind, print the URL with its token, run uvicorn until Ctrl-C."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xnodectl.errors import UsageError
from xnodectl.studio import access, services, services_wallet

DEFAULT_PORT = 8370


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(DEFAULT_PORT)
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(
                f"--listen '{text}' has no valid port", hint="use HOST:PORT, e.g. 127.0.0.1:8370"
            )
        return cls(host, int(port))


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {listen.host}:{listen.port}: {exc.strerror}",
            hint="pick another port with --listen 127.0.0.1:PORT (0 = any free port)",
        ) from exc
    sock.listen(128)
    return sock


def url_of(listen: Listen, keys: access.Keys) -> str:
    if keys.owner is not None:  # no token beyond loopback: the owner's wallet signs in
        return f"http://{sorted(keys.hosts)[0]}/auth/login"
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    return f"http://{host}:{listen.port}/?token={keys.token}"


def _owner(
    ws: services.Workspace, listen: Listen, owner: str | None, domains: tuple[str, ...]
) -> str | None:
    """Loopback: the token. Beyond: the workspace owner's wallet, and a name to be reached by."""
    if access.is_loopback(listen.host):
        return None
    if listen.host in ("0.0.0.0", "::") and not domains:
        raise UsageError(
            f"listening on {listen.host} needs the name browsers will use",
            hint="add --domain HOST[:PORT] (repeatable), e.g. --domain 192.0.2.2",
        )
    return services_wallet.owner_address(ws, owner)


def serve(
    ws: services.Workspace,
    listen: Listen,
    announce: Callable[[str], None],
    token: str | None = None,
    owner: str | None = None,
    domains: tuple[str, ...] = (),
) -> None:
    """Run until interrupted; on Ctrl-C every running deploy is interrupted as the CLI would be
    and waited for before the studio exits."""
    import uvicorn

    from xnodectl.studio.app import create

    wallet = _owner(ws, listen, owner, domains)
    sock = bind(listen)
    bound = Listen(listen.host, sock.getsockname()[1])
    keys = access.Keys.new(bound.host, bound.port, token, wallet, domains)
    guard = create(ws, keys)
    config = uvicorn.Config(
        guard,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # No limit: on Ctrl-C every deploy is interrupted first (Server.handle_exit), and
        # the streams showing them end when they have settled and reported.
        timeout_graceful_shutdown=None,
    )
    announce(url_of(bound, keys))
    asyncio.run(_server_class(guard)(config).serve(sockets=[sock]))


def _server_class(guard: access.Guard) -> type:
    import uvicorn

    from xnodectl.studio.app import interrupt_all

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            """Ctrl-C (or SIGTERM) of the studio is Ctrl-C of every deploy and build it runs."""
            interrupt_all(guard)
            super().handle_exit(sig, frame)

    return Server
