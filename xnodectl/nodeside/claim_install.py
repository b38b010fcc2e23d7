"""The root half of the claim: put the key the claim service approved into root's authorized_keys.

The claim service faces the network and runs as its own unprivileged user; it can only write
`<state dir>/authorize.pub`. A systemd path unit then starts `xnode-claim install` as root, which
re-checks that file (a regular file, one plain public key, no options) and appends the key. Once
a key is installed, a root-owned marker closes claims: even a compromised claim service cannot
have a second key installed until the owner runs `xnode-claim reopen` over SSH.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from pathlib import Path

from xnodectl import sshkeys

PENDING = "authorize.pub"
RESULT = "installed.json"  # the installer's answer to the waiting claim service
MARKER = Path("/var/lib/xnode/ssh/claimed")  # root-owned; the claim service cannot write here
_MAX = 16 * 1024


class InstallRefused(Exception):
    pass


def append_key(path: Path, key: sshkeys.PublicKey) -> None:
    """Append `key` to an authorized_keys file (0600) unless the same key is already there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    # Same key already there (whatever its comment): nothing to add.
    known = {line.split()[1] for line in existing.splitlines() if len(line.split()) >= 2}
    if key.line().split()[1] in known:
        return
    # Never glue the new key onto a last line that lacks its newline.
    line = ("\n" if existing and not existing.endswith("\n") else "") + key.line() + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_pending(path: Path) -> sshkeys.PublicKey:
    """The pending key, read without following a link the unprivileged writer may have planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise InstallRefused(f"cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX:
            raise InstallRefused(f"{path} is not a small regular file")
        text = handle.read(_MAX).decode("utf-8", errors="replace")
    try:
        return sshkeys.parse(text, "pending key")
    except ValueError as exc:
        raise InstallRefused(str(exc)) from None


def install(state_dir: Path, authorized_keys: Path, marker: Path = MARKER) -> str | None:
    """Install the pending key if there is one; its fingerprint (None: nothing pending).

    The answer goes to `<state dir>/installed.json` ({"key": fp} or {"error": why}) for the claim
    service, which waits for it."""
    pending = state_dir / PENDING
    if not pending.exists() and not pending.is_symlink():
        return None
    try:
        _check_open(marker)
        key = _read_pending(pending)
        append_key(authorized_keys, key)
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.write_text(json.dumps({"key": key.fingerprint, "time": int(time.time())}) + "\n")
    except InstallRefused as exc:
        _answer(state_dir, {"error": str(exc)})
        raise
    finally:
        pending.unlink(missing_ok=True)
    _answer(state_dir, {"key": key.fingerprint})
    return key.fingerprint


def _check_open(marker: Path) -> None:
    if marker.exists():
        raise InstallRefused(f"claims are closed ({marker} exists); the owner can reopen")


def _answer(state_dir: Path, data: dict[str, str]) -> None:
    """Written by root into a directory the claim service owns: never through a planted link."""
    # A fresh name (O_EXCL: never an existing file or link), then renamed over the answer, so
    # the waiting service never reads it half written and a link there is replaced, not followed.
    tmp = state_dir / f".{RESULT}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    tmp.replace(state_dir / RESULT)


def hand_over(state_dir: Path, key: sshkeys.PublicKey, timeout: float = 8) -> None:
    """The claim service's side: leave the key for the installer, wait for its answer."""
    result = state_dir / RESULT
    result.unlink(missing_ok=True)
    tmp = state_dir / f".{PENDING}.tmp"
    tmp.write_text(key.line() + "\n")
    tmp.replace(state_dir / PENDING)  # the path unit sees the file complete or not at all
    deadline = time.monotonic() + timeout
    while not result.exists():
        if time.monotonic() > deadline:
            (state_dir / PENDING).unlink(missing_ok=True)
            # Within the request deadline (10 s), so the client still gets this answer.
            raise InstallRefused("the key installer did not answer (xnode-claim-install)")
        time.sleep(0.05)
    try:
        answer = json.loads(result.read_text())
    except (OSError, json.JSONDecodeError):
        answer = {"error": "unreadable answer from the key installer"}
    result.unlink(missing_ok=True)
    if answer.get("key") != key.fingerprint:
        raise InstallRefused(str(answer.get("error") or "the installer installed another key"))
