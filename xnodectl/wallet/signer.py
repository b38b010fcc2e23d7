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
