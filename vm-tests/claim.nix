# The claim flow end to end: a fresh node that has an owner address and no operator key runs the
# claim service; the operator (a second VM with xnodectl) claims it with a test wallet, checking
# the host key fingerprint seen on the node's "console"; the node authorizes exactly that SSH key
# (outside the Nix store), stops its claim service, and then accepts SSH logins with the key.
# Refusals are checked too: another wallet, and a second claim after the node was claimed.
{ pkgs, self }:
let
  xnodectl = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
  python = pkgs.python3.withPackages (ps: [ ps.eth-account ]);
  # Throwaway test wallets, generated at build time (never a real key; both only exist in this
  # test's store): the owner, and a stranger whose claim must be refused.
  # nixpkgs pkgs/build-support/trivial-builders/default.nix (runCommand)
  wallets = pkgs.runCommand "xnode-test-wallets" { nativeBuildInputs = [ python ]; } ''
    mkdir -p $out
    python3 - <<'PY'
    import os
    from eth_account import Account
    out = os.environ["out"]
    for name in ("owner", "stranger"):
        account = Account.create()
        with open(f"{out}/{name}.key", "w") as handle:
            handle.write(bytes(account.key).hex() + "\n")
        with open(f"{out}/{name}.address", "w") as handle:
            handle.write(account.address + "\n")
    PY
  '';
  port = 8740;
in
pkgs.testers.runNixOSTest {
  name = "xnode-claim";

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ];
    xnode.package = xnodectl;
    # The owner address arrives as a file (as modules/owner.nix would write it from
    # xnode.owner.address); the address is only known once the test wallet is built.
    environment.etc."xnode/owner-address".source = "${wallets}/owner.address";
    xnode.owner.allowUnreachable = true;
    xnode.claim.enable = true;
    # The operator reaches the node by its name.
    xnode.claim.domains = [ "node:${toString port}" ];
  };

  nodes.operator = { ... }: {
    environment.systemPackages = [ xnodectl pkgs.openssh pkgs.netcat ];
    virtualisation.memorySize = 1536; # unlocking a keystore takes 256 MiB (scrypt n = 2^18)
  };

  testScript = ''
    import json

    PORT = ${toString port}
    WALLETS = "${wallets}"
    ENV = "XNODECTL_WALLET_PASSWORD=test-password-1234"

    start_all()
    node.wait_for_unit("sshd.service")
    node.wait_for_unit("xnode-claim.service")
    node.wait_for_open_port(PORT)
    operator.wait_for_unit("multi-user.target")
    # The network-facing service is not root; root's installer is a path-started oneshot.
    node.succeed('test "$(stat -c %U /proc/$(systemctl show -P MainPID xnode-claim.service))" = xnode-claim')
    node.succeed("systemctl is-active xnode-claim-install.path")

    with subtest("operator: SSH key and wallets (imported from key files, never argv)"):
        operator.succeed("mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
        for name in ("owner", "stranger"):
            operator.succeed(
                f"{ENV} xnodectl wallet import --wallet /root/{name}.json --key-file {WALLETS}/{name}.key"
            )
        address = operator.succeed("xnodectl wallet address --wallet /root/owner.json").strip()
        t.assertEqual(address, node.succeed("cat /etc/xnode/owner-address").strip())

    # What the owner reads on the node's console, compared by xnodectl before it signs anything.
    fingerprint = node.succeed("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    # An operator workspace: the claim pins the node (host key, owner) in its inventory.
    operator.succeed("mkdir -p /root/ws && touch /root/ws/inventory.toml")
    claim = (
        f"{ENV} xnodectl claim node --port {PORT} --ssh-key /root/.ssh/id_ed25519.pub "
        f"--expect-host-key {fingerprint} --node node --workspace /root/ws --json"
    )

    with subtest("before the claim the operator key is not accepted"):
        operator.fail(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -i /root/.ssh/id_ed25519 root@node true"
        )

    with subtest("a claim signed by another wallet is refused and authorizes nothing"):
        out = operator.fail(claim + " --wallet /root/stranger.json 2>&1")
        t.assertIn("is not allowed on this node", out)
        node.fail("test -s /var/lib/xnode/ssh/authorized_keys.d/root")

    with subtest("the owner's claim succeeds and pins the node's host key"):
        result = json.loads(operator.succeed(claim + " --wallet /root/owner.json"))
        t.assertEqual(result["host_key_fingerprint"], fingerprint)
        key = operator.succeed("cut -d' ' -f1,2 /root/.ssh/id_ed25519.pub").strip()
        t.assertIn(key, node.succeed("cat /var/lib/xnode/ssh/authorized_keys.d/root"))
        t.assertEqual(node.succeed("stat -c %a /var/lib/xnode/ssh/authorized_keys.d/root").strip(), "600")
        node.succeed("test -e /var/lib/xnode/claim/claimed")
        inventory = operator.succeed("cat /root/ws/inventory.toml")
        t.assertIn('[nodes.node]', inventory)
        t.assertIn(result["host_key"], inventory)
        t.assertIn(address, inventory)

    with subtest("the claim service stops; the port no longer answers"):
        node.wait_until_fails("systemctl is-active xnode-claim.service")
        operator.wait_until_fails(f"nc -z -w 2 node {PORT}")
        operator.fail(claim + " --wallet /root/owner.json")

    with subtest("the node accepts the authorized key, with the pinned host key"):
        operator.succeed(f"echo \"node {result['host_key']}\" > /root/known_hosts")
        name = operator.succeed(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/known_hosts "
            "-i /root/.ssh/id_ed25519 root@node cat /etc/xnode/node-name"
        )
        t.assertEqual(name.strip(), "node")

    with subtest("the claim stays closed across a reboot"):
        node.shutdown()
        node.start()
        node.wait_for_unit("multi-user.target")
        node.fail("systemctl is-active xnode-claim.service")
        node.succeed("systemctl show -P ConditionResult xnode-claim.service | grep -x no")

    with subtest("the owner reopens claiming over SSH (pinned host key from the inventory)"):
        operator.succeed(
            "xnodectl claim node --reopen --ssh-key /root/.ssh/id_ed25519 --workspace /root/ws"
        )
        node.wait_for_unit("xnode-claim.service")
        operator.wait_until_succeeds(f"nc -z -w 2 node {PORT}")
        node.fail("test -e /var/lib/xnode/claim/claimed")
  '';
}
