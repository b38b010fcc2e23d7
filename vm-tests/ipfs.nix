# VM test of the `ipfs` template (golden example render: lowpower profile, 200GB storage cap, gateway
# route exposed through the proxy behind the wallet sign-in). No network: kubo starts, its health
# probes pass, the parameters are in kubo's live config, content added over the RPC socket comes
# back through `ipfs cat` and the gateway, the exposed /ipfs/ and /ipns/ routes answer a stranger
# with the sign-in redirect, and the API and the raw gateway port are not reachable from a second
# VM while the swarm port is.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "xnode-template-ipfs";
  globalTimeout = 1200;

  nodes.node = { ... }: {
    imports = [ self.nixosModules.default ../tests/golden/ipfs/example.nix ];
    xnode.package = self.packages.${pkgs.stdenv.hostPlatform.system}.xnodectl;
    # The gated routes need someone who may sign in (modules/wallet-gate.nix asserts it). An allowed
    # address rather than an owner keeps the claim service (modules/claim.nix) out of this test.
    xnode.walletGate.allow = [ "0x52908400098527886E0F7030069857D2E4169EE7" ];
    # No owner and no operator key in a test VM (modules/owner.nix).
    xnode.owner.allowUnreachable = true;
    virtualisation.memorySize = 2048;
    virtualisation.diskSize = 4096;
    environment.systemPackages = [ pkgs.netcat ];
  };
  nodes.client = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.netcat ];
  };

  testScript = builtins.readFile ./lib/probes.py + ''
    def http_status(machine, url):
        return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {url}").strip()

    start_all()

    with subtest("health probes of template.toml"):
        node.wait_for_unit("ipfs.service")
        node.wait_for_open_port(4001)
        node.wait_for_open_port(8080)
        node.wait_for_open_port(5001)
        node.wait_until_succeeds(
            "test \"$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ipfs/bafkqaaa)\" = 200",
            timeout=180,
        )
        t.assertEqual(http_status(node, "http://127.0.0.1:5001/api/v0/version"), "405")
        # The metrics path the template declares for the monitoring template.
        node.succeed("curl -sf http://127.0.0.1:5001/debug/metrics/prometheus | grep -q '^go_goroutines'")

    with subtest("every health probe of the template passes, for the node's deploy agent too"):
        run_health_probes(node, "ipfs")

    with subtest("parameters reached kubo's live config"):
        config = "/var/lib/ipfs/config"
        node.succeed(f"grep -F '\"StorageMax\": \"200GB\"' {config}")
        # kubo's lowpower profile: connection manager high water 40, DHT client only.
        node.succeed(f"grep -F '\"HighWater\": 40' {config}")
        node.succeed(f"grep -F '\"Type\": \"autoclient\"' {config}")
        node.succeed(f"grep -F '/ip4/127.0.0.1/tcp/5001' {config}")

    with subtest("restarts keep the lowpower profile and leave no config backups (private key)"):
        for _ in range(2):
            node.succeed("systemctl restart ipfs.service")
            node.wait_for_unit("ipfs.service")
        node.succeed(f"grep -F '\"HighWater\": 40' {config}")
        t.assertEqual(node.succeed("ls /var/lib/ipfs | grep '^config-' || true").strip(), "")

    with subtest("the health probes fail while kubo is down, though systemd still holds its ports"):
        node.succeed("systemctl mask --runtime ipfs.service && systemctl stop ipfs.service")
        node.succeed("nc -z -w 2 127.0.0.1 8080")  # the socket accepts: a TCP probe would pass
        apps = json.loads(node.succeed("cat /etc/xnode/apps.json"))
        quick = [dict(p, timeout=5) for p in apps["ipfs"]["health"]]
        node.succeed(f"cat > /tmp/quick-probes.json <<'EOF'\n{json.dumps(quick)}\nEOF")
        status, out = node.execute("xnode-activate probe --file /tmp/quick-probes.json")
        t.assertFalse(status == 0 and json.loads(out)["ok"], out)
        node.succeed("systemctl unmask --runtime ipfs.service && systemctl start ipfs.service")
        node.wait_for_unit("ipfs.service")
        run_health_probes(node, "ipfs")

    with subtest("add and cat, over the RPC socket and the gateway"):
        api = "ipfs --api /unix/run/ipfs.sock"
        cid = node.succeed(f"echo hello-xnode-ipfs | {api} add --quieter").strip()
        node.succeed(f"{api} cat {cid} | grep -x hello-xnode-ipfs")
        node.succeed(f"curl -sf http://127.0.0.1:8080/ipfs/{cid} | grep -x hello-xnode-ipfs")

    with subtest("the exposed proxy routes sit behind the wallet sign-in"):
        # Signing in is covered by vm-tests/wallet-gate.nix; here: both routes exist and are gated.
        node.wait_for_unit("nginx.service")
        node.wait_for_open_port(80)
        for path in (f"/ipfs/{cid}", "/ipns/example.org"):
            t.assertEqual(http_status(node, f"http://127.0.0.1{path}"), "302")

    with subtest("only the swarm port and the gated proxy face the network"):
        client.wait_for_unit("multi-user.target")
        client.succeed("nc -z -w 5 node 4001")
        client.fail("curl -s --max-time 5 http://node:5001/api/v0/version")
        client.fail("curl -s --max-time 5 http://node:8080/ipfs/bafkqaaa")
        # Public (expose=true) but gated: a stranger is sent to the sign-in page, not the content.
        location = client.succeed(
            f"curl -s --max-time 5 -o /dev/null -w '%{{redirect_url}}' http://node/ipfs/{cid}"
        )
        t.assertIn("/auth/login", location)
        client.fail(f"curl -s --max-time 5 http://node/ipfs/{cid} | grep -q hello-xnode-ipfs")
  '';
}
