"""xnodectl studio: the workspace in a browser (the studio package is imported only here)."""

from pathlib import Path
from typing import Annotated

import typer

from xnodectl.cli import output


def register(app: typer.Typer) -> None:
    app.command("studio")(studio_cmd)


def studio_cmd(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="Workspace directory (default: find upwards)."),
    ] = None,
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            help="HOST:PORT to serve on (port 0 picks a free one). Beyond loopback, the "
            "workspace owner signs in with a browser wallet (SIWE) instead of the URL's token.",
        ),
    ] = "127.0.0.1:8370",
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Owner address allowed to sign in beyond loopback (default: the operator "
            "wallet's).",
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", help="HOST[:PORT] browsers reach the studio by (repeatable)."),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the studio in the default browser.")
    ] = False,
) -> None:
    """Serve Xnode Studio: catalogue, forms, preview, plan, nodes and deploys in a browser.

    Prints the URL with its access token (like Jupyter); Ctrl-C stops the studio and interrupts
    any deploy it started exactly as Ctrl-C would in a terminal.
    """
    from xnodectl import workspace as wsmod
    from xnodectl.studio import server

    ws = wsmod.find(workspace)
    where = server.Listen.parse(listen)

    def announce(url: str) -> None:
        what = (
            "sign in there with the owner's wallet" if "/auth/" in url else "it carries the token"
        )
        output.info(f"Xnode Studio for {ws.root}; open this URL ({what}):")
        output.result(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    server.serve(ws, where, announce, owner=owner, domains=tuple(domain or ()))
