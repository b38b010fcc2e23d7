"""The operator wallet: v3 scrypt keystore at mode 0600, the key never in clear, CLI commands."""

from __future__ import annotations

import json
import logging
import stat
import sys
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from xnodectl import process
from xnodectl.cli import app
from xnodectl.errors import UsageError, WalletError
from xnodectl.verify.eip191 import normalize_address, recover_address
from xnodectl.wallet import keystore
from xnodectl.wallet.signer import KeystoreSigner, Signer

PASSWORD = "correct horse battery"
FAST = 2**14  # a cheap scrypt cost for library-level tests; the CLI tests use the real default


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(keystore.PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XNODECTL_WALLET", raising=False)
    return tmp_path


def test_keystore_is_v3_scrypt_0600_and_never_holds_the_key(tmp_path: Path) -> None:
    key = bytes(Account.create().key)
    path = tmp_path / "deep" / "wallet.json"
    address = keystore.create(path, PASSWORD, private_key=key, scrypt_n=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_text()
    data = json.loads(raw)
    assert data["version"] == 3
    assert data["crypto"]["kdf"] == "scrypt"
    assert data["crypto"]["kdfparams"]["n"] == FAST
    assert key.hex() not in raw.lower() and PASSWORD not in raw
    assert address == Account.from_key(key).address
    assert keystore.read_address(path) == address
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file is gone


def test_default_cost_is_eth_keyfile_scrypt(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    keystore.create(path, PASSWORD)
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == 2**18


def test_load_signer_signs_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    address = keystore.create(path, PASSWORD, scrypt_n=FAST)
    signer = keystore.load_signer(path, PASSWORD)
    assert isinstance(signer, Signer) and isinstance(signer, KeystoreSigner)
    assert signer.address == address
    signature = signer.sign_message("hello xnode")
    assert recover_address("hello xnode", signature) == address
    assert recover_address("hello xnodE", signature) != address
    assert "0x" not in repr(signer).replace(address, "")  # repr shows the address only


def test_wrong_password_and_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    keystore.create(path, PASSWORD, scrypt_n=FAST)
    with pytest.raises(WalletError, match="wrong password"):
        keystore.load_signer(path, "not the password")
    with pytest.raises(WalletError, match="no wallet at"):
        keystore.load_signer(tmp_path / "missing.json", PASSWORD)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(WalletError, match="not a v3 keystore"):
        keystore.read_address(tmp_path / "bad.json")
    with pytest.raises(WalletError, match="already exists"):
        keystore.create(path, PASSWORD, scrypt_n=FAST)


def test_tampered_address_field_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    keystore.create(path, PASSWORD, scrypt_n=FAST)
    data = json.loads(path.read_text())
    data["address"] = "00" * 20
    path.write_text(json.dumps(data))
    with pytest.raises(WalletError, match="does not match"):
        keystore.load_signer(path, PASSWORD)


def test_private_key_parsing_never_echoes_input() -> None:
    key = Account.create().key.hex()
    assert keystore.parse_private_key(f"  0x{key}\n").hex() == key.removeprefix("0x")
    for bad in ["12" * 31, "zz" * 32, "00" * 32, "ff" * 32]:
        with pytest.raises(UsageError) as info:
            keystore.parse_private_key(bad)
        assert bad not in info.value.one_line()


def test_normalize_address() -> None:
    assert normalize_address(" eth:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n") == (
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    )
    with pytest.raises(ValueError, match="not an Ethereum address"):
        normalize_address("0x1234")


def test_cli_new_address_export_public(env: Path) -> None:
    code, out, err = run("wallet", "new", "--json")
    assert code == 0, err
    data = json.loads(out)
    path = Path(data["wallet"])
    assert path == env / "config" / "xnodectl" / "wallet.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, _ = run("wallet", "address")
    assert code == 0 and out.strip() == data["address"]
    code, out, _ = run("wallet", "export-public", "--json")
    assert code == 0
    public = json.loads(out)
    assert public["address"] == data["address"] and public["public_key"].startswith("0x04")
    assert len(public["public_key"]) == 2 + 130
    code, _, err = run("wallet", "new")
    assert code == 2 and "already exists" in err and "Traceback" not in err


def test_cli_import_key_never_appears_in_output_or_logs(
    env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = Account.create()
    key = account.key.hex().removeprefix("0x")
    seen: list[str] = []
    wallet = str(env / "imported.json")
    code, out, err = run("-v", "wallet", "import", "--wallet", wallet, input=f"0x{key}\n")
    seen += [out, err]
    assert code == 0, err
    assert out.strip() == account.address
    key_file = env / "key.hex"
    key_file.write_text(key + "\n")
    other = str(env / "from-file.json")
    code, out, err = run("wallet", "import", "--wallet", other, "--key-file", str(key_file))
    seen += [out, err]
    assert code == 0 and out.strip() == account.address
    code, out, err = run("wallet", "export-public", "--wallet", wallet)
    seen += [out, err]
    assert code == 0
    seen += [caplog.text, Path(wallet).read_text(), Path(other).read_text()]
    for text in seen:
        assert key not in text.lower()
        assert PASSWORD not in text


def test_cli_errors_are_one_line(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wallet = str(env / "w.json")
    code, _, err = run("wallet", "import", "--wallet", wallet, input="not-a-key\n")
    assert code == 2 and "not 64 hex digits" in err and "not-a-key" not in err
    assert not Path(wallet).exists()
    keystore.create(Path(wallet), PASSWORD, scrypt_n=FAST)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "wrong password!")
    code, out, err = run("wallet", "export-public", "--wallet", wallet)
    assert code == 2 and out == ""
    assert err.startswith("error: wrong password for") and "Traceback" not in err
    monkeypatch.delenv(keystore.PASSWORD_ENV)
    code, _, err = run("wallet", "export-public", "--wallet", wallet)
    assert code == 2 and "no terminal" in err
    code, _, err = run("wallet", "address", "--wallet", str(env / "none.json"))
    assert code == 2 and "no wallet at" in err
    monkeypatch.setenv(keystore.PASSWORD_ENV, "short")
    code, _, err = run("wallet", "new", "--wallet", str(env / "n.json"))
    assert code == 2 and "shorter than" in err and not (env / "n.json").exists()


PROBE = """
import json, sys
from typer.testing import CliRunner
from xnodectl.cli import app
for argv in (["--help"], ["wallet", "--help"], ["wallet", "new", "--help"], ["claim", "--help"]):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def test_help_does_not_import_siwe_web3_or_eth_account() -> None:
    result = process.run([sys.executable, "-c", PROBE])
    loaded = set(json.loads(result.stdout))
    assert not loaded & {"siwe", "web3", "eth_account", "eth_keys"}
