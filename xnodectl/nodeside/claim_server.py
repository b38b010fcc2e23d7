"""xnode-claim: the claim service of a node that has an owner address but no operator key yet.

GET /claim/nonce issues a single-use nonce together with the node's SSH host key; POST /claim
takes {message, signature, ssh_public_key}: a SIWE message signed by the owner whose statement
names that key's fingerprint and whose resources name the host key. On success the key is
appended to root's authorized_keys (outside the Nix store), the node answers with its host key,
and claims close (a flag file) until the owner runs `xnode-claim reopen` over SSH.
See docs/wallet.md for the threat model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from xnodectl import sshkeys
from xnodectl.nodeside import claim_install
from xnodectl.nodeside.httpbase import BadRequest, JsonHandler, logger, warm_up_siwe
from xnodectl.nodeside.nonces import NonceLimit, NonceStore
from xnodectl.nodeside.server import BoundedServer
from xnodectl.verify import sign_in

DEFAULT_PORT = 8740
OWNER_FILE = Path("/etc/xnode/owner-address")
NODE_NAME_FILE = Path("/etc/xnode/node-name")
AUTHORIZED_KEYS = Path("/var/lib/xnode/ssh/authorized_keys.d/root")
STATE_DIR = Path("/var/lib/xnode/claim")
HOST_KEY = Path("/etc/ssh/ssh_host_ed25519_key.pub")
UNIT = "xnode-claim.service"


@dataclass(frozen=True)
class ClaimConfig:
    owner: str  # lowercase 0x address
    chain_id: int
    domains: frozenset[str]  # names the node is reached by, besides its own socket address
    authorized_keys: Path
    state_dir: Path
    host_key: Path
    node_name: str = ""
    nonce_ttl: int = 300
    max_lifetime: int = 600
    skew: int = 60
    # True on a node: the service runs unprivileged and root's `xnode-claim install` (started by
    # a path unit) appends the key; False: append to `authorized_keys` directly (tests, dev).
    handoff: bool = False

    @property
    def flag(self) -> Path:
        return self.state_dir / "claimed"


class ClaimService:
    """The claim logic, independent of HTTP so every rule is testable on its own."""

    def __init__(self, config: ClaimConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.nonces = NonceStore(ttl=config.nonce_ttl, clock=clock)
        self._lock = threading.Lock()
        self.on_claimed: Callable[[], None] = lambda: None  # called after the answer is sent

    def is_open(self) -> bool:
        return not self.config.flag.exists()

    def host_key(self) -> sshkeys.PublicKey:
        try:
            return sshkeys.parse(self.config.host_key.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, f"no usable host key: {exc}") from None

    def _closed(self) -> BadRequest:
        return BadRequest(HTTPStatus.GONE, "claims are closed: this node is already claimed")

    def issue(self, client: str = "") -> dict[str, Any]:
        if not self.is_open():
            raise self._closed()
        key = self.host_key()
        try:
            nonce = self.nonces.issue(client)
        except NonceLimit as exc:
            raise BadRequest.from_limit(exc) from None
        return {
            "nonce": nonce,
            "expires_in": self.config.nonce_ttl,
            "time": int(self.clock()),  # the operator dates its message by the node's clock
            "chain_id": self.config.chain_id,
            "node": self.config.node_name,
            "host_key": key.line(),
            "host_key_fingerprint": key.fingerprint,
        }

    def policy(self, local_domains: frozenset[str]) -> sign_in.Policy:
        return sign_in.Policy(
            domains=self.config.domains | local_domains,
            uri_for=lambda domain: f"http://{domain}{sign_in.CLAIM_PATH}",
            chain_id=self.config.chain_id,
            allowed=frozenset({self.config.owner}),
            scheme="http",  # the claim service speaks plain HTTP only
            max_lifetime=self.config.max_lifetime,
            skew=self.config.skew,
        )

    def claim(
        self, message: str, signature: str, ssh_public_key: str, local_domains: frozenset[str]
    ) -> dict[str, Any]:
        """Authorize the key or raise BadRequest; nothing changes on disk unless all checks pass."""
        if not self.is_open():
            raise self._closed()
        try:
            key = sshkeys.parse(ssh_public_key)
        except ValueError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"ssh_public_key: {exc}") from None
        try:
            signed = sign_in.verify(
                message, signature, self.policy(local_domains), now=self.clock()
            )
        except sign_in.Rejected as exc:
            malformed = exc.reason.startswith("malformed")
            status = HTTPStatus.BAD_REQUEST if malformed else HTTPStatus.FORBIDDEN
            raise BadRequest(status, exc.reason) from None
        self._check_terms(signed, key)
        with self._lock:  # one claim at a time: check-and-set of the flag and the nonce
            if not self.is_open():
                raise self._closed()
            if not self.nonces.consume(signed.nonce):
                raise BadRequest(HTTPStatus.FORBIDDEN, "nonce unknown, already used or expired")
            self._authorize(key, signed)
        logger.warning("claimed by %s: authorized %s", signed.address, key.fingerprint)
        host = self.host_key()
        return {
            "authorized": key.fingerprint,
            "address": signed.address,
            "host_key": host.line(),
            "host_key_fingerprint": host.fingerprint,
            "node": self.config.node_name,
        }

    def _check_terms(self, signed: sign_in.SignIn, key: sshkeys.PublicKey) -> None:
        problem = self.nonces.problem(signed.nonce)
        if problem:
            raise BadRequest(HTTPStatus.FORBIDDEN, problem)
        if signed.statement != sign_in.claim_statement(key.fingerprint):
            raise BadRequest(
                HTTPStatus.FORBIDDEN,
                f"the signed statement does not authorize exactly the key sent ({key.fingerprint})",
            )
        host_fp = self.host_key().fingerprint
        if sign_in.host_key_resource(host_fp) not in signed.resources:
            raise BadRequest(
                HTTPStatus.FORBIDDEN,
                f"the message does not name this node's host "
                f"key {host_fp} (another node, or a man in the middle)",
            )

    def _authorize(self, key: sshkeys.PublicKey, signed: sign_in.SignIn) -> None:
        self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.config.handoff:  # unprivileged: root's xnode-claim install appends the key
            try:
                claim_install.hand_over(self.config.state_dir, key)
            except claim_install.InstallRefused as exc:
                raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        else:
            claim_install.append_key(self.config.authorized_keys, key)
        record = {"address": signed.address, "key": key.fingerprint, "time": int(self.clock())}
        fd = os.open(self.config.flag, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.write("\n")


def _local_domains(sock: socket.socket) -> frozenset[str]:
    """host:port the client reached us at: the node's own address, which a client cannot forge."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    names = {f"{host}:{port}"}
    if port == 80:
        names.add(host)
    return frozenset(names)


class ClaimHandler(JsonHandler):
    service: ClaimService

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        try:
            if self.path == "/claim/nonce":
                self.send_json(HTTPStatus.OK, self.service.issue(self.client()))
            elif self.path == "/claim":
                self.send_json(
                    HTTPStatus.OK,
                    {"open": self.service.is_open(), "node": self.service.config.node_name},
                )
            else:
                self.refuse(HTTPStatus.NOT_FOUND, "not found")
        except BadRequest as exc:
            self.refuse_with(exc)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/claim":
            self.refuse(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            data = self.read_json()
            answer = self.service.claim(
                self.field(data, "message"),
                self.field(data, "signature"),
                self.field(data, "ssh_public_key"),
                _local_domains(self.connection),
            )
        except BadRequest as exc:
            self.refuse_with(exc)
            return
        self.send_json(HTTPStatus.OK, answer)
        self.service.on_claimed()


def make_server(
    service: ClaimService, host: str, port: int, *, exit_after_claim: bool = False
) -> BoundedServer:
    """A claim server bound to host:port (port 0 = ephemeral), not yet serving."""
    handler: type[ClaimHandler] = type("Handler", (ClaimHandler,), {"service": service})
    server = BoundedServer((host, port), handler)
    if exit_after_claim:
        # shutdown() blocks until serve_forever returns, so it must run off the handler thread.
        def stop() -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        service.on_claimed = stop
    return server


def _read_owner(arg: str | None, path: Path) -> str:
    from xnodectl.verify.eip191 import normalize_address

    try:
        return normalize_address(arg if arg is not None else path.read_text())
    except OSError:
        raise SystemExit(f"xnode-claim: no owner address ({path} is missing)") from None
    except ValueError as exc:
        raise SystemExit(f"xnode-claim: owner address: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    name = args.node_name
    if name is None:
        name = (
            NODE_NAME_FILE.read_text().strip() if NODE_NAME_FILE.exists() else socket.gethostname()
        )
    config = ClaimConfig(
        owner=_read_owner(args.owner, args.owner_file),
        chain_id=args.chain_id,
        domains=frozenset(args.domain),
        authorized_keys=args.authorized_keys,
        state_dir=args.state_dir,
        host_key=args.host_key,
        node_name=name,
        handoff=args.handoff,
    )
    service = ClaimService(config)
    if not service.is_open():
        logger.warning("already claimed (%s exists); not serving", config.flag)
        return 0
    server = make_server(service, args.listen, args.port, exit_after_claim=args.exit_after_claim)
    warm_up_siwe()
    logger.warning("claim service for owner %s on %s:%d", config.owner, args.listen, args.port)
    with server:
        server.serve_forever()
    return 0


def _reopen(args: argparse.Namespace) -> int:
    """Owner over SSH: allow one more claim (e.g. to add a second operator key)."""
    from xnodectl import process

    (args.state_dir / "claimed").unlink(missing_ok=True)
    args.marker.unlink(missing_ok=True)
    if Path("/run/systemd/system").is_dir():
        process.run(["systemctl", "start", UNIT])
    print(json.dumps({"open": True}))
    return 0


def _install(args: argparse.Namespace) -> int:
    """Root, started by xnode-claim-install.path: install the key the service approved."""
    try:
        installed = claim_install.install(args.state_dir, args.authorized_keys, args.marker)
    except claim_install.InstallRefused as exc:
        logger.warning("xnode-claim install: refused: %s", exc)
        return 1
    logger.warning("xnode-claim install: %s", f"authorized {installed}" if installed else "nothing")
    return 0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xnode-claim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the claim service")
    serve.add_argument("--listen", default="0.0.0.0", help="address to bind")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--owner", help="owner address (default: from --owner-file)")
    serve.add_argument("--owner-file", type=Path, default=OWNER_FILE)
    serve.add_argument("--chain-id", type=int, default=1)
    serve.add_argument(
        "--domain",
        action="append",
        default=[],
        help="extra host[:port] the node is reached by (repeatable)",
    )
    serve.add_argument("--node-name", help="default: /etc/xnode/node-name or the hostname")
    serve.add_argument("--authorized-keys", type=Path, default=AUTHORIZED_KEYS)
    serve.add_argument("--host-key", type=Path, default=HOST_KEY)
    serve.add_argument("--state-dir", type=Path, default=STATE_DIR)
    serve.add_argument("--exit-after-claim", action="store_true")
    serve.add_argument(
        "--handoff", action="store_true", help="leave the key to `xnode-claim install` (as root)"
    )
    install = sub.add_parser("install", help="(root) install the key the service approved")
    install.add_argument("--authorized-keys", type=Path, default=AUTHORIZED_KEYS)
    reopen = sub.add_parser("reopen", help="accept one more claim")
    for command in (install, reopen):
        command.add_argument("--state-dir", type=Path, default=STATE_DIR)
        command.add_argument("--marker", type=Path, default=claim_install.MARKER)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = _args(argv)
    commands = {"serve": _serve, "install": _install, "reopen": _reopen}
    return commands[args.command](args)


def entry() -> None:
    sys.exit(main())
