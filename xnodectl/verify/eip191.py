"""EIP-191 personal_sign signatures: recover the signer, strictly, offline; normalize addresses."""

from __future__ import annotations

# secp256k1 group order. EIP-2 (Homestead) makes a signature with s > n/2 invalid for
# transactions; libraries (ethers, OpenZeppelin ECDSA) refuse it for messages too, because
# (r, n - s) is a second valid signature of the same message made without the key.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# personal_sign answers v = 27 or 28 (the "+27" of Ethereum's legacy encoding); 0/1 are the raw
# recovery ids some libraries also accept. Only the wallet form is accepted, one encoding each.
WALLET_V = (27, 28)
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_signature(signature: str) -> bytes:
    """65 bytes r || s || v from 0x-hex, in the one canonical form; else ValueError."""
    raw = signature.removeprefix("0x")
    if len(raw) != 130 or not set(raw) <= _HEX:
        raise ValueError("signature must be 65 bytes of hex")
    data = bytes.fromhex(raw)
    r = int.from_bytes(data[:32], "big")
    s = int.from_bytes(data[32:64], "big")
    if data[64] not in WALLET_V:
        raise ValueError(f"signature v must be 27 or 28, not {data[64]}")
    if not 0 < r < SECP256K1_N or not 0 < s < SECP256K1_N:
        raise ValueError("signature r or s is out of range")
    if s > SECP256K1_N // 2:
        raise ValueError("signature s is in the upper half of the curve order (EIP-2: refused)")
    return data


def recover_address(text: str, signature: str) -> str:
    """The checksummed address that signed `text` (EIP-191 personal_sign), offline.

    Raises ValueError for a signature that is not a valid, canonical secp256k1 signature.
    """
    from eth_account import Account
    from eth_account.messages import encode_defunct

    data = parse_signature(signature)
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=data))
    except Exception as exc:  # eth_keys raises several types (BadSignature, ValidationError)
        raise ValueError(f"signature cannot be recovered: {type(exc).__name__}") from exc


def normalize_address(text: str) -> str:
    """'0xAbC..', 'eth:0xabc..' or 'ethereum:0x..' -> lowercase '0x' + 40 hex, else ValueError."""
    value = text.strip()
    for prefix in ("ethereum:", "eth:"):
        value = value.removeprefix(prefix)
    value = value.lower()
    if len(value) != 42 or not value.startswith("0x") or not set(value[2:]) <= _HEX:
        raise ValueError(f"not an Ethereum address: {text.strip()[:60]!r}")
    return value
