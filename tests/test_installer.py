"""xnodeos/install.sh's disk rules, run with the real bash and cmp against disk images (files):
a disk is empty only when its first MiB is all zeros, whatever wipefs says (plain dm-crypt, a raw
volume or a bare database carry no signature); another disk already carrying one of the node's
partition UUIDs (an earlier install) is found before anything is written. `lsblk` and `wipefs`
are stand-ins that report what a signature-less disk reports: one device, no signature."""

from __future__ import annotations

from pathlib import Path

from xnodectl import process

SCRIPT = Path(__file__).resolve().parent.parent / "xnodeos" / "install.sh"
ROOT_UUID = "0a1b2c3d-0000-4000-8000-00000000000a"
ESP_UUID = "0a1b2c3d-0000-4000-8000-00000000000b"


def _run(tmp_path: Path, call: str, lsblk: str = "") -> process.Result:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "lsblk").write_text(
        "#!/bin/sh\n"
        # `lsblk -nro NAME DEV`: the device alone (no partitions); a table for the UUID scan.
        'case "$*" in *NAME,PKNAME,PARTUUID*) cat "$LSBLK_TABLE" ;; *) basename "$3" ;; esac\n'
    )
    (bin_dir / "wipefs").write_text("#!/bin/sh\nexit 0\n")  # no signature, as for raw data
    for tool in ("lsblk", "wipefs"):
        (bin_dir / tool).chmod(0o755)
    table = tmp_path / "lsblk.txt"
    table.write_text(lsblk)
    script = (
        f"set -euo pipefail; XNODE_INSTALL_FUNCTIONS_ONLY=1; source {SCRIPT}; "
        f"root_uuid={ROOT_UUID}; esp_uuid={ESP_UUID}; {call}"
    )
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LSBLK_TABLE": str(table)}
    return process.run(["bash", "-c", script], env=env, check=False)


def _disk(tmp_path: Path, name: str, data_at: int | None = None) -> Path:
    disk = tmp_path / name
    with disk.open("wb") as f:
        f.truncate(4 * 1024 * 1024)
        if data_at is not None:
            f.seek(data_at)
            f.write(b"\x8f\x13 ciphertext without any header")
    return disk


def test_a_blank_disk_is_empty(tmp_path: Path) -> None:
    disk = _disk(tmp_path, "blank")
    assert _run(tmp_path, f"is_empty {disk}").returncode == 0


def test_data_without_a_signature_is_not_empty(tmp_path: Path) -> None:
    for offset in (0, 65536, 1024 * 1024 - 1):
        disk = _disk(tmp_path, f"data-{offset}", data_at=offset)
        assert _run(tmp_path, f"is_empty {disk}").returncode == 1, offset


def test_data_after_the_first_mib_is_not_looked_at(tmp_path: Path) -> None:
    """The rule is the first MiB (the issue's bound): later bytes alone do not count."""
    disk = _disk(tmp_path, "late", data_at=2 * 1024 * 1024)
    assert _run(tmp_path, f"is_empty {disk}").returncode == 0


def test_an_earlier_install_on_another_disk_is_found(tmp_path: Path) -> None:
    table = (
        "/dev/vda\n"
        f"/dev/vda1 /dev/vda {ESP_UUID.upper()}\n"
        f"/dev/vda2 /dev/vda {ROOT_UUID}\n"
        "/dev/vdb\n"
        "/dev/vdb1 /dev/vdb 11111111-2222-4333-8444-555555555555\n"
    )
    found = _run(tmp_path, "uuid_taken /dev/vdb", lsblk=table)
    assert found.returncode == 0 and found.stdout.strip() == "/dev/vda1"
    # The target itself carrying them (a reinstall onto the same disk) is not a conflict.
    same = _run(tmp_path, "uuid_taken /dev/vda", lsblk=table)
    assert same.returncode == 0 and same.stdout.strip() == ""
