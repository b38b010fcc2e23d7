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
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xnodectl import process
from xnodectl.errors import CommandFailed, ExternalError, ToolMissing, UsageError

if TYPE_CHECKING:
    from xnodectl.workspace import Workspace

NODE = "local"
VM_NAME = "xnodectl-local"
QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
_QCOW2_MAGIC = b"QFI\xfb"
# UEFI firmware (qemu-efi images boot with systemd-boot): split CODE/VARS, or one combined file.
OVMF_SPLIT = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
)
OVMF_COMBINED = ("/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd")


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
class Firmware:
    code: str
    vars_template: str | None  # None: `code` is a combined image passed with -bios


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


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def find_firmware() -> Firmware:
    override = os.environ.get("XNODECTL_OVMF")
    if override:
        return Firmware(override, os.environ.get("XNODECTL_OVMF_VARS"))
    for code, template in OVMF_SPLIT:
        if Path(code).is_file() and Path(template).is_file():
            return Firmware(code, template)
    for combined in OVMF_COMBINED:
        if Path(combined).is_file():
            return Firmware(combined, None)
    raise ToolMissing(
        "no UEFI firmware (OVMF) found for QEMU",
        hint="install it (Debian: apt-get install ovmf) or set XNODECTL_OVMF",
    )


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(
            f"'{name}' was not found on PATH",
            hint=process.HINTS.get(
                name, "install QEMU (Debian: apt-get install qemu-system-x86 qemu-utils)"
            ),
        )
    return found


def check_image(image: Path) -> Path:
    try:
        with image.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError as exc:
        raise UsageError(
            f"{image} does not exist",
            hint="build one: xnodectl image build --format qcow2 --owner 0x... "
            f"--ssh-key KEY.pub -o {image}",
        ) from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{image} is a directory", hint="give the .qcow2 file") from exc
    if magic != _QCOW2_MAGIC:
        raise UsageError(
            f"{image} is not a qcow2 image",
            hint="build one with: xnodectl image build --format qcow2",
        )
    return image.resolve()


def qemu_argv(
    *,
    qemu: str,
    accel: str,
    memory: int,
    cpus: int,
    firmware: Firmware,
    vars_file: Path,
    overlay: Path,
    port: int,
    serial: Path,
    pidfile: Path,
) -> list[str]:
    """The QEMU command line of the local Xnode (daemonized; pidfile written by QEMU itself)."""
    if firmware.vars_template is None:
        fw = ["-bios", firmware.code]
    else:
        fw = [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={firmware.code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_file}",
        ]
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg"]
    return [
        qemu,
        "-name",
        VM_NAME,
        "-machine",
        "q35",
        *cpu,
        "-m",
        str(memory),
        "-smp",
        str(cpus),
        *fw,
        "-drive",
        f"file={overlay},if=virtio,format=qcow2,cache=writeback",
        # user-mode networking: nothing but the SSH forward reaches the VM, and only from loopback
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-display",
        "none",
        "-serial",
        f"file:{serial}",
        "-daemonize",
        "-pidfile",
        str(pidfile),
    ]


def _alive(pid: int) -> bool:
    """The pid is running and is our QEMU (not a recycled pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return VM_NAME.encode() in cmdline


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
    if _alive(state.pid):
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
    result = process.run(
        ["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        check=False,
        timeout=15,
    )
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "ssh-ed25519":
            return f"{fields[1]} {fields[2]}"
    return None


def wait_for_ssh(
    port: int,
    pid: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    deadline = clock() + timeout
    while clock() < deadline:
        if not _alive(pid):
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
    inv = ws.load()
    node = inv.nodes.get(NODE) or inventory.Node(host="127.0.0.1")
    node.host, node.port, node.user, node.host_key = "127.0.0.1", port, "root", host_key
    inv.nodes[NODE] = node
    ws.save(inv)
    log(f"inventory: node '{NODE}' -> root@127.0.0.1:{port} (host key pinned)")
    return True


def up(opts: UpOptions, log: Callable[[str], None]) -> VmState:
    """Start the VM, wait for SSH, pin its host key and register it."""
    root = state_dir()
    if status(root) is not None:
        raise UsageError("the local VM is already running", hint="stop it with: xnodectl vm down")
    ws = _workspace(opts.workspace)  # a wrong --workspace fails before QEMU starts
    image = check_image(opts.image or root / "xnodeos.qcow2")
    if not _port_free(opts.port):
        raise UsageError(
            f"port {opts.port} on 127.0.0.1 is in use", hint="choose another: --port N"
        )
    qemu, qemu_img = require_tool(QEMU), require_tool(QEMU_IMG)
    firmware = find_firmware()
    accel = "kvm" if kvm_usable() else "tcg"
    if accel == "tcg":
        log("warning: /dev/kvm is not usable; falling back to slow software emulation (TCG)")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = _paths(root)
    _cleanup(root)
    process.run(
        [
            qemu_img,
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(image),
            str(paths["overlay"]),
        ]
    )
    if firmware.vars_template is not None:
        shutil.copyfile(firmware.vars_template, paths["vars"])
    accel = _start_qemu(accel, image, paths, opts, qemu, firmware, log)
    pid = int(paths["pid"].read_text().strip())
    try:
        log(f"waiting for SSH on 127.0.0.1:{opts.port}")
        host_key = wait_for_ssh(opts.port, pid, opts.timeout)
    except BaseException:
        _stop(pid)
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


def _start_qemu(
    accel: str,
    image: Path,
    paths: dict[str, Path],
    opts: UpOptions,
    qemu: str,
    firmware: Firmware,
    log: Callable[[str], None],
) -> str:
    """Start QEMU daemonized; returns the accelerator that worked. A /dev/kvm that opens can still
    fail once the guest starts (nested virtualization that lacks MSRs QEMU needs): then TCG."""
    while True:
        argv = qemu_argv(
            qemu=qemu,
            accel=accel,
            memory=opts.memory,
            cpus=opts.cpus,
            firmware=firmware,
            vars_file=paths["vars"],
            overlay=paths["overlay"],
            port=opts.port,
            serial=paths["serial"],
            pidfile=paths["pid"],
        )
        log(f"starting {VM_NAME} ({accel}) from {image}")
        try:
            process.run(argv, timeout=60)
        except CommandFailed as exc:
            if accel != "kvm":
                raise
            log(f"warning: QEMU failed with KVM ({exc}); retrying with software emulation (TCG)")
            accel = "tcg"
            continue
        return accel


def _stop(pid: int, grace: float = 10.0) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def down(log: Callable[[str], None], root: Path | None = None) -> bool:
    """Stop the VM and delete its overlay. False when nothing was running."""
    root = root or state_dir()
    state = load_state(root)
    running = state is not None and _alive(state.pid)
    if state is not None and running:
        log(f"stopping {VM_NAME} (pid {state.pid})")
        _stop(state.pid)
    _cleanup(root)
    return running


def ssh_argv(state: VmState, known_hosts: Path, command: Sequence[str]) -> list[str]:
    argv = [
        "ssh",
        "-p",
        str(state.port),
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]
    if state.ssh_key:
        argv += ["-i", state.ssh_key, "-o", "IdentitiesOnly=yes"]
    return [*argv, "root@127.0.0.1", *(["--", *command] if command else [])]


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
