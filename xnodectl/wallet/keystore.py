"""The operator wallet: one standard v3 JSON keystore (scrypt), mode 0600, never the key in clear.

The password comes from a prompt or from $XNODECTL_WALLET_PASSWORD (CI). Neither the password nor
the key is ever printed or logged; errors name the file, never its content.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

from xnodectl.errors import UsageError, WalletError
from xnodectl.wallet.signer import KeystoreSigner

logger = logging.getLogger(__name__)

PASSWORD_ENV = "XNODECTL_WALLET_PASSWORD"
# eth-keyfile's default scrypt cost (n = 2^18, r = 8, p = 1): about 0.6 s and 256 MiB per unlock.
DEFAULT_SCRYPT_N = 2**18
MIN_PASSWORD = 8


def default_path() -> Path:
    """$XDG_CONFIG_HOME/xnodectl/wallet.json (default ~/.config/xnodectl/wallet.json)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xnodectl" / "wallet.json"


def read_password(*, confirm: bool, path: Path) -> str:
    """The wallet password: $XNODECTL_WALLET_PASSWORD if set, else a prompt on the terminal."""
    if not confirm and not path.exists():  # unlocking: say a missing wallet before asking
        raise WalletError(
            f"no wallet at {path}",
            hint="create one with: xnodectl wallet new, or pass --wallet PATH",
        )
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        password = from_env
    else:
        if not sys.stdin.isatty():
            raise WalletError(
                f"a password is needed for {path} and there is no terminal",
                hint=f"set {PASSWORD_ENV} for non-interactive use",
            )
        password = getpass.getpass(f"password for {path}: ", stream=sys.stderr)
    if confirm and len(password) < MIN_PASSWORD:  # said before asking for it a second time
        raise WalletError(
            f"the password is shorter than {MIN_PASSWORD} characters",
            hint="choose a longer password",
        )
    if (
        confirm
        and from_env is None
        and getpass.getpass("repeat the password: ", stream=sys.stderr) != password
    ):
        raise WalletError("the two passwords differ", hint="run the command again")
    return password


def parse_private_key(text: str) -> bytes:
    """A 32-byte secp256k1 key from hex text ('0x' optional). Errors never echo the input."""
    raw = text.strip().removeprefix("0x").removeprefix("0X")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise UsageError(
            "the private key is not 64 hex digits",
            hint="give the raw key as hex (optionally 0x-prefixed), one line",
        )
    key = bytes.fromhex(raw)
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    if not 0 < int.from_bytes(key, "big") < order:
        raise UsageError("the private key is out of range for secp256k1", hint="check the key")
    return key


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` 0600 atomically, refusing to replace an existing file.

    The content goes to a temporary file created O_EXCL 0600 in the same directory, then is
    hard-linked into place (link fails if the target exists), so no reader sees half a keystore
    and no window exists where the file is readable by others.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise WalletError(
                f"{path} already exists",
                hint="keep it, or move it away first; wallets are never overwritten",
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def create(
    path: Path, password: str, *, private_key: bytes | None = None, scrypt_n: int = DEFAULT_SCRYPT_N
) -> str:
    """Write a new keystore (fresh random key, or `private_key`); returns the address."""
    from eth_account import Account

    if path.exists():
        raise WalletError(
            f"{path} already exists",
            hint="keep it, or move it away first; wallets are never overwritten",
        )
    key = private_key if private_key is not None else bytes(Account.create().key)
    keystore = Account.encrypt(key, password, kdf="scrypt", iterations=scrypt_n)
    address = str(Account.from_key(key).address)
    keystore["address"] = address.lower().removeprefix("0x")
    _write_new(path, json.dumps(keystore, indent=2).encode() + b"\n")
    logger.debug("wrote keystore %s for %s", path, address)
    return address


def _read(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise WalletError(
            f"no wallet at {path}",
            hint="create one with: xnodectl wallet new, or pass --wallet PATH",
        ) from None
    except OSError as exc:
        raise WalletError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "%s is readable by other users (mode %o); run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise WalletError(f"{path} is not JSON", hint="point --wallet at a v3 keystore") from None
    if not isinstance(data, dict) or data.get("version") != 3 or "crypto" not in data:
        raise WalletError(f"{path} is not a v3 keystore", hint="point --wallet at a v3 keystore")
    return data


def read_address(path: Path) -> str:
    """The checksummed address stored in the keystore (no password needed)."""
    from eth_utils.address import to_checksum_address

    raw = _read(path).get("address")
    if not isinstance(raw, str) or len(raw.removeprefix("0x")) != 40:
        raise WalletError(
            f"{path} has no address field",
            hint="unlock it once with: xnodectl wallet export-public",
        )
    return str(to_checksum_address("0x" + raw.removeprefix("0x")))


def load_signer(path: Path, password: str) -> KeystoreSigner:
    """Decrypt the keystore at `path` into a signer; a wrong password is a WalletError."""
    from eth_account import Account

    data = _read(path)
    try:
        key = Account.decrypt(data, password)
    except ValueError:
        raise WalletError(
            f"wrong password for {path}", hint=f"retype it, or check {PASSWORD_ENV}"
        ) from None
    except (KeyError, TypeError):
        raise WalletError(f"{path} is a damaged keystore", hint="restore from a backup") from None
    account = Account.from_key(key)
    stored = data.get("address")
    if isinstance(stored, str) and stored.lower().removeprefix("0x") != account.address[2:].lower():
        raise WalletError(
            f"{path}: the address field does not match the key",
            hint="the file was edited; restore it from a backup",
        )
    return KeystoreSigner(account)
