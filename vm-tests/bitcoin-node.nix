# bitcoin-node template (its example: regtest, pruned, p2p closed): bitcoind starts offline with the
# rpcauth line from the secret file; the app's health probes pass; bitcoin-cli authenticates with
# the matching password and getblockchaininfo reports regtest; a wrong password is refused; RPC and
# p2p are unreachable from a second VM; neither the password nor its hash is in the system closure.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-bitcoin-node";

  nodes.machine = {
    imports = [
      self.nixosModules.default
      ./lib/secret-upload.nix
      ../tests/golden/bitcoin-node/example.nix
    ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # Test VMs are reached through the test driver's backdoor, not SSH (modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 1536;

    # Stands in for the deploy engine's secret upload (done before activation): a random password,
    # hashed at boot the way Bitcoin Core's share/rpcauth/rpcauth.py does (HMAC-SHA256 keyed with
    # the hex salt), so neither exists anywhere in the Nix store. The password is kept for the test.
    xnodeTest.secretsBefore = [ "bitcoind-regtest.service" ];
    xnodeTest.secretsPath = [ pkgs.openssl pkgs.gawk ];
    xnodeTest.secrets.bitcoin-node.rpcauth.script = ''
      password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
      salt=$(openssl rand -hex 16)
      hash=$(printf '%s' "$password" | openssl dgst -sha256 -hmac "$salt" -r | awk '{print $1}')
      printf '%s' "$password" > /root/rpc-password
      printf 'xnode:%s$%s\n' "$salt" "$hash"
    '';
  };

  nodes.client = { };

  testScript = builtins.readFile ./lib/probes.py + ''
    start_all()
    machine.wait_for_unit("multi-user.target")
    run_health_probes(machine, "bitcoin-node")

    password = machine.succeed("cat /root/rpc-password").strip()
    cli = f"bitcoin-cli -regtest -rpcport=18443 -rpcuser=xnode -rpcpassword='{password}'"

    with subtest("getblockchaininfo on regtest with the rpcauth credentials"):
        machine.wait_until_succeeds(f"{cli} getblockchaininfo", timeout=120)
        info = json.loads(machine.succeed(f"{cli} getblockchaininfo"))
        assert info["chain"] == "regtest", info
        assert info["pruned"] is True, info
        machine.succeed(f"{cli} generatetodescriptor 3 'raw(51)'")
        assert machine.succeed(f"{cli} getblockcount").strip() == "3"

    with subtest("a wrong password or none is refused"):
        anonymous = machine.succeed(
            "curl -s -o /dev/null -w '%{http_code}' --data-binary '{}' http://127.0.0.1:18443/"
        ).strip()
        assert anonymous == "401", anonymous
        machine.fail("bitcoin-cli -regtest -rpcport=18443 -rpcuser=xnode -rpcpassword=wrong getblockcount")

    with subtest("RPC and p2p are not reachable from another machine"):
        for line in machine.succeed("ss -ltnH").splitlines():
            local = line.split()[3]
            if local.endswith(":18443") or local.endswith(":18444"):
                assert local.startswith("127.0.0.1:"), f"{local} listens beyond loopback"
        client.wait_for_unit("multi-user.target")
        for port in (18443, 18444):
            client.fail(f"timeout 5 bash -c 'exec 3<>/dev/tcp/machine/{port}'")

    with subtest("the password and its hash are not in the system closure"):
        closure = "nix-store -qR /run/current-system | xargs grep -rlFs --"
        # The search works: the include path is in the generated bitcoin.conf.
        assert machine.succeed(f"{closure} /run/xnode-bitcoind/rpcauth.conf || true").strip()
        rpcauth = machine.succeed("cat /var/lib/xnode/secrets/bitcoin-node/rpcauth").strip()
        digest = rpcauth.split("$")[1]
        for value in (password, digest):
            found = machine.succeed(f"{closure} '{value}' || true").strip()
            assert found == "", f"secret found in the store: {found}"
        assert password not in machine.succeed("ps -eo args")
  '';
}
