"""xnodectl vm: QEMU argv, state handling, inventory registration, missing tools.

QEMU itself is not installed here, so `vm up` runs with the runner patched as xnodectl.vm sees it
(qemu-img and qemu calls are recorded; the "VM" is a real sleeping process whose command line
carries the VM name, which is what vm.py checks before trusting or killing a pid) and with the
host-key scan patched (there is no sshd in a fake VM). Everything else is real: files, pids,
signals, the inventory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xnodectl import inventory, process, vm
from xnodectl.cli import app
from xnodectl.errors import CommandFailed, ExternalError, ToolMissing
from xnodectl.process import Result

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH9LnEm9E9UYpxJCj1qQB8JmuCQ16E66vzdsNC64sF46"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "xnodectl" / "vm"


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    path = tmp_path / "xnodeos.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(508))
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "inventory.toml").write_text(
        '[nodes.edge]\nhost = "10.0.0.5"\n\n[nodes.local]\nhost = "old"\ntags = ["dev"]\n'
    )
    monkeypatch.setenv("XNODECTL_WORKSPACE", str(root))
    return root


class FakeQemu:
    """Records argv; 'daemonizes' by starting a real sleeper named like the VM."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.sleeper: process.Spawned | None = None

    def run(self, argv: Sequence[str], **kwargs: object) -> Result:
        self.calls.append(list(argv))
        if argv[0].endswith("qemu-system-x86_64"):
            code = "import time; time.sleep(120)"
            self.sleeper = process.spawn([sys.executable, "-c", code, vm.VM_NAME])
            # Like QEMU's -daemonize: the pidfile appears once the process is fully up.
            deadline = time.monotonic() + 10
            while not vm._alive(self.sleeper.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            pidfile = Path(argv[argv.index("-pidfile") + 1])
            pidfile.write_text(f"{self.sleeper.pid}\n")
        elif argv[0].endswith("qemu-img"):
            Path(argv[-1]).write_bytes(b"QFI\xfb")
        return Result(tuple(argv), 0, "", "", 0.0)


@pytest.fixture
def fake_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeQemu]:
    fake = FakeQemu()
    monkeypatch.setattr(process, "run", fake.run)  # the runner as vm.py sees it
    monkeypatch.setattr(vm, "require_tool", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(vm, "kvm_usable", lambda: False)
    monkeypatch.setattr(vm, "scan_host_key", lambda port: HOST_KEY)
    code, variables = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"code")
    variables.write_bytes(b"vars")
    monkeypatch.setenv("XNODECTL_OVMF", str(code))
    monkeypatch.setenv("XNODECTL_OVMF_VARS", str(variables))
    yield fake
    if fake.sleeper is not None and fake.sleeper.poll() is None:
        fake.sleeper.kill()
        fake.sleeper.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_qemu_argv_exact(tmp_path: Path) -> None:
    fw = vm.Firmware("/fw/CODE.fd", "/fw/VARS.fd")
    argv = vm.qemu_argv(
        qemu="/usr/bin/qemu-system-x86_64", accel="kvm", memory=2048, cpus=2, firmware=fw,
        vars_file=Path("/s/efivars.fd"), overlay=Path("/s/overlay.qcow2"), port=2222,
        serial=Path("/s/serial.log"), pidfile=Path("/s/qemu.pid"),
    )  # fmt: skip
    assert argv == [
        "/usr/bin/qemu-system-x86_64", "-name", "xnodectl-local", "-machine", "q35",
        "-accel", "kvm", "-cpu", "host", "-m", "2048", "-smp", "2",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/s/efivars.fd",
        "-drive", "file=/s/overlay.qcow2,if=virtio,format=qcow2,cache=writeback",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-display", "none", "-serial", "file:/s/serial.log",
        "-daemonize", "-pidfile", "/s/qemu.pid",
    ]  # fmt: skip
    tcg = vm.qemu_argv(
        qemu="q", accel="tcg", memory=1024, cpus=1, firmware=vm.Firmware("/OVMF.fd", None),
        vars_file=Path("/v"), overlay=Path("/o"), port=2200, serial=Path("/s"), pidfile=Path("/p"),
    )  # fmt: skip
    assert tcg[5:9] == ["-accel", "tcg", "-m", "1024"]
    assert "-bios" in tcg and tcg[tcg.index("-bios") + 1] == "/OVMF.fd"
    assert not any("pflash" in a for a in tcg)


def test_up_status_down_registers_local_node(
    state_home: Path, qcow2: Path, workspace: Path, fake_qemu: FakeQemu
) -> None:
    port = free_port()
    code, out, err = run("vm", "up", "--image", str(qcow2), "--port", str(port), "--json")
    assert code == 0, err
    assert "falling back to slow software emulation (TCG)" in err
    qemu_img, qemu = fake_qemu.calls
    overlay = state_home / "overlay.qcow2"
    assert qemu_img == [
        "/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
        str(qcow2.resolve()), str(overlay),
    ]  # fmt: skip
    assert qemu[qemu.index("-netdev") + 1] == f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"
    assert f"file={overlay},if=virtio,format=qcow2,cache=writeback" in qemu
    assert (state_home / "efivars.fd").read_bytes() == b"vars"  # a private copy of the VARS
    data = json.loads(out)
    assert data["running"] is True and data["port"] == port and data["accel"] == "tcg"
    assert (state_home / "known_hosts").read_text() == f"[127.0.0.1]:{port} {HOST_KEY}\n"

    inv = inventory.load(workspace / "inventory.toml")
    local = inv.nodes["local"]
    assert (local.host, local.port, local.user, local.host_key) == (
        "127.0.0.1", port, "root", HOST_KEY,
    )  # fmt: skip
    assert local.tags == ["dev"], "existing fields of node 'local' are kept"
    assert inv.nodes["edge"].host == "10.0.0.5"

    code, out, _ = run("vm", "up", "--image", str(qcow2), "--port", str(port))
    assert code == 2 and out == ""

    state = vm.status()
    assert state is not None and state.pid == data["pid"]
    ssh = vm.ssh_argv(state, state_home / "known_hosts", ["uname", "-a"])
    assert ssh == [
        "ssh", "-p", str(port), "-o", f"UserKnownHostsFile={state_home / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
        "root@127.0.0.1", "--", "uname", "-a",
    ]  # fmt: skip

    code, out, _ = run("vm", "down")
    assert code == 0 and out.strip() == "stopped"
    assert fake_qemu.sleeper is not None and fake_qemu.sleeper.wait(timeout=10) is not None
    assert not overlay.exists() and not (state_home / "state.json").exists()
    assert qcow2.read_bytes()[:4] == b"QFI\xfb", "the image itself is untouched"
    code, out, _ = run("vm", "status")
    assert code == 0 and out.strip() == "not running"
    code, out, _ = run("vm", "down")
    assert code == 0 and out.strip() == "not running"


def test_wrong_workspace_fails_before_qemu_starts(
    state_home: Path, qcow2: Path, tmp_path: Path, fake_qemu: FakeQemu
) -> None:
    code, out, err = run("vm", "up", "--image", str(qcow2), "-w", str(tmp_path / "nowhere"))
    assert code == 2 and out == "" and "inventory.toml" in err
    assert fake_qemu.calls == [] and not (state_home / "overlay.qcow2").exists()


def test_stale_state_of_a_dead_vm_is_cleaned(state_home: Path) -> None:
    state_home.mkdir(parents=True)
    sleeper = process.spawn([sys.executable, "-c", "pass"])
    sleeper.wait()
    stale = vm.VmState(sleeper.pid, 2222, "/i", "/o", "kvm", HOST_KEY, None, 0.0)
    (state_home / "state.json").write_text(json.dumps(stale.as_dict()))
    (state_home / "overlay.qcow2").write_bytes(b"x")
    assert vm.status() is None
    assert not (state_home / "state.json").exists() and not (state_home / "overlay.qcow2").exists()


def test_recycled_pid_of_another_program_is_not_trusted(state_home: Path) -> None:
    state_home.mkdir(parents=True)
    mine = vm.VmState(os.getpid(), 2222, "/i", "/o", "kvm", HOST_KEY, None, 0.0)
    (state_home / "state.json").write_text(json.dumps(mine.as_dict()))
    assert vm.status() is None  # pytest's own pid is not our QEMU: never signalled
    assert vm.down(log=lambda _: None) is False


def test_up_without_qemu_is_tool_missing(
    state_home: Path, qcow2: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, err = run("vm", "up", "--image", str(qcow2), "--port", str(free_port()))
    assert code == 5 and out == ""
    assert "'qemu-system-x86_64' was not found" in err and "apt-get install" in err
    assert "Traceback" not in err and not (state_home / "overlay.qcow2").exists()


@pytest.mark.parametrize("content", [b"", b"not a qcow2 image"])
def test_up_rejects_non_qcow2(state_home: Path, tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(content)
    code, _, err = run("vm", "up", "--image", str(image))
    assert code == 2 and "is not a qcow2 image" in err and len(err.strip().splitlines()) == 1


def test_up_missing_image_hints_at_image_build(state_home: Path, tmp_path: Path) -> None:
    code, _, err = run("vm", "up", "--image", str(tmp_path / "none.qcow2"))
    assert code == 2 and "does not exist" in err and "image build --format qcow2" in err


def test_ssh_when_not_running(state_home: Path) -> None:
    code, _, err = run("vm", "ssh")
    assert code == 2 and "not running" in err and "xnodectl vm up" in err


def test_wait_for_ssh_times_out_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "_alive", lambda pid: True)
    monkeypatch.setattr(vm, "scan_host_key", lambda port: None)
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(ExternalError, match="did not answer within 30 s"):
        vm.wait_for_ssh(2222, 1, 30, clock=lambda: float(next(ticks)), sleep=lambda s: None)


# ---- the NixOS VM tests' Python test scripts --------------------------------------------------

VM_TESTS = Path(__file__).resolve().parent.parent / "vm-tests"
STUB_FLAKE = """
let
  pkgs = {
    path = %(fake)s;
    stdenv.hostPlatform.system = "x86_64-linux";
    lib.mkForce = x: x;
    testers.runNixOSTest = test: test;
  };
  self = {
    nixosModules.default = { };
    packages.x86_64-linux.xnodectl = "/nix/store/00000000000000000000000000000000-xnodectl";
    lib.mkXnode = args: {
      config.system.build.toplevel = "/nix/store/00000000000000000000000000000000-installed";
    };
  };
  test = import %(file)s { inherit pkgs self; };
  nodes.gen2.system.build.toplevel = "/nix/store/00000000000000000000000000000000-gen2";
in
  if builtins.isFunction test.testScript
  then test.testScript { inherit nodes; }
  else test.testScript
"""


@pytest.mark.parametrize("name", ["xnodeos-base", "xnodeos-installer"])
def test_vm_test_scripts_are_valid_python(tmp_path: Path, name: str) -> None:
    """The test scripts can only run under a current Nix with KVM (CI); here: they evaluate from
    the real .nix file (with stand-ins for pkgs and self) and compile as Python."""
    from tests.nixcheck import eval_json

    fake = tmp_path / "nixpkgs"
    (fake / "nixos" / "tests").mkdir(parents=True)
    (fake / "nixos" / "tests" / "ssh-keys.nix").write_text(
        '_: { snakeOilPrivateKey = "/nix/store/k"; '
        'snakeOilPublicKey = "ecdsa-sha2-nistp256 AAAA snakeoil"; }'
    )
    expr = STUB_FLAKE % {"fake": fake, "file": VM_TESTS / f"{name}.nix"}
    script = eval_json(expr)
    assert isinstance(script, str) and "${" not in script
    compile(script, f"{name} testScript", "exec")


def _qemu_ready() -> bool:
    import shutil

    try:
        vm.find_firmware()
    except ToolMissing:
        return False
    return bool(shutil.which(vm.QEMU) and shutil.which(vm.QEMU_IMG))


@pytest.mark.slow
@pytest.mark.skipif(not _qemu_ready(), reason="needs qemu-system-x86_64, qemu-img and OVMF")
def test_real_qemu_smoke(
    state_home: Path, tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real QEMU (KVM when usable) on a blank disk: the argv is accepted, the VM daemonizes with
    its pidfile, the SSH forward listens on loopback, `down` stops it and removes the overlay.
    No OS boots from a blank disk, so only the host-key scan is stood in for."""
    import socket

    base = tmp_path / "blank.qcow2"
    process.run([vm.QEMU_IMG, "create", "-q", "-f", "qcow2", str(base), "64M"])
    monkeypatch.setattr(vm, "scan_host_key", lambda port: HOST_KEY)
    port = free_port()
    lines: list[str] = []
    state = vm.up(vm.UpOptions(image=base, port=port, memory=256, cpus=1), log=lines.append)
    try:
        assert vm.status() == state
        # KVM when it works; a /dev/kvm that opens but fails once the guest starts (nested
        # virtualization) falls back to TCG and says so.
        kvm_failed = any("retrying with software emulation" in line for line in lines)
        assert state.accel == ("kvm" if vm.kvm_usable() and not kvm_failed else "tcg")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # QEMU's user-mode network forwards the port
        assert inventory.load(workspace / "inventory.toml").nodes["local"].port == port
    finally:
        assert vm.down(log=lambda _: None) is True
    assert not Path(f"/proc/{state.pid}").exists() or not vm._alive(state.pid)
    assert not (state_home / "overlay.qcow2").exists()
    assert base.read_bytes()[:4] == b"QFI\xfb"


def test_kvm_failure_falls_back_to_tcg(
    state_home: Path, tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU that dies under KVM (as it does on hosts whose nested KVM lacks MSRs) is started again
    with TCG, and the log says why; a TCG failure is still an error."""
    image = tmp_path / "base.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    started: list[str] = []

    def fake_run(argv: list[str], **_: object) -> Result:
        if argv[0] == vm.QEMU_IMG:
            Path(argv[-1]).write_bytes(b"")
            return Result(tuple(argv), 0, "", "", 0.0)
        accel = argv[argv.index("-accel") + 1]
        started.append(accel)
        if accel == "kvm":
            raise CommandFailed(argv, 1, "kvm_buf_set_msrs: Assertion failed.")
        Path(argv[argv.index("-pidfile") + 1]).write_text(f"{os.getpid()}\n")
        return Result(tuple(argv), 0, "", "", 0.0)

    monkeypatch.setattr(vm, "kvm_usable", lambda: True)
    monkeypatch.setattr(vm, "require_tool", lambda name: name)
    monkeypatch.setattr(process, "run", fake_run)
    monkeypatch.setattr(vm, "wait_for_ssh", lambda port, pid, timeout: HOST_KEY)
    lines: list[str] = []
    state = vm.up(vm.UpOptions(image=image, port=free_port()), log=lines.append)
    assert started == ["kvm", "tcg"]
    assert state.accel == "tcg"
    assert any("QEMU failed with KVM" in line and "kvm_buf_set_msrs" in line for line in lines)
