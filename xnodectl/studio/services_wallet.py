"""The studio's door to the owner's wallet services: sign-in (the node gate's own SIWE code) and
claim (wallet/claim.py's prepare and finish, the pin `xnodectl claim` makes).

Like services.py, nothing here decides anything: each function names the service the CLI calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnodectl import inventory, sshkeys
from xnodectl.errors import UsageError
from xnodectl.wallet import claim as claimmod
from xnodectl.workspace import Workspace

# --- wallet sign-in (listening beyond loopback): the node gate's own SIWE code -----------------

SIGN_IN_CHAIN_ID = 1


def owner_address(ws: Workspace, given: str | None) -> str:
    """The workspace owner's address (lowercase): --owner, else the operator wallet's (the
    keystore deploys are signed with), read without its password."""
    from xnodectl.verify import eip191
    from xnodectl.wallet import keystore

    if given:
        try:
            return eip191.normalize_address(given)
        except ValueError as exc:
            raise UsageError(str(exc), hint="--owner takes 0x and 40 hex digits") from None
    path = operator_keystore(ws)
    if not path.is_file():
        raise UsageError(
            "listening beyond loopback needs the workspace owner's wallet sign-in, and no owner "
            "is known",
            hint=f"pass --owner 0xADDR, or create the operator wallet {path}: xnodectl wallet new",
        )
    return eip191.normalize_address(keystore.read_address(path))


def sign_in_message(host: str, address: str, nonce: str, workspace: str) -> str:
    """The EIP-4361 text the browser wallet signs (checksummed address, issued now, 5 min)."""
    from eth_utils.address import is_address, to_checksum_address

    from xnodectl.verify import sign_in

    if not isinstance(address, str) or not is_address(address):
        raise UsageError(
            f"'{address[:60]}' is not an Ethereum address", hint="reconnect the wallet"
        )
    return sign_in.build(
        domain=host,
        uri=f"http://{host}/",
        address=to_checksum_address(address),
        chain_id=SIGN_IN_CHAIN_ID,
        nonce=nonce,
        statement=f"Sign in to Xnode Studio for the workspace {workspace}.",
    )


def verify_sign_in(message: str, signature: str, hosts: frozenset[str], owner: str) -> Any:
    """sign_in.verify, as the node's wallet gate calls it; raises sign_in.Rejected."""
    from xnodectl.verify import sign_in

    policy = sign_in.Policy(
        domains=hosts,
        uri_for=lambda d: f"http://{d}/",
        chain_id=SIGN_IN_CHAIN_ID,
        allowed=frozenset({owner}),
    )
    return sign_in.verify(message, signature, policy)


# --- claim: `xnodectl claim HOST` (wallet/claim.py's prepare and finish, nodes.pin_claimed) ---

ClaimRequest = claimmod.ClaimRequest
PreparedClaim = claimmod.PreparedClaim
ClaimResult = claimmod.ClaimResult


@dataclass(frozen=True)
class ClaimChoice:
    """The claim form, as `xnodectl claim HOST --port --node --expect-host-key`."""

    host: str
    port: int = claimmod.DEFAULT_PORT
    name: str | None = None
    expect_host_key: str | None = None


def operator_key(ws: Workspace) -> tuple[Path, sshkeys.PublicKey]:
    """The key a claim authorizes: the workspace's operator key (settings.ssh_key, the one
    deploys log in with), its public half read as `claim --ssh-key` reads it."""
    key = ws.load().settings.ssh_key
    if not key:
        raise UsageError(
            "the workspace has no operator SSH key (settings.ssh_key in inventory.toml)",
            hint='set it under [settings], e.g. ssh_key = "~/.ssh/id_ed25519"',
        )
    path = Path(key).expanduser()  # as deploys read it
    return path, claimmod.read_public_key(path)


def operator_keystore(ws: Workspace) -> Path:
    """The operator wallet: settings.signer_keystore, else the CLI's --wallet default."""
    import os

    from xnodectl.wallet import keystore

    named = ws.load().settings.signer_keystore or os.environ.get("XNODECTL_WALLET")
    return Path(named).expanduser() if named else keystore.default_path()


def claim_request(ws: Workspace, choice: ClaimChoice) -> ClaimRequest:
    """The CLI's checks in the CLI's order, before the node is contacted: the key, the name and
    the expected host key (nodes.expected_fingerprint), the host and port."""
    from xnodectl import nodes

    _path, key = operator_key(ws)
    expect = choice.expect_host_key
    if choice.name:
        expect = nodes.expected_fingerprint(ws, choice.name, expect)
    request = ClaimRequest(host=choice.host, port=choice.port, ssh_key=key, expect_host_key=expect)
    claimmod.check_request(request)
    return request


def prepare_claim(
    request: ClaimRequest, address: str, name: str | None
) -> tuple[PreparedClaim, str]:
    """wallet.claim.prepare, and the inventory name: the one given (checked by claim_request),
    else the node's own, checked here before anything is signed."""
    prepared = claimmod.prepare(request, address)
    if name:
        return prepared, name
    try:
        inventory.check_node_name(prepared.node)
    except UsageError as exc:
        raise UsageError(
            f"the node calls itself: {exc.message}",
            hint="give it an inventory name: lowercase letters, digits and '-'",
        ) from None
    return prepared, prepared.node


def finish_claim(ws: Workspace, prepared: PreparedClaim, signature: str, name: str) -> ClaimResult:
    """wallet.claim.finish, then the pin `xnodectl claim` makes (nodes.pin_claimed)."""
    from xnodectl import nodes

    result = claimmod.finish(prepared, signature)
    nodes.pin_claimed(
        ws,
        name,
        prepared.request.host,
        result.host_key,
        owner=result.address,
        authorized_key=result.authorized_key,
    )
    return result


def claim_with_keystore(
    ws: Workspace, request: ClaimRequest, password: str, name: str | None
) -> tuple[str, ClaimResult]:
    """The CLI's claim: unlock the operator keystore (the CLI's unlock code), prepare, sign,
    finish and pin. The password is used here and dropped."""
    from xnodectl.wallet import keystore

    signer = keystore.load_signer(operator_keystore(ws), password)
    prepared, chosen = prepare_claim(request, signer.address, name)
    result = finish_claim(ws, prepared, signer.sign_message(prepared.message), chosen)
    return chosen, result
