"""Operator side of the claim, in two steps: `prepare` (the node's nonce and host key, the SIWE
message bound to the SSH key and that host key) and `finish` (post the signature, check the
answer). `claim` is both with one signer (the CLI's keystore); the studio has a browser wallet
sign between them. One copy of the rules for both.

The claim travels over plain HTTP (a fresh node has no certificate). What protects it:
- the node's owner address is baked into its image, so only the owner's signature is accepted;
- the signed statement names the SSH key fingerprint: a man in the middle cannot swap the key;
- the signed resources name the node's host key: the node refuses a message naming another host
  key, so a MITM cannot have the real node accept a claim while it shows the operator its own key;
- single-use, expiring nonces and a 5-minute expiration stop replays.
A MITM can still drop the claim, or fake a "success" from a node it impersonates; it never gets
access to the real node. Pass `expect_host_key` (read from the node's console) to close that gap.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnodectl import process, remote, sshkeys
from xnodectl.errors import ClaimRefused, NodeUnreachable, UsageError
from xnodectl.verify import sign_in
from xnodectl.wallet.signer import Signer

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8740
CLAIMED_FLAG = "/var/lib/xnode/claim/claimed"
CLAIM_MARKER = "/var/lib/xnode/ssh/claimed"  # root's: set when the key was installed
CLAIM_UNIT = "xnode-claim.service"
LIFETIME = 300
# Straight to the node: an HTTP proxy from the environment has no business seeing a claim.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ClaimRequest:
    host: str
    port: int
    ssh_key: sshkeys.PublicKey
    chain_id: int = 1
    expect_host_key: str | None = None  # SHA256:... from the console, or the inventory's pin
    timeout: float = 20.0

    @property
    def domain(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ClaimResult:
    node: str
    address: str
    authorized: str  # fingerprint of the key the node authorized
    authorized_key: str  # that key's authorized_keys line
    host_key: str  # "<type> <base64>", as pinned in the inventory
    host_key_fingerprint: str


def read_public_key(path: Path) -> sshkeys.PublicKey:
    """The public half of an SSH key: PATH itself if it is a .pub line, else PATH.pub."""
    candidates = [path] if path.suffix == ".pub" else [path.with_name(path.name + ".pub"), path]
    for candidate in candidates:
        try:
            text = candidate.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if "PRIVATE KEY" in text:
            continue
        try:
            return sshkeys.parse(text)
        except ValueError as exc:
            raise UsageError(f"{candidate}: {exc}", hint="pass an OpenSSH public key") from None
    raise UsageError(
        f"no public key at {path} or {path}.pub", hint="create one with: ssh-keygen -t ed25519"
    )


def _call(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error") or exc.reason
        except (json.JSONDecodeError, AttributeError):
            reason = exc.reason
        raise ClaimRefused(f"the node refused: {reason}", hint=_hint(exc.code)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NodeUnreachable(
            f"cannot reach the claim service at {url}: {reason}",
            hint="is the node booted, and the claim port open?",
        ) from None
    except json.JSONDecodeError:
        raise NodeUnreachable(
            f"{url} did not answer JSON", hint="is that a claim service?"
        ) from None
    if not isinstance(answer, dict):
        raise NodeUnreachable(f"{url} answered unexpected JSON", hint="is that a claim service?")
    return answer


def _hint(status: int) -> str:
    if status == 410:
        return "the node is already claimed; the owner can reopen it: xnodectl claim --reopen"
    return "check the wallet is the node's owner, the node's clock, and --chain-id"


def _host_key(info: dict[str, Any], request: ClaimRequest) -> sshkeys.PublicKey:
    try:
        key = sshkeys.parse(str(info.get("host_key", "")))
    except ValueError as exc:
        raise NodeUnreachable(f"the node sent a bad host key: {exc}", hint="retry") from None
    if info.get("host_key_fingerprint") != key.fingerprint:
        raise NodeUnreachable("the node's host key and fingerprint disagree", hint="retry")
    if request.expect_host_key and key.fingerprint != request.expect_host_key:
        raise ClaimRefused(
            f"host key {key.fingerprint} is not the expected {request.expect_host_key}",
            hint="someone may be impersonating the node; nothing was signed",
        )
    return key


def _node_time(info: dict[str, Any]) -> float:
    """The node's clock: a fresh node may not have synced its time yet, and only its clock decides
    whether the message is current. (A forged time only gets the claim refused by the node.)"""
    now = time.time()
    node = info.get("time")
    if not isinstance(node, int) or isinstance(node, bool):
        return now
    if abs(node - now) > 60:
        logger.warning(
            "the node's clock is %+d s off ours; the message uses the node's time", node - now
        )
    return float(node)


@dataclass(frozen=True)
class PreparedClaim:
    """A claim ready to be signed: the node's nonce, bound into the exact SIWE text by `prepare`.
    Whoever signs it (the keystore here, a browser wallet in the studio), `finish` posts it."""

    request: ClaimRequest
    address: str  # EIP-55: the address the message names
    message: str  # the exact EIP-4361 text to sign (personal_sign)
    host_key: sshkeys.PublicKey  # the key the node announced with its nonce
    node: str  # the name the node reports ("" if none)
    expires_in: int  # seconds the node keeps the nonce (at most the message's LIFETIME)


def check_request(request: ClaimRequest) -> None:
    """Bad input, said before the node is contacted: the host and port go into the claim URL."""
    from xnodectl.inventory import check_host

    try:
        check_host(request.host)
    except ValueError as exc:
        raise UsageError(str(exc), hint="pass the node's IP address or DNS name") from None
    if not 1 <= request.port <= 65535:
        raise UsageError(f"claim port {request.port} is out of range", hint="1 to 65535")


def _checksummed(address: str) -> str:
    from eth_utils.address import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise UsageError(
            f"{str(address)[:60]!r} is not an Ethereum address", hint="0x and 40 hex digits"
        )
    return str(to_checksum_address(address))


def prepare(request: ClaimRequest, address: str) -> PreparedClaim:
    """Step one: the node's nonce and host key (checked against the expected one before anything
    is signed), and the SIWE message naming our SSH key and that host key, for `address`."""
    check_request(request)
    signer_address = _checksummed(address)
    info = _call(f"http://{request.domain}/claim/nonce", None, request.timeout)
    host_key = _host_key(info, request)
    nonce = info.get("nonce")
    if not isinstance(nonce, str) or not re.fullmatch(r"[0-9A-Za-z]{8,128}", nonce):
        raise NodeUnreachable("the node sent a bad nonce", hint="retry")
    message = sign_in.build(
        domain=request.domain,
        uri=f"http://{request.domain}{sign_in.CLAIM_PATH}",
        address=signer_address,
        chain_id=request.chain_id,
        nonce=nonce,
        now=_node_time(info),
        statement=sign_in.claim_statement(request.ssh_key.fingerprint),
        resources=[sign_in.host_key_resource(host_key.fingerprint)],
        lifetime=LIFETIME,
    )
    ttl = info.get("expires_in")
    expires_in = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else LIFETIME
    return PreparedClaim(
        request=request,
        address=signer_address,
        message=message,
        host_key=host_key,
        node=str(info.get("node") or ""),
        expires_in=max(0, min(expires_in, LIFETIME)),
    )


def finish(prepared: PreparedClaim, signature: str) -> ClaimResult:
    """Step two: post the signed message with our key; the node's answer must name the host key
    it announced and exactly our key."""
    request = prepared.request
    body = {
        "message": prepared.message,
        "signature": signature,
        "ssh_public_key": request.ssh_key.line(),
    }
    url = f"http://{request.domain}{sign_in.CLAIM_PATH}"
    answer = _call(url, body, request.timeout)
    host_key = prepared.host_key
    if answer.get("host_key_fingerprint") != host_key.fingerprint:
        raise NodeUnreachable(
            "the node answered with another host key than it announced",
            hint="someone may be in the middle; do not trust this node",
        )
    if answer.get("authorized") != request.ssh_key.fingerprint:
        raise NodeUnreachable("the node authorized another key than ours", hint="retry")
    return ClaimResult(
        node=str(answer.get("node") or ""),
        address=str(answer.get("address") or prepared.address),
        authorized=request.ssh_key.fingerprint,
        authorized_key=request.ssh_key.line(),
        host_key=f"{host_key.kind} {host_key.line().split()[1]}",
        host_key_fingerprint=host_key.fingerprint,
    )


def claim(request: ClaimRequest, signer: Signer) -> ClaimResult:
    """Claim the node at request.host for `signer`'s address, authorizing request.ssh_key."""
    prepared = prepare(request, signer.address)
    return finish(prepared, signer.sign_message(prepared.message))


def reopen(host: str, port: int, user: str, host_key: str, identity: Path | None) -> None:
    """Let a claimed node accept one more claim: over SSH with its pinned host key."""
    with tempfile.TemporaryDirectory(prefix="xnodectl-known-") as tmp:
        known = Path(tmp) / "known_hosts"
        name = host if port == 22 else f"[{host}]:{port}"
        known.write_text(f"{name} {host_key}\n")
        options = ["-o", "BatchMode=yes", *remote.pinned_options(port, known, identity)]
        # The same steps as `xnode-claim reopen`, spelled out so no node-side PATH is assumed.
        flags = " ".join(shlex.quote(f) for f in (CLAIMED_FLAG, CLAIM_MARKER))
        remote_cmd = f"rm -f {flags} && systemctl start {shlex.quote(CLAIM_UNIT)}"
        argv = remote.ssh_argv(options, user, host, remote_cmd)
        process.run(argv, timeout=60)
