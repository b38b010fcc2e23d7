"""One signing interface for every wallet kind (keystore now; hardware/external signers later)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


@runtime_checkable
class Signer(Protocol):
    """Signs EIP-191 personal messages (what `personal_sign` does in a browser wallet)."""

    @property
    def address(self) -> str:
        """The EIP-55 checksummed address."""
        ...

    def sign_message(self, text: str) -> str:
        """The 65-byte signature of `text` as 0x-prefixed hex."""
        ...


class KeystoreSigner:
    """A key decrypted from a v3 keystore, held in memory only for the life of the command."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return str(self._account.address)

    def sign_message(self, text: str) -> str:
        from eth_account.messages import encode_defunct

        signed = self._account.sign_message(encode_defunct(text=text))
        return "0x" + bytes(signed.signature).hex()

    def public_key(self) -> str:
        """The uncompressed secp256k1 public key (0x04 || X || Y) as hex."""
        from eth_keys.datatypes import PrivateKey

        key = PrivateKey(bytes(self._account.key))
        return "0x04" + key.public_key.to_bytes().hex()

    def __repr__(self) -> str:  # never show key material, even in a debugger or a log line
        return f"KeystoreSigner({self.address})"


def recover_address(text: str, signature: str) -> str:
    """The checksummed address that signed `text` (EIP-191 personal_sign), offline.

    Raises ValueError for a signature that is not a valid secp256k1 signature.
    """
    from eth_account import Account
    from eth_account.messages import encode_defunct

    raw = signature.removeprefix("0x")
    if len(raw) != 130 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise ValueError("signature must be 65 bytes of hex")
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=bytes.fromhex(raw)))
    except Exception as exc:  # eth_keys raises several types (BadSignature, ValidationError)
        raise ValueError(f"signature cannot be recovered: {type(exc).__name__}") from exc


def normalize_address(text: str) -> str:
    """'0xAbC..', 'eth:0xabc..' or 'ethereum:0x..' -> lowercase '0x' + 40 hex, else ValueError."""
    value = text.strip()
    for prefix in ("ethereum:", "eth:"):
        value = value.removeprefix(prefix)
    value = value.lower()
    if (
        len(value) != 42
        or not value.startswith("0x")
        or any(c not in "0123456789abcdef" for c in value[2:])
    ):
        raise ValueError(f"not an Ethereum address: {text.strip()[:60]!r}")
    return value
