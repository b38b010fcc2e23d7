"""A node pulls the closure from a peer that holds it (the fan-out's node-to-node copy).

Trust and credentials (docs/deploy.md, "Fan-out: who trusts whom"):
- The DESTINATION pulls (`nix copy --from ssh://peer`), so the destination's own store checks every
  path's signature against ITS trusted keys (require-sigs): a peer serves bytes, never decides.
- The destination logs in to the peer with a per-deploy ed25519 key made on the operator's
  machine. Its private half lives on the destination only while one pull runs (/run, 0600,
  removed when the pull ends); its public half is authorized on holders in
  /run/xnode/fanout/keys/<user> as `restrict,expiry-time=...,command="nix-store --serve"`:
  read-only store access, no shell, no forwarding, dead after the deploy (removed at the end,
  expired by sshd even if that removal never runs, gone at reboot). The operator's own key
  never leaves the operator's machine.
- The peer's host key is pinned from the inventory (the destination gets a one-line known_hosts).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xnodectl import inventory as inv
from xnodectl import nix, process
from xnodectl.errors import CommandFailed, XnodeError
from xnodectl.remote import SSH_ERROR, Ssh

FANOUT_DIR = "/run/xnode/fanout"  # modules/trust.nix: sshd reads keys/%u there
KEY_LIFETIME = datetime.timedelta(hours=6)
# Nix 2.8: "lacks a valid signature"; current Nix: "lacks a signature by a trusted key".
_REFUSED = re.compile(r"cannot add path '([^']+)' because it lacks a (?:valid )?signature")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")

# Runs on the destination: $1 id, $2 known_hosts line, $3 ssh options, $4 store URI, $5 the
# authorized_keys line to serve others afterwards, $6 login user peers use, $7... store paths.
# Private key on stdin.
PULL_SCRIPT = r"""set -eu
umask 077
d=/run/xnode/fanout
mkdir -p "$d/keys"
chmod 0755 "$d/keys"
k="$d/pull-$1"
h="$d/hosts-$1"
trap 'rm -f "$k" "$h"' EXIT
cat > "$k"
printf '%s\n' "$2" > "$h"
line=$5
user=$6
uri=$4
opts="-i $k -o UserKnownHostsFile=$h $3"
shift 6
NIX_SSHOPTS="$opts" nix copy --from "$uri" --log-format internal-json -v "$@"
touch "$d/keys/$user"
grep -qxF "$line" "$d/keys/$user" || printf '%s\n' "$line" >> "$d/keys/$user"
"""

SERVE_SCRIPT = r"""set -eu
d=/run/xnode/fanout
mkdir -p "$d/keys"
chmod 0755 "$d/keys"
touch "$d/keys/$2"
grep -qxF "$1" "$d/keys/$2" || printf '%s\n' "$1" >> "$d/keys/$2"
"""

REVOKE_SCRIPT = r"""f="/run/xnode/fanout/keys/$2"
[ -f "$f" ] || exit 0
grep -vF -- "$1" "$f" > "$f.new" || true
mv "$f.new" "$f"
"""


@dataclass(frozen=True)
class Endpoint:
    """How OTHER NODES reach a node's sshd (may differ from the operator's address)."""

    node: str
    host: str
    port: int
    user: str
    host_key: str

    @property
    def alias(self) -> str:
        return f"xnode-peer-{self.node}"

    @property
    def store_uri(self) -> str:
        return f"ssh://{self.user}@{self.host}"


class PeerFailed(XnodeError):
    """The peer could not serve (down, died mid-copy, refused the key): try another source."""


class SignatureRefused(XnodeError):
    """The destination refused a path: not signed by a key it trusts. Never retried elsewhere."""


@dataclass(frozen=True)
class PeerKey:
    """The per-deploy key pair; the private half stays in the operator's private session dir."""

    deploy_id: str
    private: Path
    public: str

    @classmethod
    def create(cls, directory: Path, deploy_id: str) -> PeerKey:
        path = directory / "fanout_ed25519"
        comment = f"xnode-fanout-{_SAFE_ID.sub('_', deploy_id)}"
        process.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        public = " ".join(path.with_suffix(".pub").read_text().split()[:3])
        return cls(deploy_id, path, public)

    @property
    def tag(self) -> str:
        return self.public.split()[-1]

    def authorized_line(self, now: datetime.datetime | None = None) -> str:
        expires = (now or datetime.datetime.now(datetime.UTC)) + KEY_LIFETIME
        options = f'restrict,expiry-time="{expires:%Y%m%d%H%M}Z",command="nix-store --serve"'
        return f"{options} {self.public}"


def node_ssh_options(peer: Endpoint, connect_timeout: int = 5) -> str:
    """ssh options for the pull that runs ON the destination (key and known_hosts are added by
    the script); whitespace-free words, as NIX_SSHOPTS is split on whitespace."""
    return " ".join(
        [
            "-p", str(peer.port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={peer.alias}", "-o", "CheckHostIP=no",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=2",
            "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
        ]
    )  # fmt: skip


def pull_command(peer: Endpoint, key: PeerKey, paths: Sequence[str], serve_as: str) -> list[str]:
    ident = _SAFE_ID.sub("_", key.deploy_id)
    return [
        "sh", "-c", PULL_SCRIPT, "xnode-fanout-pull", ident,
        f"{peer.alias} {peer.host_key}", node_ssh_options(peer), peer.store_uri,
        key.authorized_line(), serve_as, *paths,
    ]  # fmt: skip


async def pull(
    ssh: Ssh,
    peer: Endpoint,
    key: PeerKey,
    paths: Sequence[str],
    *,
    serve_as: str,
    on_path: Callable[[str], None],
    timeout: float,
) -> None:
    """The destination (`ssh`'s node) pulls `paths` (and their closures) from `peer`, then lets
    other nodes read its store.

    Raises SignatureRefused (a path not signed by a trusted key), PeerFailed (any other failure
    of the copy) or the destination's own RemoteError (the destination is unreachable)."""
    progress = nix.CopyProgress(on_path)
    argv = ssh.argv(pull_command(peer, key, paths, serve_as))
    try:
        result = await process.arun(
            argv,
            check=False,
            input=key.private.read_bytes(),
            timeout=timeout,
            on_stderr_line=progress.feed,
        )
    except CommandFailed as exc:  # timeout
        raise PeerFailed(f"copy from peer '{peer.node}' did not finish in {timeout:g} s") from exc
    if result.returncode == SSH_ERROR:
        raise ssh.classify(result.stderr)
    if result.returncode != 0:
        errors = nix.plain_errors(result.stderr)
        refused = _REFUSED.search(errors)
        if refused is not None:
            raise SignatureRefused(
                f"refused {refused.group(1)} from peer '{peer.node}': not signed by a key the "
                "node trusts",
                hint="sign with the workspace owner key and make sure the node trusts it "
                "(settings.store_keys -> xnode.trust.storeKeys); see: xnodectl store-key show",
            )
        last = errors.strip().splitlines()[-1:] or ["no error text"]
        raise PeerFailed(f"copy from peer '{peer.node}' failed: {last[0]}")


async def serve(ssh: Ssh, key: PeerKey, user: str, *, timeout: float) -> None:
    """Authorize the deploy's key on a node that got the closure from the operator."""
    result = await ssh.run(
        ["sh", "-c", SERVE_SCRIPT, "xnode-fanout-serve", key.authorized_line(), user],
        timeout=timeout,
    )
    if not result.ok:
        raise PeerFailed(f"could not let peers read the store: {result.stderr.strip()[-200:]}")


async def revoke(ssh: Ssh, key: PeerKey, user: str, *, timeout: float) -> None:
    """Remove the deploy's key from a holder (sshd's expiry-time covers a failed removal)."""
    await ssh.run(
        ["sh", "-c", REVOKE_SCRIPT, "xnode-fanout-revoke", key.tag, user], timeout=timeout
    )


def endpoint_of(name: str, node: inv.Node) -> Endpoint:
    """Where peers reach an inventory node: peer_host/peer_port, else its host/port."""
    return Endpoint(
        node=name,
        host=node.peer_host or node.host,
        port=node.peer_port or node.port,
        user=node.user,
        host_key=node.host_key or "",
    )
