#!/usr/bin/env bash
# The test command of the README: lint, types, and the whole pytest suite (real nix, real sshd nodes).
# Creates .venv on first use. Needs: python3 (with venv), nix-bin, openssh-server, git.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check xnodectl tests bench
ruff format --check xnodectl tests bench
echo "== mypy (strict)" >&2
mypy xnodectl tests
echo "== nix-instantiate --parse (every .nix file)" >&2
git ls-files -co --exclude-standard '*.nix' | while read -r f; do
  nix-instantiate --parse "$f" >/dev/null || { echo "does not parse: $f" >&2; exit 1; }
done
echo "== shellcheck (the node helper and the installer; writeShellApplication runs it too)" >&2
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck xnodectl/data/node/xnode-activate
  shellcheck -s bash xnodeos/install.sh
else
  echo "shellcheck is not installed: skipped (apt-get install shellcheck)" >&2
fi
echo "== pytest" >&2
exec pytest -q "$@"
