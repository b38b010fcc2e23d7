"""Store signing keys and signatures, with Nix's own commands and key format ("name:base64").
`nix key generate-secret` / `nix key convert-secret-to-public` / `nix store sign` exist with the
same flags from Nix 2.8 (Debian's) to current Nix."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import Field

from xnodectl import process
from xnodectl.nix import BASE, Closure, JsonModel, parse_model


def generate_secret_key_argv(name: str) -> list[str]:
    return [*BASE, "key", "generate-secret", "--key-name", name]


def generate_secret_key(name: str) -> str:
    """A new secret signing key "name:base64" (Nix prints it; it is never passed as an argument)."""
    result = process.run(generate_secret_key_argv(name), timeout=30)
    return result.stdout.strip()


def public_key_argv() -> list[str]:
    return [*BASE, "key", "convert-secret-to-public"]


def public_key(secret: str) -> str:
    """The public half "name:base64" of a secret key (the secret goes through stdin)."""
    result = process.run(public_key_argv(), input=secret + "\n", timeout=30)
    return result.stdout.strip()


def public_of(secret: str) -> str | None:
    """The public half of a secret key without a subprocess, None if `secret` is not one.

    Nix keeps a secret key as libsodium's 64-byte ed25519 secret key (seed, then the public key)
    and `nix key convert-secret-to-public` prints its last 32 bytes (libutil/crypto.cc,
    SecretKey::toPublicKey -> crypto_sign_ed25519_sk_to_pk); tests/test_storekey.py holds this
    to the real command."""
    name, sep, encoded = secret.strip().partition(":")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not (sep and name and len(raw) == 64):
        return None
    return f"{name}:{base64.b64encode(raw[32:]).decode()}"


def key_name(key_file: Path) -> str:
    """The name of the key in a secret key file ("name:base64")."""
    return key_file.read_text().strip().partition(":")[0]


def sign_argv(
    key_file: Path, paths: Sequence[str], *, store: str | None = None, recursive: bool = True
) -> list[str]:
    argv = [*BASE, "store", "sign", "--key-file", str(key_file)]
    if recursive:
        argv.append("--recursive")
    if store is not None:
        argv += ["--store", store]
    return [*argv, *paths]


async def sign(
    key_file: Path,
    paths: Sequence[str],
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    recursive: bool = True,
) -> None:
    """Sign `paths` (and, `recursive`, their closures) in the (local) store; a path that already
    carries the key's signature keeps it (Nix skips the write, not the read)."""
    argv = sign_argv(key_file, paths, store=store, recursive=recursive)
    await process.arun(argv, env=env, timeout=timeout)


class _SignedPath(JsonModel):
    path: str
    signatures: list[str] = Field(default_factory=list)
    valid: bool = True


def signatures_argv(paths: Sequence[str], *, store: str | None = None) -> list[str]:
    argv = [*BASE, "path-info", "--json", "--sigs", "--recursive"]
    if store is not None:
        argv += ["--store", store]
    return [*argv, *paths]


def parse_signatures(text: str, argv: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`nix path-info --json --sigs` output -> {path: ("keyname:sig", ...)} (valid paths only)."""
    found: list[_SignedPath] = parse_model(_SignedPath, text, argv)
    return {p.path: tuple(p.signatures) for p in found if p.valid}


async def signatures(
    paths: Sequence[str],
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, tuple[str, ...]]:
    """Every path of the closures of `paths` with the signatures its store holds for it."""
    argv = signatures_argv(paths, store=store)
    result = await process.arun(argv, env=env, timeout=timeout)
    return parse_signatures(result.stdout, argv)


def signer_name(signature: str) -> str:
    """The name of the key that made a signature ("name:base64sig")."""
    return signature.partition(":")[0]


def copy_from_argv(uri: str, paths: Sequence[str]) -> list[str]:
    """`nix copy --from URI` into the local store; signatures are checked (no --no-check-sigs):
    with require-sigs a path not signed by a trusted key is refused."""
    return [*BASE, "copy", "--from", uri, "--log-format", "internal-json", "-v", *paths]


def realise_argv(paths: Sequence[str]) -> list[str]:
    """Substitute `paths` from the store's configured substituters (trusted keys checked)."""
    return ["nix-store", "--realise", "--log-format", "internal-json", "-v", *paths]


def unsigned(closures: Iterable[Closure], key_name: str) -> list[str]:
    """The paths of `closures` without a signature by the key named `key_name` (its name is
    "xnode-owner-<8 random hex>": another key of that name is not assumed)."""
    return sorted(
        {
            p.path
            for c in closures
            for p in c.paths.values()
            if not any(signer_name(sig) == key_name for sig in p.signatures)
        }
    )
