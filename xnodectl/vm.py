"""A local Xnode: the XnodeOS qcow2 image booted in QEMU, registered as inventory node 'local'.

The image stays pristine: QEMU writes to a copy-on-write overlay in the state directory
($XDG_STATE_HOME/xnodectl/vm, default ~/.local/state/xnodectl/vm), which `vm down` deletes. SSH is
forwarded from 127.0.0.1:<port> only. The VM's host key is read once it boots and pinned in the
state directory's known_hosts and in the inventory; the connection never leaves loopback, so
trusting the first key of a VM we just started from our own image is sound.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnodectl import process, qemu
from xnodectl.errors import ExternalError, UsageError

if TYPE_CHECKING:
    from xnodectl.workspace import Workspace

NODE = "local"


@dataclass(frozen=True)
class UpOptions:
    image: Path | None
    port: int = 2222
    memory: int = 2048
    cpus: int = 2
    timeout: int = 300
    ssh_key: Path | None = None
    workspace: Path | None = None  # None: the workspace found upwards, if any


@dataclass(frozen=True)
class VmState:
    pid: int
    port: int
    image: str
    overlay: str
    accel: str
    host_key: str
    ssh_key: str | None
    started: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "xnodectl" / "vm"


def _paths(root: Path) -> dict[str, Path]:
    return {
        name: root / file
        for name, file in {
            "state": "state.json",
            "pid": "qemu.pid",
            "overlay": "overlay.qcow2",
            "known_hosts": "known_hosts",
            "serial": "serial.log",
            "vars": "efivars.fd",
        }.items()
    }


def load_state(root: Path | None = None) -> VmState | None:
    path = _paths(root or state_dir())["state"]
    try:
        return VmState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)  # unreadable leftovers: treat as not running
        return None


def status(root: Path | None = None) -> VmState | None:
    """The running VM's state; stale state of a VM that died is cleaned up."""
    root = root or state_dir()
    state = load_state(root)
    if state is None:
        return None
    if qemu.alive(state.pid):
        return state
    _cleanup(root)
    return None


def _cleanup(root: Path) -> None:
    for name, path in _paths(root).items():
        if name != "serial":  # keep the last console log for post-mortems
            path.unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def scan_host_key(port: int) -> str | None:
    """The VM's ed25519 host key as 'ssh-ed25519 AAAA...', or None while sshd is not up."""
    from xnodectl import remote

    return remote.keyscan("127.0.0.1", port)


def wait_for_ssh(
    port: int,
    pid: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    deadline = clock() + timeout
    while clock() < deadline:
        if not qemu.alive(pid):
            raise ExternalError(
                "QEMU exited while the VM was booting",
                hint=f"see the console log {_paths(state_dir())['serial']}",
            )
        key = scan_host_key(port)
        if key is not None:
            return key
        sleep(2)
    raise ExternalError(
        f"the VM's SSH did not answer within {timeout:.0f} s",
        hint="raise --timeout (without KVM booting is slow) or read "
        f"{_paths(state_dir())['serial']}",
    )


def _workspace(explicit: Path | None) -> Workspace | None:
    """The workspace to register node 'local' in: the one given (must exist), else one found."""
    from xnodectl import workspace

    if explicit is not None:
        return workspace.find(explicit)
    try:
        return workspace.find()
    except UsageError:
        return None


def register_local(
    ws: Workspace | None, port: int, host_key: str, log: Callable[[str], None]
) -> bool:
    """Add or update node 'local' in the workspace's inventory (if there is one)."""
    from xnodectl import inventory

    if ws is None:
        log("no workspace here: node 'local' was not added (run `vm up` inside a workspace)")
        return False
    with ws.edit() as inv:
        node = inv.nodes.get(NODE) or inventory.Node(host="127.0.0.1")
        node.host, node.port, node.user, node.host_key = "127.0.0.1", port, "root", host_key
        inv.nodes[NODE] = node
    log(f"inventory: node '{NODE}' -> root@127.0.0.1:{port} (host key pinned)")
    return True


def up(opts: UpOptions, log: Callable[[str], None]) -> VmState:
    """Start the VM, wait for SSH, pin its host key and register it."""
    root = state_dir()
    if status(root) is not None:
        raise UsageError("the local VM is already running", hint="stop it with: xnodectl vm down")
    ws = _workspace(opts.workspace)  # a wrong --workspace fails before QEMU starts
    image = qemu.check_image(opts.image or root / "xnodeos.qcow2")
    if not _port_free(opts.port):
        raise UsageError(
            f"port {opts.port} on 127.0.0.1 is in use", hint="choose another: --port N"
        )
    qemu_bin, qemu_img = qemu.require_tool(qemu.QEMU), qemu.require_tool(qemu.QEMU_IMG)
    firmware = qemu.find_firmware()
    accel = "kvm" if qemu.kvm_usable() else "tcg"
    if accel == "tcg":
        log("warning: /dev/kvm is not usable; falling back to slow software emulation (TCG)")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = _paths(root)
    _cleanup(root)
    qemu.create_overlay(qemu_img, image, paths["overlay"])
    if firmware.vars_template is not None:
        shutil.copyfile(firmware.vars_template, paths["vars"])
    accel = qemu.start(
        lambda accel: qemu.qemu_argv(
            qemu=qemu_bin,
            accel=accel,
            memory=opts.memory,
            cpus=opts.cpus,
            firmware=firmware,
            vars_file=paths["vars"],
            overlay=paths["overlay"],
            port=opts.port,
            serial=paths["serial"],
            pidfile=paths["pid"],
        ),
        log,
        accel,
        image,
    )
    pid = int(paths["pid"].read_text().strip())
    try:
        log(f"waiting for SSH on 127.0.0.1:{opts.port}")
        host_key = wait_for_ssh(opts.port, pid, opts.timeout)
    except BaseException:
        qemu.stop(pid)
        _cleanup(root)
        raise
    paths["known_hosts"].write_text(f"[127.0.0.1]:{opts.port} {host_key}\n")
    state = VmState(
        pid=pid,
        port=opts.port,
        image=str(image),
        overlay=str(paths["overlay"]),
        accel=accel,
        host_key=host_key,
        ssh_key=str(opts.ssh_key.expanduser()) if opts.ssh_key else None,
        started=time.time(),
    )
    paths["state"].write_text(json.dumps(state.as_dict(), indent=2) + "\n")
    register_local(ws, opts.port, host_key, log)
    return state


def down(log: Callable[[str], None], root: Path | None = None) -> bool:
    """Stop the VM and delete its overlay. False when nothing was running."""
    root = root or state_dir()
    state = load_state(root)
    running = state is not None and qemu.alive(state.pid)
    if state is not None and running:
        log(f"stopping {qemu.VM_NAME} (pid {state.pid})")
        qemu.stop(state.pid)
    _cleanup(root)
    return running


def ssh_argv(state: VmState, known_hosts: Path, command: Sequence[str]) -> list[str]:
    """An interactive ssh to the VM; the command's words are joined as ssh itself joins them."""
    from xnodectl import remote

    options = remote.pinned_options(state.port, known_hosts, state.ssh_key)
    return remote.ssh_argv(options, "root", "127.0.0.1", " ".join(command) or None)


def ssh(command: Sequence[str], root: Path | None = None) -> int:
    """Run ssh to the VM with the terminal attached; its exit code."""
    root = root or state_dir()
    state = status(root)
    if state is None:
        raise UsageError("the local VM is not running", hint="start it with: xnodectl vm up")
    proc = process.spawn(
        ssh_argv(state, _paths(root)["known_hosts"], command), stdout=None, stderr=None
    )
    return proc.wait()
