"""image build; vm up/down/ssh/status: XnodeOS images and a local Xnode in QEMU."""

import dataclasses
import shlex
from pathlib import Path
from typing import Annotated

import typer

from xnodectl.cli import output
from xnodectl.cli.options import JsonOpt
from xnodectl.image_format import ImageFormat
from xnodectl.units import human_bytes


def register(app: typer.Typer) -> None:
    from xnodectl.cli import new_app

    image = new_app("Build XnodeOS images (installer ISO, qcow2, raw) for a node.")
    image.command("build")(build_cmd)
    app.add_typer(image, name="image")

    vm = new_app("Run XnodeOS locally in QEMU as inventory node 'local'.")
    vm.command("up")(vm_up)
    vm.command("down")(vm_down)
    vm.command("ssh")(vm_ssh)
    vm.command("status")(vm_status)
    app.add_typer(vm, name="vm")


def build_cmd(
    owner: Annotated[
        str,
        typer.Option(
            "--owner",
            metavar="ADDRESS",
            help="Owner's Ethereum address (0x...).",
            show_default=False,
        ),
    ],
    ssh_key: Annotated[
        Path | None,
        typer.Option(
            "--ssh-key",
            help="SSH public key file allowed to log in as root (e.g. ~/.ssh/id_ed25519.pub). "
            "Without it the node is reachable only through `xnodectl claim`.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        ImageFormat,
        typer.Option(
            "--format", help="Image format: iso (installer), qcow2 or raw (bootable disk images)."
        ),
    ] = ImageFormat.ISO,
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            help="Node hostname (default: xnode-<first 8 hex digits of the owner>).",
            show_default=False,
        ),
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            "--disk",
            help="Installer only: install onto this /dev/disk/by-id/... disk (default: the "
            "only empty, non-removable disk).",
            show_default=False,
        ),
    ] = None,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Installer only: allow erasing --disk if it holds data.")
    ] = False,
    system: Annotated[
        str, typer.Option("--system", help="Nix system of the node.")
    ] = "x86_64-linux",
    out: Annotated[
        Path | None,
        typer.Option(
            "-o", "--out", help="Copy the image to this file or directory.", show_default=False
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the generated flake and the nix build command; build nothing."
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Build twice and report whether the images are bit-identical."
        ),
    ] = False,
    xnodectl_flake: Annotated[
        str | None,
        typer.Option(
            "--xnodectl-flake",
            metavar="FLAKE",
            help="Flake providing XnodeOS (default: this checkout, else upstream).",
            show_default=False,
        ),
    ] = None,
    store_key: Annotated[
        list[str] | None,
        typer.Option(
            "--store-key",
            help="Nix public key (name:base64) whose signatures the node accepts on paths from "
            "peers and caches (repeatable; default: the workspace's settings.store_keys).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an XnodeOS image with this node's owner and SSH key baked in.

    Prints the image path, its size and sha256 on stdout; progress goes to stderr.
    """
    from xnodectl import image, sshkeys, workspace

    req = image.request(
        owner=owner,
        key=sshkeys.read(ssh_key.expanduser()) if ssh_key is not None else None,
        fmt=fmt,
        hostname=hostname,
        system=system,
        disk=disk,
        wipe=wipe,
        xnodectl_flake=xnodectl_flake or workspace.default_flake(),
        store_keys=store_key or (),
    )
    if store_key is None:  # after every check of the input: a bad one leaves the workspace as is
        req = dataclasses.replace(req, store_keys=tuple(_workspace_store_keys(dry_run)))
    if req.key is None:
        output.info(
            "note: no --ssh-key: the node will run the claim service; authorize a key with "
            "`xnodectl claim HOST --ssh-key KEY.pub` after its first boot"
        )
    plan = image.plan(req)
    if dry_run:
        _show_plan(plan, as_json)
        return
    built = image.build(plan, out=out, check=check, log=output.info)
    _show_image(built, as_json)


def _workspace_store_keys(dry_run: bool) -> list[str]:
    """The current workspace's trusted store keys (its owner key made now for a build, as a
    deploy makes it); none outside a workspace."""
    from xnodectl import storekey, workspace
    from xnodectl.errors import UsageError

    try:
        ws = workspace.find()
    except UsageError:
        return []
    return storekey.for_image(ws, create=not dry_run)


def _show_plan(plan: object, as_json: bool) -> None:
    from xnodectl import image

    assert isinstance(plan, image.Plan)
    argv = plan.argv(image.DRY_RUN_DIR)
    if as_json:
        output.as_json(
            {"directory": str(image.DRY_RUN_DIR), "files": dict(plan.files), "argv": argv}
        )
        return
    for name, text in plan.files.items():
        output.result(f"# ---- {image.DRY_RUN_DIR}/{name}")
        output.result(text.rstrip("\n"))
    output.result("# ---- nix build command (run in a git repository holding the files above)")
    output.result(shlex.join(argv))


def _show_image(built: object, as_json: bool) -> None:
    from xnodectl import image

    assert isinstance(built, image.Image)
    data: dict[str, object] = {
        "path": str(built.path),
        "store_path": built.store_path,
        "format": built.format.value,
        "size": built.size,
        "sha256": built.sha256,
    }
    if built.reproducible is not None:
        data["reproducible"] = built.reproducible
    if as_json:
        output.as_json(data)
        return
    output.result(str(built.path))
    output.result(f"size: {built.size} bytes ({human_bytes(built.size)})")
    output.result(f"sha256: {built.sha256}")
    if built.reproducible is not None:
        output.result(
            "reproducible: "
            + (
                "yes, two builds are bit-identical"
                if built.reproducible
                else "NO, the two builds differ"
            )
        )


Port = Annotated[
    int, typer.Option("--port", min=1, max=65535, help="Host port forwarded to the VM's SSH port.")
]


def vm_up(
    image_path: Annotated[
        Path | None,
        typer.Option(
            "--image",
            help="XnodeOS qcow2 image (`image build --format qcow2`; default: "
            "xnodeos.qcow2 in the VM state directory).",
            show_default=False,
        ),
    ] = None,
    port: Port = 2222,
    memory: Annotated[int, typer.Option("--memory", min=512, help="RAM in MiB.")] = 2048,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Virtual CPUs.")] = 2,
    timeout: Annotated[
        int, typer.Option("--timeout", min=10, help="Seconds to wait for SSH.")
    ] = 300,
    ssh_key: Annotated[
        Path | None,
        typer.Option(
            "--ssh-key",
            help="Private key to log in with (its .pub must be baked into the image).",
            show_default=False,
        ),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "-w",
            "--workspace",
            help="Workspace to add node 'local' to (default: find upwards).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Boot XnodeOS in QEMU (KVM when available), wait for SSH and add it as node 'local'."""
    from xnodectl import vm

    options = vm.UpOptions(
        image=image_path,
        port=port,
        memory=memory,
        cpus=cpus,
        timeout=timeout,
        ssh_key=ssh_key,
        workspace=workspace,
    )
    state = vm.up(options, log=output.info)
    _show_state(state, as_json)


def vm_down(as_json: JsonOpt = False) -> None:
    """Stop the local VM and delete its overlay disk (the image itself is untouched)."""
    from xnodectl import vm

    stopped = vm.down(log=output.info)
    if as_json:
        output.as_json({"stopped": stopped})
    else:
        output.result("stopped" if stopped else "not running")


def vm_ssh(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="Command to run on the VM (default: an interactive shell).", show_default=False
        ),
    ] = None,
) -> None:
    """Open SSH to the local VM as root (pinned host key)."""
    from xnodectl import vm

    raise typer.Exit(vm.ssh(command or []))


def vm_status(as_json: JsonOpt = False) -> None:
    """Show whether the local VM runs, its pid, SSH port and image."""
    from xnodectl import vm

    _show_state(vm.status(), as_json)


def _show_state(state: object, as_json: bool) -> None:
    from xnodectl import vm

    assert state is None or isinstance(state, vm.VmState)
    if state is None:
        if as_json:
            output.as_json({"running": False})
        else:
            output.result("not running")
        return
    data = {"running": True, **state.as_dict()}
    if as_json:
        output.as_json(data)
        return
    output.result(output.table([[k, str(v)] for k, v in data.items()], ["KEY", "VALUE"]))
