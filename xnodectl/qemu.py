"""QEMU for the local Xnode: the tools and UEFI firmware it needs, the image it boots, its exact
command line, and starting and stopping the daemonized process."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xnodectl import process
from xnodectl.errors import CommandFailed, ToolMissing, UsageError

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
class Firmware:
    code: str
    vars_template: str | None  # None: `code` is a combined image passed with -bios


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


def alive(pid: int) -> bool:
    """The pid is running and is our QEMU (not a recycled pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return VM_NAME.encode() in cmdline


def start(
    argv_for: Callable[[str], list[str]], log: Callable[[str], None], accel: str, image: Path
) -> str:
    """Start QEMU daemonized with `argv_for(accel)`; returns the accelerator that worked. A
    /dev/kvm that opens can still fail once the guest starts (nested virtualization that lacks
    MSRs QEMU needs): then TCG."""
    while True:
        log(f"starting {VM_NAME} ({accel}) from {image}")
        try:
            process.run(argv_for(accel), timeout=60)
        except CommandFailed as exc:
            if accel != "kvm":
                raise
            log(f"warning: QEMU failed with KVM ({exc}); retrying with software emulation (TCG)")
            accel = "tcg"
            continue
        return accel


def create_overlay(qemu_img: str, image: Path, overlay: Path) -> None:
    """A copy-on-write overlay over the pristine image: the VM writes only to it."""
    process.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)]
    )


def stop(pid: int, grace: float = 10.0) -> None:
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
