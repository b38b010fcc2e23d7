"""xnodectl.verify: the signature checks node-side programs share with the operator side.

Issue 13 item 7 (one canonical signature encoding, full-match nonces, the SIWE scheme) and the
layering rule: node-side programs never import operator code (xnodectl.wallet, cli, deploy).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from siwe import SiweMessage

from xnodectl import process
from xnodectl.nodeside import verify_manifest
from xnodectl.verify import eip191, sign_in
from xnodectl.verify.manifest import canonical_text

OWNER = Account.create()
N = eip191.SECP256K1_N


def sign(text: str) -> bytes:
    return bytes(OWNER.sign_message(encode_defunct(text=text)).signature)


def hexed(raw: bytes) -> str:
    return "0x" + raw.hex()


def test_wallet_signature_is_accepted() -> None:
    assert eip191.recover_address("hello", hexed(sign("hello"))) == OWNER.address


def test_recovery_id_v_0_or_1_is_refused() -> None:
    raw = sign("hello")
    other_form = raw[:64] + bytes([raw[64] - 27])
    # eth_account itself accepts the raw recovery id: the refusal is ours.
    assert Account.recover_message(encode_defunct(text="hello"), signature=other_form) == (
        OWNER.address
    )
    with pytest.raises(ValueError, match="v must be 27 or 28"):
        eip191.recover_address("hello", hexed(other_form))


def test_high_s_twin_signature_is_refused() -> None:
    raw = sign("hello")
    s = int.from_bytes(raw[32:64], "big")
    assert s <= N // 2  # eth_account signs canonically (low s)
    twin = raw[:32] + (N - s).to_bytes(32, "big") + bytes([55 - raw[64]])  # 27 <-> 28
    # The twin is a second valid signature of the same message, made without the key.
    assert Account.recover_message(encode_defunct(text="hello"), signature=twin) == OWNER.address
    with pytest.raises(ValueError, match="upper half"):
        eip191.recover_address("hello", hexed(twin))


@pytest.mark.parametrize(
    "signature",
    ["0x" + "00" * 65, "0x" + "ff" * 64 + "1b", "0x" + "ab" * 64, "zz" * 65, ""],
)
def test_malformed_signatures_are_value_errors(signature: str) -> None:
    with pytest.raises(ValueError):
        eip191.recover_address("hello", signature)


def _manifest_file(tmp_path: Path, nonce: str) -> Path:
    manifest: dict[str, Any] = {"node": "n1", "system": "/nix/store/x", "previous": None}
    manifest.update(time=1000, nonce=nonce)
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps({"manifest": manifest, "signature": hexed(sign(canonical_text(manifest)))})
    )
    return path


@pytest.mark.parametrize("nonce", ["ab" * 16 + "\n", "ab" * 16 + " ", "AB" * 16])
def test_manifest_nonce_is_matched_in_full(tmp_path: Path, nonce: str) -> None:
    expect = verify_manifest.Expect(
        owner=OWNER.address.lower(),
        node="n1",
        system="/nix/store/x",
        previous=None,
        max_age=300,
        skew=60,
        state_dir=tmp_path / "state",
    )
    with pytest.raises(verify_manifest.Refused, match="nonce must be"):
        verify_manifest.verify(_manifest_file(tmp_path, nonce), expect, now=1000)
    assert verify_manifest.verify(_manifest_file(tmp_path, "ab" * 16), expect, now=1000)


def _policy(scheme: str) -> sign_in.Policy:
    return sign_in.Policy(
        domains=frozenset({"node-a"}),
        uri_for=lambda d: f"{scheme}://{d}/",
        chain_id=1,
        allowed=frozenset({OWNER.address.lower()}),
        scheme=scheme,
    )


def _message(scheme: str | None, uri_scheme: str) -> str:
    now = time.time()
    return str(
        SiweMessage(
            scheme=scheme,
            domain="node-a",
            address=OWNER.address,
            uri=f"{uri_scheme}://node-a/",
            version="1",
            chain_id=1,
            issued_at=sign_in.iso(now),
            expiration_time=sign_in.iso(now + 300),
            nonce="a1b2c3d4e5f6a7b8",
        ).prepare_message()
    )


def test_siwe_scheme_must_be_the_connection_s() -> None:
    """A message made for https://node-a is refused over http, and the other way round."""
    for named, connection in (("https", "http"), ("http", "https")):
        text = _message(named, connection)
        with pytest.raises(sign_in.Rejected, match="scheme"):
            sign_in.verify(text, hexed(sign(text)), _policy(connection))
    for ok in (None, "https"):
        text = _message(ok, "https")
        assert sign_in.verify(text, hexed(sign(text)), _policy("https")).address == OWNER.address


def test_times_are_read_through_public_api() -> None:
    assert sign_in.timestamp("2026-01-02T03:04:05.000Z") == 1767323045.0
    with pytest.raises(sign_in.Rejected, match="time zone"):
        sign_in.timestamp("2026-01-02T03:04:05")


LAYERING_PROBE = """
import json, sys
import xnodectl.nodeside.claim_server, xnodectl.nodeside.gate_server
import xnodectl.nodeside.verify_manifest, xnodectl.verify.sign_in, xnodectl.verify.eip191
print(json.dumps(sorted(m for m in sys.modules if m.startswith("xnodectl"))))
"""


def test_node_side_programs_never_import_operator_code() -> None:
    loaded = json.loads(process.run([sys.executable, "-c", LAYERING_PROBE]).stdout)
    operator = ("xnodectl.wallet", "xnodectl.cli", "xnodectl.deploy", "xnodectl.remote")
    assert not [m for m in loaded if m.startswith(operator)], loaded
    sources = Path(verify_manifest.__file__).parent.glob("*.py")
    verify_sources = Path(sign_in.__file__).parent.glob("*.py")
    imports_operator = re.compile(r"^\s*(from|import) xnodectl\.(wallet|cli|deploy|remote)\b", re.M)
    for path in [*sources, *verify_sources]:
        assert not imports_operator.search(path.read_text()), path
