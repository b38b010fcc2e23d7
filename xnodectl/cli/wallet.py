"""wallet new/import/address/export-public, and claim (SIWE claim of a fresh node)."""

from pathlib import Path
from typing import Annotated, Any

import typer

from xnodectl.cli import output
from xnodectl.cli.options import JsonOpt, WsOpt

WalletOpt = Annotated[
    Path | None,
    typer.Option(
        "--wallet",
        envvar="XNODECTL_WALLET",
        help="Keystore file (default: ~/.config/xnodectl/wallet.json).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    from xnodectl.cli import new_app

    group = new_app(
        "The operator wallet: an encrypted Ethereum keystore (v3, scrypt, mode 0600). "
        "The password comes from a prompt or $XNODECTL_WALLET_PASSWORD."
    )
    group.command("new")(wallet_new)
    group.command("import")(wallet_import)
    group.command("address")(wallet_address)
    group.command("export-public")(wallet_export_public)
    app.add_typer(group, name="wallet")
    app.command("claim")(claim_cmd)


def _path(wallet: Path | None) -> Path:
    from xnodectl.wallet import keystore

    return (wallet or keystore.default_path()).expanduser()


def _show_address(path: Path, address: str, as_json: bool, extra: dict[str, Any]) -> None:
    if as_json:
        output.as_json({"address": address, "wallet": str(path), **extra})
    else:
        output.result(address)


def wallet_new(wallet: WalletOpt = None, as_json: JsonOpt = False) -> None:
    """Create a wallet with a fresh random key; prints its address."""
    from xnodectl.errors import WalletError
    from xnodectl.wallet import keystore

    path = _path(wallet)
    if path.exists():
        raise WalletError(f"{path} already exists", hint="wallets are never overwritten")
    password = keystore.read_password(confirm=True, path=path)
    address = keystore.create(path, password)
    output.info(f"created {path}")
    _show_address(path, address, as_json, {})


def wallet_import(
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="File holding the private key as hex; '-' or omitted: read it from stdin.",
            show_default=False,
        ),
    ] = None,
    wallet: WalletOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a private key (hex, from a file or stdin; never from the command line)."""
    import sys

    from xnodectl.errors import UsageError, WalletError
    from xnodectl.wallet import keystore

    path = _path(wallet)
    if path.exists():
        raise WalletError(f"{path} already exists", hint="wallets are never overwritten")
    if key_file is None or str(key_file) == "-":
        if sys.stdin.isatty():
            import getpass

            # Not echoed: a pasted key must not stay on the screen or in a terminal log.
            text = getpass.getpass("private key (hex): ", stream=sys.stderr)
        else:
            text = sys.stdin.readline()
    else:
        try:
            text = key_file.read_text()
        except OSError as exc:
            raise UsageError(
                f"cannot read {key_file}: {exc.strerror}", hint="check the path"
            ) from None
    key = keystore.parse_private_key(text)
    password = keystore.read_password(confirm=True, path=path)
    address = keystore.create(path, password, private_key=key)
    output.info(f"imported into {path}")
    _show_address(path, address, as_json, {})


def wallet_address(wallet: WalletOpt = None, as_json: JsonOpt = False) -> None:
    """Print the wallet's address (no password needed)."""
    from xnodectl.wallet import keystore

    path = _path(wallet)
    _show_address(path, keystore.read_address(path), as_json, {})


def wallet_export_public(wallet: WalletOpt = None, as_json: JsonOpt = False) -> None:
    """Unlock the wallet and print its address and secp256k1 public key (never the private key)."""
    from xnodectl.wallet import keystore

    path = _path(wallet)
    signer = keystore.load_signer(path, keystore.read_password(confirm=False, path=path))
    public = signer.public_key()
    if as_json:
        output.as_json({"address": signer.address, "public_key": public, "wallet": str(path)})
    else:
        output.result(f"{signer.address}\n{public}")


def claim_cmd(
    host: Annotated[str, typer.Argument(help="The node's address (or, with --reopen, its name).")],
    ssh_key: Annotated[
        Path | None,
        typer.Option(
            "--ssh-key", help="SSH public key to authorize (PATH or PATH.pub).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Claim service port.")
    ] = 8740,
    node: Annotated[
        str | None,
        typer.Option("--node", help="Inventory name (default: the name the node reports)."),
    ] = None,
    chain_id: Annotated[int, typer.Option("--chain-id", min=0, help="EIP-155 chain id.")] = 1,
    expect_host_key: Annotated[
        str | None,
        typer.Option(
            "--expect-host-key",
            metavar="SHA256:...",
            help="SHA256:... host key fingerprint seen on the "
            "node's console; the claim stops if the node shows another.",
            show_default=False,
        ),
    ] = None,
    no_inventory: Annotated[
        bool, typer.Option("--no-inventory", help="Do not pin the node in a workspace.")
    ] = False,
    reopen: Annotated[
        bool,
        typer.Option("--reopen", help="Over SSH, let the claimed node HOST accept one more claim."),
    ] = False,
    wallet: WalletOpt = None,
    workspace: WsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim a fresh node with the owner wallet: authorize an SSH key, pin the node's host key."""
    if reopen:
        _reopen(host, ssh_key, workspace)
        return
    from xnodectl.errors import UsageError

    if ssh_key is None:
        raise UsageError("--ssh-key is required", hint="pass the public key to authorize")
    _claim(
        host,
        port,
        node,
        chain_id,
        expect_host_key,
        ssh_key,
        wallet,
        workspace,
        no_inventory,
        as_json,
    )


def _claim(
    host: str,
    port: int,
    node: str | None,
    chain_id: int,
    expect: str | None,
    ssh_key: Path,
    wallet: Path | None,
    workspace: Path | None,
    no_inventory: bool,
    as_json: bool,
) -> None:
    from xnodectl.wallet import claim, keystore

    key = claim.read_public_key(ssh_key.expanduser())
    ws = None if no_inventory else _find_ws(workspace)
    expected = _expected_host_key(ws, node, expect)
    request = claim.ClaimRequest(
        host=host, port=port, ssh_key=key, chain_id=chain_id, expect_host_key=expected
    )
    claim.check_request(request)  # bad input said before the password is asked for
    path = _path(wallet)
    signer = keystore.load_signer(path, keystore.read_password(confirm=False, path=path))
    output.info(f"claiming {request.domain} as {signer.address} for key {key.fingerprint}")
    result = claim.claim(request, signer)
    name = node or result.node
    if ws is not None:
        _pin(ws, name, host, result)
        output.info(f"pinned host key {result.host_key_fingerprint} for node '{name}'")
    if as_json:
        output.as_json(
            {
                "node": name,
                "address": result.address,
                "authorized": result.authorized,
                "host_key": result.host_key,
                "host_key_fingerprint": result.host_key_fingerprint,
            }
        )
    else:
        output.result(f"{name}\t{result.host_key_fingerprint}")


def _find_ws(workspace: Path | None) -> Any:
    """The workspace to pin the node in; found before anything is signed or sent."""
    from xnodectl import workspace as wsmod
    from xnodectl.errors import UsageError

    try:
        return wsmod.find(workspace)
    except UsageError as exc:
        raise UsageError(
            exc.message,
            hint="run it in a workspace, pass --workspace DIR, or "
            "--no-inventory to only print the host key",
        ) from None


def _expected_host_key(ws: Any, node: str | None, expect: str | None) -> str | None:
    """The host key fingerprint the node must show: --expect-host-key and/or the inventory's."""
    if ws is None or node is None:
        return expect
    from xnodectl import nodes

    return nodes.expected_fingerprint(ws, node, expect)


def _pin(ws: Any, name: str, host: str, result: Any) -> None:
    from xnodectl import nodes

    nodes.pin_claimed(
        ws, name, host, result.host_key, owner=result.address, authorized_key=result.authorized_key
    )


def _reopen(name: str, ssh_key: Path | None, workspace: Path | None) -> None:
    from xnodectl import workspace as wsmod
    from xnodectl.errors import UsageError
    from xnodectl.wallet import claim

    ws = wsmod.find(workspace)
    inventory = ws.load()
    entry = inventory.node(name)
    if not entry.host_key:
        raise UsageError(
            f"node '{name}' has no pinned host key",
            hint="claim it first, or add it with: xnodectl node add",
        )
    identity = ssh_key or (Path(inventory.settings.ssh_key) if inventory.settings.ssh_key else None)
    if identity is not None and identity.suffix == ".pub":
        identity = identity.with_suffix("")
    claim.reopen(entry.host, entry.port, entry.user, entry.host_key, identity)
    output.info(f"node '{name}' accepts one more claim")
