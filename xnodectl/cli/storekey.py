"""store-key show/rotate/retire/signers: the workspace owner's Nix store signing key."""

from pathlib import Path
from typing import Annotated, Any

import typer

from xnodectl.cli import output

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
WsOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (default: find upwards)."),
]


def register(app: typer.Typer) -> None:
    from xnodectl.cli import new_app

    group = new_app(
        "The owner's Nix store signing key: deploys sign every closure with it, nodes accept "
        "paths from peers and caches only when it (or the official cache) signed them."
    )
    group.command("show")(show_cmd)
    group.command("rotate")(rotate_cmd)
    group.command("retire")(retire_cmd)
    group.command("signers")(signers_cmd)
    app.add_typer(group, name="store-key")


def _ws(workspace: Path | None) -> Any:
    from xnodectl import workspace as wsmod

    return wsmod.find(workspace)


def show_cmd(workspace: WsOpt = None) -> None:
    """Print the public key (created on first use) and every key the nodes trust."""
    from xnodectl import storekey

    ws = _ws(workspace)
    key = storekey.ensure(ws)
    output.result(key.public)
    for other in ws.load().settings.store_keys:
        if other != key.public:
            output.info(f"also trusted (rotated out): {other}")


def rotate_cmd(workspace: WsOpt = None) -> None:
    """Make a new key; the old public key stays trusted until `retire`. Deploy to roll it out."""
    from xnodectl import storekey

    key = storekey.rotate(_ws(workspace))
    output.result(key.public)
    output.info("deploy every node, then `xnodectl store-key retire` and deploy again")


def retire_cmd(workspace: WsOpt = None) -> None:
    """Stop trusting every key but the current one (takes effect on the next deploy)."""
    from xnodectl import storekey

    for key in storekey.retire(_ws(workspace)):
        output.result(f"retired {key}")


def signers_cmd(
    node: Annotated[str, typer.Argument(help="Node name.", show_default=False)],
    as_json: JsonOpt = False,
    workspace: WsOpt = None,
) -> None:
    """Who signed each store path of the system NODE runs; exits 1 if some path carries no valid
    signature by a trusted key (the workspace's or the official cache's)."""
    import asyncio

    from xnodectl.deploy import signers

    found = asyncio.run(signers.signers(_ws(workspace), node))
    if as_json:
        output.as_json(found.to_json())
    else:
        rows = [[name, str(count)] for name, count in sorted(found.by_signer().items())]
        output.result(f"{found.node}: {found.system} ({len(found.paths)} paths)")
        output.result(output.table(rows, ["SIGNER", "PATHS"]))
        for path in found.untrusted:
            output.info(f"no valid trusted signature: {path}")
    if found.untrusted:
        raise typer.Exit(1)
