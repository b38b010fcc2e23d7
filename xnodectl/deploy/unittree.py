"""The systemd unit trees the plan compares (xnodectl/deploy/units.py): the new system's read
locally, the node's current one from one script run in the plan's existing round trip."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from xnodectl.deploy.units import MASKED, Tree


def read_tree(system: Path) -> Tree:
    """`<system>/etc/systemd/system` read locally (entries resolved, texts of units/drop-ins)."""
    root = system / "etc" / "systemd" / "system"
    entries: dict[str, str] = {}
    texts: dict[str, str] = {}
    if not root.is_dir():
        return Tree(entries, texts)
    for path in sorted(root.iterdir()):
        if path.is_dir():
            for inner in sorted(path.iterdir()):
                _add(entries, texts, f"{path.name}/{inner.name}", inner)
        else:
            _add(entries, texts, path.name, path)
    return Tree(entries, texts)


def _add(entries: dict[str, str], texts: dict[str, str], name: str, path: Path) -> None:
    resolved = os.path.realpath(path)
    entries[name] = resolved
    if _has_text(name) and resolved != MASKED and Path(resolved).is_file():
        texts[name] = Path(resolved).read_text(errors="replace")


def _has_text(name: str) -> bool:
    """Unit files and drop-ins carry text; dependency links only name a unit."""
    return "/" not in name or name.endswith(".conf")


# On the node, one script: the current system's entries, resolved (`E name path`); the text
# (base64) of every unit file/drop-in whose resolved path the new system does not have (its paths
# come on stdin: the rest is read locally); the active units (`A name state`: active or
# activating; a failed unit's line starts with a bullet and is skipped) or `A?` when the node's
# systemctl cannot say. Read-only; coreutils, findutils and awk only.
NODE_SCRIPT = r"""t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
cat >"$t/new"
if cd /run/current-system/etc/systemd/system 2>/dev/null; then
  find -L . -mindepth 1 -maxdepth 2 ! -type d -printf '%P\n' | LC_ALL=C sort >"$t/names"
  xargs -r -d '\n' realpath -m -- <"$t/names" >"$t/paths"
  paste "$t/names" "$t/paths" >"$t/entries"
  awk -F '\t' '{print "E\t" $0}' "$t/entries"
  awk -F '\t' 'NR == FNR {have[$0] = 1; next}
    !($2 in have) && ($1 !~ /\// || $1 ~ /\.conf$/) && $2 != "/dev/null" {print $1}' \
    "$t/new" "$t/entries" | while IFS= read -r n; do
    [ -f "$n" ] && printf 'C\t%s\t%s\n' "$n" "$(base64 -w0 <"$n")"
  done
fi
s=/run/current-system/sw/bin/systemctl
if [ -x "$s" ] && "$s" list-units --all --plain --no-legend --full >"$t/units" 2>/dev/null; then
  awk '$3 == "active" || $3 == "activating" {print "A\t" $1 "\t" $3}' "$t/units"
else
  echo 'A?'
fi
"""


def node_input(new: Tree) -> bytes:
    return "".join(f"{p}\n" for p in sorted(set(new.entries.values()))).encode()


@dataclass(frozen=True)
class NodeUnits:
    old: Tree
    active: frozenset[str] | None


def parse_node_reply(reply: str, new: Tree) -> NodeUnits:
    """The node script's output -> the old tree (texts the new tree shares are read from it) and
    the active units (active or activating, as switch-to-configuration examines)."""
    by_path = {new.entries[name]: text for name, text in new.texts.items()}
    entries: dict[str, str] = {}
    texts: dict[str, str] = {}
    active: set[str] | None = set()
    for line in reply.splitlines():
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "E" and len(fields) == 2:
            entries[fields[0]] = fields[1]
        elif kind == "C" and len(fields) == 2:
            texts[fields[0]] = base64.b64decode(fields[1]).decode(errors="replace")
        elif kind == "A" and len(fields) == 2 and active is not None:
            if fields[1] in {"active", "activating"}:
                active.add(fields[0])
        elif line == "A?":
            active = None
    for name, path in entries.items():
        if _has_text(name) and name not in texts and path in by_path:
            texts[name] = by_path[path]
    return NodeUnits(Tree(entries, texts), frozenset(active) if active is not None else None)
